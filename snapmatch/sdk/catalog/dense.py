"""Exact search of a small catalog: one matrix product, products as integer codes in memory.

A catalog searched exactly (up to `Catalog.exact_below` images, 20,000 by
default: 46 MB of float32 at 576-d) keeps every live image vector, under the
catalog's metric, in one matrix beside an integer product code per row. A
query is one matrix-vector product; grouping by product and the names come
from arrays, so neither usearch nor SQLite is on the hot path, and a catalog
of many photos per product costs what one of one photo per product costs, at
the same number of vectors. The writer's changes reach it incrementally:
new rows are appended, removed ones get code -1 (DenseCache).

From QUANTIZED_FROM rows on, an int8 copy of the rows (a quarter of the
bytes more) is scanned first for a lone query, and only the rows its error
bounds cannot rule out are scored in float32: the same answer, found
faster where the catalog is large (quantized_rows, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from snapmatch.sdk.catalog import store
from snapmatch.sdk.catalog.adaptation import Adaptation
from snapmatch.sdk.catalog.manifest import Manifest
from snapmatch.sdk.catalog.quantized_rows import QuantizedRows, quantized_rows
from snapmatch.sdk.catalog.row_products import SMALL_BATCH, row_products
from snapmatch.sdk.types import Match

REMOVED = -1
QUANTIZED_FROM = 1024  # rows: 1.1x faster at 2,000 x 960, 2.2x at 19,800 (BENCHMARKS); smaller ones not measured to gain


@dataclass(frozen=True)
class DenseSnapshot:
    """An immutable view that a search can use while the writer appends (as DeltaSnapshot)."""

    keys: np.ndarray  # int64 [n], ascending
    vectors: np.ndarray  # float32 [n, dim], under the catalog's metric
    codes: np.ndarray  # int32 [n]: index into products, REMOVED for an image no longer live
    products: tuple[str, ...]
    names: tuple[str, ...]
    quantized: QuantizedRows | None = None  # the same rows as int8, for catalogs of QUANTIZED_FROM rows or more

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        """Per query, up to k products, best first, each with its best image (exact cosine)."""
        n = len(self.keys)
        if n == 0:
            return [[] for _ in queries]
        if self.quantized is not None and len(queries) <= SMALL_BATCH:
            return [self._search_quantized(query, k) for query in queries]
        scores = row_products(queries, self.vectors)
        found = []
        for row in scores:
            rows = best_rows(row, self.codes, k)
            found.append(self._matches(rows, row[rows]))
        return found

    def _search_quantized(self, query: np.ndarray, k: int) -> list[Match]:
        """The exact answer from an int8 scan: only rows whose bounds reach the k-th product are rescored.

        If k products each have a row whose score is at least t (their lower
        bounds say so), a product in the top k has its best row at or above t,
        so that row's upper bound is too: every row that can decide the answer
        is among those rescored in float32.
        """
        assert self.quantized is not None
        lower, upper = self.quantized.bounds(query)
        found = best_rows(lower, self.codes, k)
        floor = lower[found[-1]] if len(found) == k else -np.inf
        candidates = np.flatnonzero((upper >= floor) & (self.codes != REMOVED))
        # Of a product's rows, only those reaching its best lower bound can be its best image.
        codes = self.codes[candidates]
        best_lower = np.full(len(self.products), -np.inf)
        np.maximum.at(best_lower, codes, lower[candidates])
        candidates = candidates[upper[candidates] >= best_lower[codes]]
        # numpy's own loop, one thread: a few dozen rows (BLAS would wait for onnxruntime's spinning threads)
        scores = np.einsum("ij,j->i", self.vectors[candidates], np.asarray(query, dtype=np.float32))
        chosen = best_rows(scores, self.codes[candidates], k)  # candidates ascend: ties still go to the earlier row
        return self._matches(candidates[chosen], scores[chosen])

    def _matches(self, rows: np.ndarray | list[int], scores: np.ndarray) -> list[Match]:
        matches = []
        for row, score in zip(rows, scores):
            code = int(self.codes[row])
            matches.append(Match(self.products[code], self.names[code], float(score), int(self.keys[row])))
        return matches


def best_rows(scores: np.ndarray, codes: np.ndarray, k: int) -> list[int]:
    """The best row of each of the k best products, best first (ties: the earlier row); REMOVED rows skipped."""
    n = len(scores)
    if n == 0:
        return []
    fetch = min(n, max(4 * k, 16))
    while True:
        top = np.argpartition(-scores, fetch - 1)[:fetch] if fetch < n else np.arange(n)
        top = top[np.lexsort((top, -scores[top]))]
        found: dict[int, int] = {}
        for row in top:
            code = int(codes[row])
            if code == REMOVED or code in found:
                continue
            found[code] = int(row)
            if len(found) == k:
                return list(found.values())
        if fetch == n:
            return list(found.values())
        fetch = min(n, fetch * 4)


class DenseIndex:
    """The writer-side builder of DenseSnapshot: append rows, mark removals, rename products."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._keys = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._codes = np.zeros(0, dtype=np.int32)
        self._int8 = np.zeros((0, dim), dtype=np.int8)
        self._scales = np.zeros(0, dtype=np.float64)
        self._residuals = np.zeros(0, dtype=np.float64)
        self._norms = np.zeros(0, dtype=np.float64)
        self._quantized: QuantizedRows | None = None
        self._size = 0
        self._code_of: dict[str, int] = {}
        self._products: list[str] = []
        self._names: list[str] = []
        self.snapshot = self._publish()

    @property
    def max_key(self) -> int:
        return int(self._keys[self._size - 1]) if self._size else 0

    def append(self, keys: np.ndarray, product_ids: list[str], vectors: np.ndarray) -> None:
        """Add rows with keys above every key held (the caller serialises writes)."""
        new = self._size + len(keys)
        if new > len(self._keys):
            capacity = max(new, 2 * len(self._keys), 256)
            self._keys = _grown(self._keys, capacity, self._size)
            self._vectors = _grown(self._vectors, capacity, self._size)
            self._codes = _grown(self._codes, capacity, self._size)
            self._int8 = _grown(self._int8, capacity, self._size)
            self._scales = _grown(self._scales, capacity, self._size)
            self._residuals = _grown(self._residuals, capacity, self._size)
            self._norms = _grown(self._norms, capacity, self._size)
        self._keys[self._size:new] = keys
        self._vectors[self._size:new] = vectors
        self._codes[self._size:new] = [self._code(product_id) for product_id in product_ids]
        added = slice(self._size, new)
        self._int8[added], self._scales[added], self._residuals[added], self._norms[added] = quantized_rows(vectors)
        self._size = new
        self._quantized = (QuantizedRows(self._int8[:new], self._scales[:new], self._residuals[:new],
                                         self._norms[:new]) if new >= QUANTIZED_FROM else None)
        self.snapshot = self._publish()

    def keep_only(self, live_keys: np.ndarray) -> None:
        """Mark every row whose key is not in `live_keys` removed (copy on write: snapshots stay as they were)."""
        codes = self._codes.copy()
        dead = ~np.isin(self._keys[: self._size], live_keys)
        codes[: self._size][dead] = REMOVED
        self._codes = codes
        self.snapshot = self._publish()

    def set_names(self, names: dict[str, str]) -> None:
        """The products' current names (a rename, or a product that came back under the same id)."""
        self._names = [names.get(product_id, old) for product_id, old in zip(self._products, self._names)]
        self.snapshot = self._publish()

    def _code(self, product_id: str) -> int:
        code = self._code_of.get(product_id)
        if code is None:
            code = self._code_of[product_id] = len(self._products)
            self._products.append(product_id)
            self._names.append("")
        return code

    def _publish(self) -> DenseSnapshot:
        n = self._size
        return DenseSnapshot(self._keys[:n], self._vectors[:n], self._codes[:n], tuple(self._products),
                             tuple(self._names), self._quantized)


