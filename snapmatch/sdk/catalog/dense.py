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

Each product with two or more live photos also has a prototype: the mean of
its photos' vectors under the metric, normalised. A product's score is the
higher of its best photo's cosine and its prototype's: a query that lies
between a product's photos is nearer their mean than any one of them. On
products the model never trained on it answered right 2-3 points more often,
with the catalog's metric and without it (docs/BENCHMARKS.md, "A product's
mean photo"). No vector is stored for it: q.mean/|mean| is the sum of the
photos' scores over |their sum| (Prototypes). Each Match still names the
product's best photo. The graph that searches a larger catalog ranks by photos alone.
"""

from __future__ import annotations

import functools
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
MIN_PROTOTYPE_PHOTOS = 2  # a product of one photo: its prototype would be that photo
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
    prototypes: Prototypes | None = None  # the products' mean photos (None: no product has two photos)

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        """Per query, up to k products, best first, each with its best image (exact cosine).

        A product's score is the higher of its best image's cosine and its prototype's.
        """
        n = len(self.keys)
        if n == 0:
            return [[] for _ in queries]
        if self.quantized is not None and len(queries) <= SMALL_BATCH:
            return [self._search_quantized(query, k) for query in queries]
        scores = row_products(queries, self.vectors)
        found = []
        for row in scores:
            if self.prototypes is None:
                rows = best_rows(row, self.codes, k)
                found.append(self._matches(rows, row[rows]))
                continue
            combined = np.concatenate([row, self.prototypes.scores(row)])
            chosen = best_rows(combined, self._all_codes, k)  # ties: the image row (it comes first)
            rows = [r if r < n else self._best_image(r - n, row) for r in chosen]
            found.append(self._matches(rows, combined[chosen]))
        return found

    @functools.cached_property
    def _all_codes(self) -> np.ndarray:
        """Codes of the image rows, then of the prototype rows (REMOVED: a product with no prototype)."""
        assert self.prototypes is not None
        return np.concatenate([self.codes, self.prototypes.codes])

    def _best_image(self, code: int, scores: np.ndarray) -> int:
        """The row of product `code`'s best live image under `scores` (ties: the earlier row)."""
        rows = np.flatnonzero(self.codes == code)
        return int(rows[np.argmax(scores[rows])])

    def _search_quantized(self, query: np.ndarray, k: int) -> list[Match]:
        """The exact answer from an int8 scan: only rows whose bounds reach the k-th product are rescored.

        If k products each have a row whose score is at least t (their lower
        bounds say so), a product in the top k has its best row at or above t,
        so that row's upper bound is too: every row that can decide the answer
        is among those rescored in float32. A prototype's bounds are the sums of
        its product's row bounds over |sum of its rows|; a product whose
        prototype can reach t has all its rows rescored, which gives its
        prototype's score and its best image.
        """
        assert self.quantized is not None
        n = len(self.keys)
        query = np.asarray(query, dtype=np.float32)
        lower, upper = self.quantized.bounds(query)
        codes = self.codes
        if self.prototypes is not None:
            lower = np.concatenate([lower, self.prototypes.scores(lower)])
            upper = np.concatenate([upper, self.prototypes.scores(upper)])
            codes = self._all_codes
        found = best_rows(lower, codes, k)
        floor = lower[found[-1]] if len(found) == k else -np.inf
        candidates = np.flatnonzero((upper >= floor) & (codes != REMOVED))
        # Of a product's rows, only those reaching its best lower bound can be its best.
        candidate_codes = codes[candidates]
        best_lower = np.full(len(self.products), -np.inf)
        np.maximum.at(best_lower, candidate_codes, lower[candidates])
        candidates = candidates[upper[candidates] >= best_lower[candidate_codes]]
        typical = candidates[candidates >= n] - n  # products whose prototype must be scored
        rows = candidates[candidates < n]
        wanted = None
        if len(typical):  # every row of those products: its prototype's score is their sum
            assert self.prototypes is not None
            wanted = np.zeros(len(self.prototypes.codes) + 1, dtype=bool)  # by code; the last: removed rows
            wanted[typical] = True
            take = wanted[self.prototypes.row_bins]
            take[rows] = True
            rows = np.flatnonzero(take)
        # numpy's own loop, one thread: a few dozen rows (BLAS would wait for onnxruntime's spinning threads)
        scores = np.einsum("ij,j->i", self.vectors[rows], query)
        row_codes = self.codes[rows]
        if wanted is not None:
            assert self.prototypes is not None
            members = wanted[row_codes]
            position = np.zeros(len(wanted), dtype=np.int64)
            position[typical] = np.arange(len(typical))
            sums = np.bincount(position[row_codes[members]], weights=scores[members], minlength=len(typical))
            scores = np.concatenate([scores, sums * self.prototypes.inverse_norms[typical]])
            row_codes = np.concatenate([row_codes, typical])
        chosen = best_rows(scores, row_codes, k)  # rows ascend, prototypes after: ties go to the earlier row
        images = []
        for i in chosen:
            if i >= len(rows):  # a prototype: its best image is among its rows, all scored above
                own = np.flatnonzero(row_codes[:len(rows)] == row_codes[i])
                i = own[np.argmax(scores[own])]
            images.append(int(rows[i]))
        return self._matches(images, scores[chosen])

    def _matches(self, rows: np.ndarray | list[int], scores: np.ndarray) -> list[Match]:
        matches = []
        for row, score in zip(rows, scores):
            code = int(self.codes[row])
            matches.append(Match(self.products[code], self.names[code], float(score), int(self.keys[row])))
        return matches


