"""Search merging: a query's candidates from the base index and the delta, rescored and grouped by product.

Pure functions over one consistent view of the catalog (`SearchView`); the
Catalog builds the view from its state and supplies the row lookup.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from snapmatch.sdk.catalog._usearch import Index
from snapmatch.sdk.catalog.adaptation import Adaptation
from snapmatch.sdk.catalog.delta import DeltaSnapshot
from snapmatch.sdk.catalog.store import ImageRow, damaged
from snapmatch.sdk.types import Match

# keys -> {key: row}; the bool asks for the stored vectors too (to rescore an i8/f16 base).
Lookup = Callable[[np.ndarray, bool], Mapping[int, ImageRow]]


@dataclass(frozen=True)
class SearchView:
    """What one search reads: the base, the delta, the count of tombstones, the metric."""

    base: Index | None
    delta: DeltaSnapshot
    tombstones: int
    adaptation: Adaptation | None
    vector_dtype: str
    threads: int
    exact_below: int


def search_products(view: SearchView, queries: np.ndarray, k: int, lookup: Lookup) -> list[list[Match]]:
    """Per (adapted) query, up to k products, best first, merged from base and delta by product."""
    base_count = len(view.base) if view.base is not None else 0
    fetch = max(4 * k, 16) + view.tombstones
    results: list[list[Match] | None] = [None] * len(queries)
    pending = list(range(len(queries)))
    while pending:
        base_keys, base_scores = search_base(view, queries[pending], fetch, base_count)
        delta_keys, delta_scores = view.delta.search(queries[pending], fetch)
        # Below the last score of a list that was cut off, an unseen vector
        # could outrank what was seen: only what is above every such cutoff is final.
        cutoff = np.full(len(pending), -np.inf, dtype=np.float32)
        for part, total in ((base_scores, base_count), (delta_scores, len(view.delta))):
            if part.shape[1] and total > part.shape[1]:
                cutoff = np.maximum(cutoff, part[:, -1])
        keys = np.concatenate([base_keys, delta_keys], axis=1)
        scores = np.concatenate([base_scores, delta_scores], axis=1)
        # An i8/f16 base ranks its candidates approximately: rescore them on the stored float32 vectors,
        # so scores (and the threshold that judges them) do not depend on the base's scalar type.
        rescore = view.vector_dtype != "f32" and base_keys.shape[1] > 0
        rows = lookup(keys[keys >= 0], rescore)
        if rescore:
            scores[:, :base_keys.shape[1]] = exact_scores(base_keys, base_scores, rows, queries[pending],
                                                           view.adaptation)
        exhausted = fetch >= base_count and fetch >= len(view.delta)
        still = []
        for row, query in enumerate(pending):
            final = np.where(scores[row] >= cutoff[row], scores[row], -np.inf)
            matches = group_by_product(keys[row], final, rows, k)
            if len(matches) >= k or exhausted:
                results[query] = matches
            else:
                still.append(query)
        pending = still
        fetch *= 4
    return results  # type: ignore[return-value]

def search_base(view: SearchView, queries: np.ndarray, fetch: int, base_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys (-1: none) and scores (-inf: none) of up to `fetch` base vectors per query, from the index as it ranks them."""
    count = min(fetch, base_count)
    if count == 0 or view.base is None:
        empty = np.zeros((len(queries), 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    found = view.base.search(queries, count, threads=view.threads, exact=base_count <= view.exact_below)
    keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)
    scores = 1.0 - np.asarray(found.distances, dtype=np.float32).reshape(len(queries), -1)
    counts = np.asarray(getattr(found, "counts", [keys.shape[1]])).reshape(-1)
    valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
    keys = np.where(valid, keys, -1)
    scores = np.where(valid & np.isfinite(scores), scores, -np.inf)
    return keys, scores


def exact_scores(keys: np.ndarray, approximate: np.ndarray, rows: Mapping[int, ImageRow], queries: np.ndarray,
                  adaptation: Adaptation | None) -> np.ndarray:
    """Cosine of each (adapted) query with its candidates' stored vectors under the metric; -inf where a key is gone."""
    exact = np.full(approximate.shape, -np.inf, dtype=np.float32)
    found, cols = np.nonzero(keys >= 0)
    keep = [i for i, key in enumerate(keys[found, cols].tolist()) if key in rows]
    found, cols = found[keep], cols[keep]
    keep = np.isfinite(approximate[found, cols])
    found, cols = found[keep], cols[keep]
    if not len(found):
        return exact
    size = queries.shape[1] * 4  # the metric is square: stored vectors have the queries' dimension
    blobs = [rows[key].vector or b"" for key in keys[found, cols].tolist()]
    if all(len(blob) == size for blob in blobs):
        stored = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
    else:
        stored = np.full((len(blobs), queries.shape[1]), np.nan, dtype=np.float32)
        for i, blob in enumerate(blobs):
            if len(blob) == size:
                stored[i] = np.frombuffer(blob, dtype=np.float32)
    bad = damaged(stored)  # a damaged stored vector is never served
    stored = adapted(adaptation, np.where(bad[:, None], 0.0, stored).astype(np.float32))
    scores = np.einsum("ij,ij->i", stored, queries[found])
    exact[found, cols] = np.where(bad | ~np.isfinite(scores), -np.inf, scores)
    return exact


def adapted(adaptation: Adaptation | None, vectors: np.ndarray) -> np.ndarray:
    return adaptation.apply(vectors) if adaptation is not None and len(vectors) else vectors


def with_margins(matches: list[Match]) -> list[Match]:
    """Each match's score minus the best other product's score."""
    if len(matches) < 2:
        return matches
    best, second = matches[0].score, matches[1].score
    return [dataclasses.replace(match, margin=match.score - (second if i == 0 else best))
            for i, match in enumerate(matches)]


def group_by_product(keys: np.ndarray, scores: np.ndarray, rows: Mapping[int, ImageRow], k: int) -> list[Match]:
    """One Match per product (its best image), best first; keys not in `rows` were removed."""
    order = np.argsort(-scores, kind="stable")
    seen: dict[str, Match] = {}
    for i in order:
        row = rows.get(int(keys[i]))
        if row is None or row.product_id in seen or not np.isfinite(scores[i]):
            continue
        seen[row.product_id] = Match(row.product_id, row.name, float(scores[i]), row.key)
        if len(seen) == k:
            break
    return list(seen.values())
