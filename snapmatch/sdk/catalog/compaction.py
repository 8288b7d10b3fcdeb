"""The heavy half of compaction: build and write the next base from the current one and the database.

`Catalog.compact` then makes it current (manifest first, cleanup after); this
module only ever writes a new file, so an interruption here changes nothing.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Callable

import numpy as np

from snapmatch.sdk.catalog import base_index, store
from snapmatch.sdk.catalog.adaptation import Adaptation
from snapmatch.sdk.catalog.manifest import BaseInfo, Manifest
from snapmatch.sdk.errors import CatalogCorruptError

log = logging.getLogger(__name__)

REBUILD_SHARE = 0.25  # rebuild the graph instead of patching it once this share of the base is tombstoned
# Graph effort of a base that is searched exactly (no search walks its graph): 20k vectors build in
# ~2 s instead of ~50 s, which keeps a refit of the catalog's metric cheap enough to run inside a write.
CHEAP_EXPANSION_ADD = 16

# (step, done, total) while a full build runs: "graph" (vectors added), then "check" (vectors searched
# for, after a parallel build). A 1M graph takes tens of minutes: a caller can show how far it is.
Progress = Callable[[str, int, int], None]


def build_next_base(
    folder: Path,
    manifest: Manifest,
    conn: sqlite3.Connection,
    *,
    rebuild: bool,
    adaptation: Adaptation | None = None,
    new_metric: bool = False,
    exact_below: int = 0,
    build_threads: int = 1,
    progress: Progress | None = None,
) -> tuple[BaseInfo | None, int] | None:
    """Write base generation N+1 holding every live vector; None when there is nothing to merge.

    The base holds vectors under `adaptation` (None: as stored). new_metric
    says the transform differs from the current base's, so every vector is
    rebuilt. An adapting catalog's base that is searched exactly (at most
    exact_below vectors) gets a cheap graph: it is rebuilt in full under the
    catalog's settings before it grows past that. A full build adds on `build_threads` threads, then
    re-inserts on one thread any node no search reaches (base_index.repair_unreachable). Returns the new base's info (None when no vector is left) and its generation.
    """
    old = manifest.base
    tombstones = store.tombstone_keys(conn)
    high = store.max_key(conn)
    has_delta = high > (old.max_key if old else 0)
    if not rebuild and not new_metric and not has_delta and not len(tombstones):
        return None
    # Only an adapting catalog needs its rebuilds cheap (a refit rebuilds every vector).
    cheap = manifest.adapt and store.counts(conn)[1] <= exact_below
    full = (
        rebuild or new_metric or old is None or not base_index.same_format(old)
        or len(tombstones) > REBUILD_SHARE * max(old.count, 1)
        or (not cheap and old.expansion_add < manifest.expansion_add)  # outgrew its cheap graph
    )
    if not full and old is not None:
        try:
            base_index.check_intact(folder, old, remember=True)
        except CatalogCorruptError:
            full = True  # never patch a damaged graph (usearch may crash on it): rebuild it from the database

    def adapted(vectors: np.ndarray) -> np.ndarray:
        return adaptation.apply(vectors) if adaptation is not None else vectors

    if full:
        index = base_index.new_index(
            manifest.dim, manifest.vector_dtype, connectivity=manifest.connectivity,
            expansion_add=min(manifest.expansion_add, CHEAP_EXPANSION_ADD) if cheap else manifest.expansion_add,
        )
        report = progress or (lambda step, done, total: None)
        total = store.count_upto(conn, high) if progress else 0
        for keys, vectors in store.iter_rows_upto(conn, high, manifest.dim):
            index.add(keys.astype(np.uint64), adapted(vectors), threads=build_threads)
            report("graph", len(index), total)
        if build_threads > 1 and not cheap:  # a cheap graph is searched exactly: its links are never walked
            rows = ((keys, adapted(vectors)) for keys, vectors in store.iter_rows_upto(conn, high, manifest.dim))
            repaired = base_index.repair_unreachable(index, rows, threads=build_threads,
                                                     on_checked=lambda done: report("check", done, total))
            log.info("built a graph of %d vectors on %d threads; re-inserted %d that no search reached",
                     len(index), build_threads, repaired)
    else:  # patch a private copy of the current base: cost follows the change, not the catalog
        assert old is not None  # `full` covers a catalog without a base
        index = base_index.load_for_update(folder, old)
        in_base = tombstones[tombstones <= old.max_key]
        if len(in_base):
            index.remove(in_base.astype(np.uint64))
        keys, vectors = store.rows_after(conn, old.max_key, manifest.dim)
        keys, vectors = keys[keys <= high], vectors[keys <= high]
        if len(keys):
            index.add(keys.astype(np.uint64), adapted(vectors), threads=base_index.PATCH_THREADS)
    generation = manifest.generation + 1
    info = base_index.write_base(folder, index, generation=generation, max_key=high) if len(index) else None
    return info, generation