@dataclass(frozen=True)
class Prototypes:
    """What scores each product's prototype, the normalised mean m = S / |S| of its rows (S: their sum).

    q.m = sum of q.x over the product's rows / |S|: a prototype is scored from its
    rows' scores (or their bounds), with no vector of its own to store or read.
    """

    codes: np.ndarray  # int32 [products]: the product's code, or REMOVED if it has fewer than two live photos
    inverse_norms: np.ndarray  # float64 [products]: 1 / |S|, 0 where codes says REMOVED
    row_bins: np.ndarray  # int64 [n]: each row's product code, len(codes) for a row no longer live

    def scores(self, row_values: np.ndarray) -> np.ndarray:
        """Per product, the sum of `row_values` over its live rows / |S| (-inf for a product with no prototype)."""
        sums = np.bincount(self.row_bins, weights=row_values, minlength=len(self.codes) + 1)[:len(self.codes)]
        return np.where(self.codes != REMOVED, sums * self.inverse_norms, -np.inf)


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
        # Per product code: its live rows, and 1 / |their sum| (0: no prototype), published as is.
        self._counts = np.zeros(0, dtype=np.int64)
        self._inverse_norms = np.zeros(0, dtype=np.float64)
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
        codes = np.array([self._code(product_id) for product_id in product_ids], dtype=np.int32)
        self._codes[self._size:new] = codes
        added = slice(self._size, new)
        self._int8[added], self._scales[added], self._residuals[added], self._norms[added] = quantized_rows(vectors)
        self._size = new
        self._quantized = (QuantizedRows(self._int8[:new], self._scales[:new], self._residuals[:new],
                                         self._norms[:new]) if new >= QUANTIZED_FROM else None)
        self._count_rows(codes, +1)
        self.snapshot = self._publish()

    def keep_only(self, live_keys: np.ndarray) -> None:
        """Mark every row whose key is not in `live_keys` removed (copy on write: snapshots stay as they were)."""
        codes = self._codes.copy()
        dead = ~np.isin(self._keys[: self._size], live_keys) & (codes[: self._size] != REMOVED)
        gone = codes[: self._size][dead]
        codes[: self._size][dead] = REMOVED
        self._codes = codes
        self._count_rows(gone, -1)
        self.snapshot = self._publish()

    def _count_rows(self, codes: np.ndarray, sign: int) -> None:
        """Rows added (+1) to or removed (-1) from these products: renew their prototypes' norms."""
        if not len(codes):
            return
        products = len(self._products)
        if products > len(self._counts):  # the writer's own: grown in place, never published
            self._counts = _grown(self._counts, max(products, 2 * len(self._counts)), len(self._counts))
        np.add.at(self._counts, codes, sign)
        touched = np.unique(codes)
        inverse = _grown(self._inverse_norms, products, len(self._inverse_norms))  # copy on write
        inverse[touched] = 0.0
        usable = touched[self._counts[touched] >= MIN_PROTOTYPE_PHOTOS]
        if len(usable):
            norms = np.linalg.norm(self._sums(usable), axis=1)
            inverse[usable] = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
        self._inverse_norms = inverse

    def _sums(self, products: np.ndarray) -> np.ndarray:
        """float64 [len(products), dim]: the sum of each product's live rows (summed when needed, not kept:
        a catalog of many products would hold another matrix of their size)."""
        n = self._size
        codes, vectors = self._codes[:n], self._vectors[:n]
        if len(products) <= 8:  # an add or a removal: a product or a few
            return np.stack([vectors[codes == product].sum(axis=0, dtype=np.float64) for product in products])
        position = np.full(len(self._products) + 1, -1, dtype=np.int64)  # the last: removed rows
        position[products] = np.arange(len(products))
        index = position[np.where(codes == REMOVED, len(self._products), codes)]
        rows = np.flatnonzero(index >= 0)
        rows = rows[np.argsort(index[rows], kind="stable")]  # grouped by product
        owners = index[rows]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        lengths = np.diff(np.r_[starts, len(rows)])
        sums = np.zeros((len(products), self.dim), dtype=np.float64)
        # Products of equal row counts summed as one [m, rows, dim] block (numpy's reduceat down the rows is
        # several times slower), a few thousand rows at a time.
        for length in np.unique(lengths):
            group = starts[lengths == length]
            step = max(1, 4096 // int(length))
            for block in range(0, len(group), step):
                first = group[block:block + step]
                block_rows = rows[first[:, None] + np.arange(length)]
                sums[owners[first]] = vectors[block_rows].sum(axis=1, dtype=np.float64)
        return sums

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
        prototypes = None
        if self._inverse_norms.any():
            inverse = self._inverse_norms
            codes = np.where(inverse > 0, np.arange(len(inverse)), REMOVED).astype(np.int32)
            bins = np.where(self._codes[:n] == REMOVED, len(inverse), self._codes[:n]).astype(np.int64)
            prototypes = Prototypes(codes, inverse, bins)
        return DenseSnapshot(self._keys[:n], self._vectors[:n], self._codes[:n], tuple(self._products),
                             tuple(self._names), self._quantized, prototypes)


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