class DenseCache:
    """A reader's DenseIndex, kept in step with the database: built at the first search after a new base,
    then synced by what changed (new rows appended; a removal, seen in the change counter, marks rows)."""

    def __init__(self) -> None:
        self._index: DenseIndex | None = None
        self._synced: tuple[int, int, int] | None = None  # (base generation, data_version, change counter)

    def drop(self) -> None:
        self._index = self._synced = None

    def view(self, conn: sqlite3.Connection, manifest: Manifest, version: int,
             adaptation: Adaptation | None) -> DenseSnapshot:
        """The index as of `version` (the caller holds the connection's lock)."""
        synced, index = self._synced, self._index
        if index is not None and synced is not None and synced[:2] == (manifest.generation, version):
            return index.snapshot
        changes = store.changes(conn)
        fresh = index is None or synced is None or synced[0] != manifest.generation
        if fresh:
            index = DenseIndex(manifest.dim)  # a new base: a new metric may be in force
        assert index is not None
        keys, products, vectors = store.labelled_rows_after(conn, index.max_key, manifest.dim)
        if len(keys):
            index.append(keys, products, adaptation.apply(vectors) if adaptation is not None else vectors)
        if not fresh and synced is not None and changes != synced[2] + len(keys):
            index.keep_only(store.live_keys(conn))  # something was removed since the last sync
        index.set_names(store.product_names(conn))
        self._index, self._synced = index, (manifest.generation, version, changes)
        return index.snapshot


def _grown(array: np.ndarray, capacity: int, size: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[:size] = array[:size]
    return grown
