"""The delta: vectors added since the base was written, searched exactly in memory.

The delta is rebuilt from SQLite at every open and is kept small by
compaction, so a brute-force matrix product is both exact and cheap (4096 x
576 float32 is 9 MB, ~0.2 ms per query) and, unlike a graph index, costs
nothing to build at open or to append to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snapmatch.sdk.catalog.row_products import row_products


@dataclass(frozen=True)
class DeltaSnapshot:
    """An immutable view of the delta that a search can use while the writer appends."""

    keys: np.ndarray  # int64 [n]
    vectors: np.ndarray  # float32 [n, dim]

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Top `count` (keys, cosine similarities) per query, best first; shape [q, min(count, n)]."""
        n = len(self.keys)
        count = min(count, n)
        if count == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.int64), empty.astype(np.float32)
        scores = row_products(queries, self.vectors)
        if count < n:
            top = np.argpartition(-scores, count - 1, axis=1)[:, :count]
            top_scores = np.take_along_axis(scores, top, axis=1)
        else:
            top, top_scores = np.broadcast_to(np.arange(n), scores.shape), scores
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return self.keys[top], np.take_along_axis(top_scores, order, axis=1)


class Delta:
    """Append-only buffer that publishes immutable snapshots (readers never lock)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._keys = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._size = 0
        self.snapshot = DeltaSnapshot(self._keys[:0], self._vectors[:0])

    def append(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows; the caller serialises appends. Published rows are never written again."""
        new = self._size + len(keys)
        if new > len(self._keys):
            capacity = max(new, 2 * len(self._keys), 256)
            grown_keys = np.zeros(capacity, dtype=np.int64)
            grown_vectors = np.zeros((capacity, self.dim), dtype=np.float32)
            grown_keys[: self._size] = self._keys[: self._size]
            grown_vectors[: self._size] = self._vectors[: self._size]
            self._keys, self._vectors = grown_keys, grown_vectors
        self._keys[self._size:new] = keys
        self._vectors[self._size:new] = vectors
        self._size = new
        self.snapshot = DeltaSnapshot(self._keys[:new], self._vectors[:new])

    def __len__(self) -> int:
        return self._size
