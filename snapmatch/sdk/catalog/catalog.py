"""The on-disk catalog: a memory-mapped usearch base, an exact in-memory delta, SQLite as the log.

`Catalog` stores and searches vectors by product; it knows nothing of images
or models (that is `ProductSearch`). Layout and crash-safety are described in
DESIGN.md ("On-disk catalog"): SQLite commits make every change durable, the
base file is immutable and replaced only through the manifest, so a crash at
any step leaves a catalog that answers as before or as after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from snapmatch.sdk.catalog import adaptation as adapt
from snapmatch.sdk.catalog import base_index, compaction, self_calibration, store
from snapmatch.sdk.catalog._usearch import Index
from snapmatch.sdk.catalog.adaptation import Adaptation
from snapmatch.sdk.catalog.calibration import (
    CalibrationReport,
    DecisionRule,
    fit_rule,
    guard_calibration,
)
from snapmatch.sdk.catalog.calibration import report as calibration_report
from snapmatch.sdk.catalog.delta import Delta, DeltaSnapshot
from snapmatch.sdk.catalog.dense import DenseCache, DenseSnapshot
from snapmatch.sdk.catalog.lock import WriterLock
from snapmatch.sdk.catalog.manifest import (
    Manifest,
    manifest_path,
    read_manifest,
    write_manifest,
)
from snapmatch.sdk.catalog.search import (
    SearchView,
    adapted,
    exact_scores,
    search_base,
    search_products,
    with_margins,
)
from snapmatch.sdk.cores import usable_cores
from snapmatch.sdk.errors import (
    CalibrationError,
    CatalogClosedError,
    CatalogCorruptError,
    CatalogExistsError,
    EmbeddingError,
    InvalidArgumentError,
    ProductExistsError,
    ProductNotFoundError,
    ReadOnlyError,
)
from snapmatch.sdk.fsutil import make_dir_durably
from snapmatch.sdk.types import Added, Match, Product

LOCK_FILE = "writer.lock"
VECTOR_DTYPES = ("f32", "f16", "i8")
_BASE_FILE = re.compile(r"^base-\d{6}\.usearch$")
_ADAPT_FILE = re.compile(r"^adapt-\d{6}\.npz$")
_NOT_FITTED = object()
# The metric is refitted once the images added plus removed since its fit reach this share of the
# images it was fitted on (and at least REFIT_MIN_CHANGES): the staleness bound DESIGN.md promises.
REFIT_SHARE = 0.1
REFIT_MIN_CHANGES = 8


def _database_errors(method):
    """Translate sqlite3 errors raised anywhere in a Catalog method into snapmatch errors."""

    @functools.wraps(method)
    def wrapper(first, *args, **kwargs):
        folder = first.folder if isinstance(first, Catalog) else Path(args[0])
        with store.translate_errors(folder):
            return method(first, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class _State:
    """What a search needs, swapped as one object so a search never sees half an update."""

    manifest: Manifest
    base: Index | None
    delta: DeltaSnapshot
    tombstones: int
    adaptation: Adaptation | None  # the transform the base was built under; applied to delta and queries


class Catalog:
    """Products and their image vectors, searchable by cosine similarity.

    Many readers (any process) and one writer (the process holding writer.lock).
    Inside a process, search is safe while another thread writes.
    """

    def __init__(self, folder: Path, *, readonly: bool, threads: int, exact_below: int) -> None:
        self.folder = folder
        self.readonly = readonly
        self.threads = threads
        self.exact_below = exact_below
        self._lock = WriterLock(folder / LOCK_FILE)
        self._write_mutex = threading.RLock()  # one write at a time inside the process
        self._read_mutex = threading.Lock()  # guards the reader connection and state refreshes
        # The connections: set by open() (the writer's only for a writer), closed by close().
        self._read: sqlite3.Connection
        self._write: sqlite3.Connection
        self._closed = False
        self._fit_attempt: int | None = None  # change counter at the last fit that found too little to fit
        self._scoring_refitted: str | None = None  # the scoring a write last recalibrated the rule for
        self._dense = DenseCache()  # the in-memory exact index of a small catalog, built at its first search

    # --- opening -------------------------------------------------------------------

    @classmethod
    @_database_errors
    def create(
        cls,
        folder: str | os.PathLike,
        *,
        model_id: str,
        dim: int,
        model_sha256: str = "",
        vector_dtype: str = "f32",
        threshold: float = 0.5,
        threshold_source: str = "default",
        compact_at: int = 4096,
        expansion_search: int = 64,
        connectivity: int = base_index.CONNECTIVITY,
        expansion_add: int = base_index.EXPANSION_ADD,
        threads: int = 0,
        exact_below: int = 20_000,
        adapt: bool = False,
    ) -> "Catalog":
        """Create an empty catalog in `folder` (new or without a manifest) and open it for writing.

        adapt: fit the metric to the catalog's own photos once it has enough
        multi-photo products (snapmatch.sdk.catalog.adaptation). Off here, where the
        catalog is a plain vector store; ProductSearch turns it on by default.

        connectivity, expansion_add and expansion_search tune the HNSW graph of
        catalogs larger than exact_below (see docs/BENCHMARKS.md, scale).
        """
        folder = Path(folder)
        if vector_dtype not in VECTOR_DTYPES:
            raise InvalidArgumentError(f"vector_dtype must be one of {VECTOR_DTYPES}, not {vector_dtype!r}")
        if manifest_path(folder).exists():
            raise CatalogExistsError(f"a catalog already exists at {folder}")
        make_dir_durably(folder)  # a power cut must not take the new folder, and the catalog in it, away
        conn = store.connect(folder, readonly=False, create=True)
        conn.close()
        # The manifest is written last: a folder without one is not a catalog yet.
        write_manifest(
            folder,
            Manifest(
                model_id=model_id,
                model_sha256=model_sha256,
                dim=int(dim),
                vector_dtype=vector_dtype,
                threshold=float(threshold),
                threshold_source=threshold_source,
                compact_at=int(compact_at),
                expansion_search=int(expansion_search),
                connectivity=int(connectivity),
                expansion_add=int(expansion_add),
                adapt=bool(adapt),
            ),
        )
        return cls.open(folder, threads=threads, exact_below=exact_below)

    @classmethod
    @_database_errors
    def open(
        cls,
        folder: str | os.PathLike,
        *,
        readonly: bool = False,
        threads: int = 0,
        exact_below: int = 20_000,
        rebuild_base: bool = False,
        wait: float = 0.0,
    ) -> "Catalog":
        """Open a catalog; the writer (readonly=False) takes the OS lock and finishes an interrupted compaction.

        rebuild_base rebuilds the base index from the database instead of opening it (repair).
        wait: seconds a writer waits for another writer to close (CatalogLockedError after).
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        catalog = cls(folder, readonly=readonly, threads=threads, exact_below=exact_below)
        try:
            if not readonly:
                catalog._lock.acquire(wait)
                # Read it again under the lock: a writer may have compacted (and closed) since.
                manifest = read_manifest(folder)
                catalog._write = store.connect(folder, readonly=False)
                catalog._recover(manifest)
            catalog._read = store.connect(folder, readonly=readonly)
            base = manifest.base
            if not readonly and base is not None and (rebuild_base or not base_index.same_format(base)):
                catalog.compact(rebuild=True)  # ends by loading the state
            else:
                if base is not None and not base_index.same_format(base):
                    raise CatalogCorruptError(
                        f"catalog {folder} base was written by usearch {base.usearch_version}; open it once "
                        "for writing to rebuild it for this version"
                    )
                catalog._load_state()
            if not readonly and not catalog.threshold_current():
                catalog.recalibrate()  # a refit was interrupted before its recalibration
        except BaseException:
            catalog.close()
            raise
        return catalog

    def _recover(self, manifest: Manifest) -> None:
        """Finish what a crash interrupted: stray temp files, orphan bases, applied tombstones."""
        current = manifest.base.file if manifest.base else None
        if manifest.base is not None:
            try:
                base_index.check_base(self.folder, manifest.base, dim=manifest.dim, dtype=manifest.vector_dtype)
            except CatalogCorruptError:
                current = None  # keep every base file: one of them may be needed to recover by hand
        sound = manifest.base is None or current is not None
        current_adaptation = manifest.adaptation.file if manifest.adaptation else None
        for entry in self.folder.iterdir():
            name = entry.name
            stray_tmp = name.startswith(".") and name.endswith(".tmp")
            orphan = ((_BASE_FILE.match(name) and name != current)
                      or (_ADAPT_FILE.match(name) and name != current_adaptation)
                      or (name.endswith(base_index.INTACT_SUFFIX) and name != f"{current}{base_index.INTACT_SUFFIX}"))
            if stray_tmp or (sound and orphan):
                entry.unlink(missing_ok=True)
        with store.Transaction(self._write) as conn:
            store.retire_tombstones(conn, below_generation=manifest.generation)
            # Always commit something: a commit killed after its WAL write, before the WAL
            # index showed it, stays hidden while another process has the database open and
            # reappears once all close. Writing now overwrites it: what this writer sees stays.
            conn.execute(
                "INSERT INTO meta VALUES ('writer_opens', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )

    def _load_state(self) -> None:
        """(Re)build the search state from the manifest and the database."""
        for attempt in range(5):
            stat = manifest_path(self.folder).stat()  # before reading: a replace in between changes the inode
            manifest = read_manifest(self.folder)
            try:
                base = None
                if manifest.base is not None:
                    base = base_index.view_base(
                        self.folder, manifest.base, dim=manifest.dim, dtype=manifest.vector_dtype,
                        expansion_search=manifest.expansion_search, remember=not self.readonly,
                    )
                transform = adapt.load(self.folder, manifest.adaptation, dim=manifest.dim) if manifest.adaptation else None
                break
            except CatalogCorruptError:
                # A compaction in another process may have replaced the manifest
                # and retired the base we just read about: read it again.
                if attempt == 4 or manifest_path(self.folder).stat().st_ino == stat.st_ino:
                    raise
        self._manifest_ino = stat.st_ino
        self._seen_version = store.data_version(self._read)
        delta = Delta(manifest.dim)
        keys, vectors = store.rows_after(self._read, manifest.base.max_key if manifest.base else 0, manifest.dim)
        delta.append(keys, adapted(transform, vectors))
        self._delta = delta
        self._max_seen = int(keys[-1]) if len(keys) else (manifest.base.max_key if manifest.base else 0)
        self._state = _State(manifest, base, delta.snapshot, store.tombstone_count(self._read, manifest.generation),
                             transform)

    def _refresh(self) -> None:
        """Pick up what was committed since the last look (by this or another process)."""
        with self._read_mutex:
            version = store.data_version(self._read)
            if version == self._seen_version:
                return
            try:
                ino = manifest_path(self.folder).stat().st_ino
            except FileNotFoundError:
                ino = self._manifest_ino
            if ino != self._manifest_ino:
                manifest = read_manifest(self.folder)
                if manifest.generation != self._state.manifest.generation:
                    self._load_state()
                    return
                self._manifest_ino = ino
                if self._state.base is not None:
                    self._state.base.expansion_search = manifest.expansion_search  # type: ignore[misc]  # a setter at run time
                self._state = dataclasses.replace(self._state, manifest=manifest)
            self._seen_version = version
            keys, vectors = store.rows_after(self._read, self._max_seen, self._state.manifest.dim)
            if len(keys):
                self._delta.append(keys, adapted(self._state.adaptation, vectors))
                self._max_seen = int(keys[-1])
            self._state = dataclasses.replace(
                self._state, delta=self._delta.snapshot,
                tombstones=store.tombstone_count(self._read, self._state.manifest.generation),
            )

    # --- properties ----------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        return self._state.manifest

    @property
    def dim(self) -> int:
        return self._state.manifest.dim

    @property
    def model_id(self) -> str:
        return self._state.manifest.model_id

    @property
    def threshold(self) -> float:
        self._check_open()
        self._refresh()
        return self._state.manifest.threshold

    @_database_errors
    def stats(self) -> dict:
        """Counts that `snapmatch catalog info` shows."""
        self._check_open()
        self._refresh()
        state = self._state
        with self._read_mutex:
            products, images = store.counts(self._read)
        return {
            "products": products,
            "images": images,
            "base_vectors": state.manifest.base.count if state.manifest.base else 0,
            "delta_vectors": len(state.delta),
            "tombstones": state.tombstones,
            "generation": state.manifest.generation,
            "adaptation": self.adaptation_status(),
        }

    @property
    def adaptation(self) -> Adaptation | None:
        """The metric's transform in force (applied to every query), or None for the plain cosine."""
        return self._state.adaptation

    def adaptation_status(self) -> dict:
        """Which metric is in force and what it rests on (for `catalog info`)."""
        manifest = self._state.manifest
        info = manifest.adaptation
        if info is None:
            reason = ("turned off (catalog tune --adapt turns it on)" if not manifest.adapt else
                      f"not fitted yet: it needs {adapt.MIN_PRODUCTS} products with two or more photos and "
                      f"{adapt.MIN_RESIDUALS} photos beyond each product's first, and is tried again every "
                      f"{REFIT_MIN_CHANGES} images added or removed (catalog compact --refit tries now)")
            return {"in_force": False, "enabled": manifest.adapt, "reason": reason}
        return {"in_force": True, "enabled": manifest.adapt, "file": info.file, "products": info.products,
                "images": info.images, "shrinkage": info.shrinkage}

    # --- writing -------------------------------------------------------------------

    @_database_errors
    def add(
        self,
        product_id: str,
        vectors: np.ndarray,
        *,
        name: str | None = None,
        sources: Sequence[str] | None = None,
        new_product: bool = True,
    ) -> list[int]:
        """Add image vectors for a new product (new_product=True) or a known one; durable on return."""
        return self.put(product_id, vectors, name=name, sources=sources,
                        must_exist=not new_product, must_be_new=new_product).new_keys

    @_database_errors
    def put(
        self,
        product_id: str,
        vectors: np.ndarray,
        *,
        name: str | None = None,
        sources: Sequence[str] | None = None,
        digests: Sequence[str | None] | None = None,
        must_exist: bool = False,
        must_be_new: bool = False,
    ) -> Added:
        """Add image vectors to a product, creating it when new; durable on return.

        digests (one per vector, None for unknown): a vector whose digest the
        product already has is skipped, and its stored key returned in its
        place. must_be_new refuses a known product (ProductExistsError),
        must_exist an unknown one (ProductNotFoundError). A name, when given,
        becomes the product's name.
        """
        self._check_writable()
        product_id = check_product_id(product_id)
        vectors = self._check_vectors(vectors)
        if len(vectors) == 0:
            raise InvalidArgumentError(f"no images to add to product {product_id!r}: give at least one")
        sources = [str(s) for s in sources] if sources is not None else [""] * len(vectors)
        given = list(digests) if digests is not None else [None] * len(vectors)
        if len(sources) != len(vectors) or len(given) != len(vectors):
            raise InvalidArgumentError("sources, digests and vectors differ in length")
        with self._write_mutex:
            with store.Transaction(self._write) as conn:
                exists = store.product_exists(conn, product_id)
                if must_be_new and exists:
                    raise ProductExistsError(
                        f"product {product_id!r} is already in the catalog: use add_images to add photos to it"
                    )
                if must_exist and not exists:
                    raise ProductNotFoundError(f"no product {product_id!r} in the catalog")
                renamed = False
                if not exists:
                    store.insert_product(conn, product_id, name or "")
                elif name is not None:
                    renamed = store.rename_product(conn, product_id, name)
                stored = store.known_digests(conn, product_id, given) if exists else {}
                first: dict[str, int] = {}  # digest -> index of its first photo in this call
                fresh = [i for i, digest in enumerate(given)
                         if not digest or (digest not in stored and first.setdefault(digest, i) == i)]
                new_keys = store.insert_images(conn, product_id, vectors[fresh], [sources[i] for i in fresh],
                                               [given[i] for i in fresh]) if fresh else []
            by_index = dict(zip(fresh, new_keys))
            keys = [by_index[i] if i in by_index else _earlier_key(given[i], stored, first, by_index)
                    for i in range(len(vectors))]
            self._refresh()
            if new_keys:
                self._after_write()
        return Added(product_id, not exists, keys, duplicates=len(vectors) - len(fresh), renamed=renamed,
                     new_keys=new_keys)

    @_database_errors
    def known_digests(self, product_id: str, digests: Sequence[str | None]) -> dict[str, int]:
        """Of the photo digests, those the product already holds, each with its image key (writer only)."""
        self._check_writable()
        with self._write_mutex:
            return store.known_digests(self._write, product_id, digests)

    @_database_errors
    def rename(self, product_id: str, name: str) -> bool:
        """Set a product's name; True when it changed."""
        self._check_writable()
        with self._write_mutex:
            with store.Transaction(self._write) as conn:
                if not store.product_exists(conn, product_id):
                    raise ProductNotFoundError(f"no product {product_id!r} in the catalog")
                changed = store.rename_product(conn, product_id, name)
            self._refresh()
        return changed

    def _after_write(self) -> None:
        """Compact once the delta is large; refit the metric once the catalog has moved enough since its fit.

        A base searched exactly is rebuilt under the new metric at once (cheap);
        a graph-searched base waits for its next compaction, so the transform in
        force may then trail by up to compact_at images more.
        """
        state = self._state
        if len(state.delta) >= state.manifest.compact_at:
            self.compact()
        elif self._refit_due() and (state.base is None or len(state.base) <= self.exact_below):
            fitted = self._fit(state.manifest) if state.manifest.adapt else None
            if fitted is None and state.adaptation is None:
                self._fit_attempt = store.changes(self._write)  # still too little to fit: nothing changes
            else:
                self._compact(rebuild=False, refit=True, fitted=fitted)
        # The catalog grew past exact_below (or shrank below it): search scores products another way now,
        # and a rule fitted on its photos is refitted to match, once per change of scoring.
        scoring = self._scoring(self._state)
        if scoring != self._scoring_refitted and not self.threshold_current():
            self._scoring_refitted = scoring
            self.recalibrate()

    @_database_errors
    def remove(self, product_id: str) -> int:
        """Remove a product and all its images; returns how many images went."""
        self._check_writable()
        with self._write_mutex:
            state = self._state
            base = state.manifest.base
            with store.Transaction(self._write) as conn:
                if not store.product_exists(conn, product_id):
                    raise ProductNotFoundError(f"no product {product_id!r} in the catalog")
                removed = store.delete_product(
                    conn, product_id, base_max_key=base.max_key if base else 0, generation=state.manifest.generation
                )
            self._refresh()
            self._after_write()
        return removed

    def _refit_due(self, manifest: Manifest | None = None) -> bool:
        """Has the catalog changed enough since its metric was fitted (or last found unfittable)?"""
        manifest = manifest or self._state.manifest
        if not manifest.adapt:
            return manifest.adaptation is not None  # turned off: drop the transform
        changes = store.changes(self._write)
        info = manifest.adaptation
        if info is None:
            since, rests_on = changes - (self._fit_attempt if self._fit_attempt is not None else -REFIT_MIN_CHANGES), 0
        else:
            since, rests_on = changes - info.changes, info.images
        return since >= max(REFIT_MIN_CHANGES, REFIT_SHARE * rests_on)

    def _fit(self, manifest: Manifest) -> Adaptation | None:
        """The within-product whitening of every live image; None when there is too little to fit."""
        scatter = adapt.ScatterAccumulator(manifest.dim)
        for _, products, vectors in store.iter_product_rows(self._write, manifest.dim):
            scatter.add(products, vectors)
        return scatter.fit()

    @_database_errors
    def update_manifest(self, **changes) -> None:
        """Durably change manifest settings (threshold, expansion_search, compact_at, ...)."""
        self._check_writable()
        with self._write_mutex:
            manifest = read_manifest(self.folder).replace(**changes)
            write_manifest(self.folder, manifest)
            self._touch_database()
            self._refresh()

    @_database_errors
    def set_adapt(self, enabled: bool) -> bool:
        """Turn adaptation on or off, and apply it now (fit, or drop, the transform); True when the metric changed."""
        self._check_writable()
        with self._write_mutex:
            self.update_manifest(adapt=bool(enabled))
            before = self._state.manifest.adaptation
            if enabled and before is None or not enabled and before is not None:
                self._compact(rebuild=False, refit=True)
            return self._state.manifest.adaptation != before

    def _touch_database(self) -> None:
        # Readers notice changes through SQLite's data_version: make every
        # manifest change also a database commit.
        with store.Transaction(self._write) as conn:
            conn.execute(
                "INSERT INTO meta VALUES ('manifest_serial', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )

    @_database_errors
    def compact(self, *, rebuild: bool = False, refit: bool | None = None,
                progress: compaction.Progress | None = None) -> bool:
        """Merge the delta and tombstones into a new base; returns False when there was nothing to do.

        refit: fit the catalog's metric anew (True), keep it (False), or refit
        when it is due (None: the catalog changed by REFIT_SHARE since the fit).
        progress(step, done, total): how far a full build of the graph is
        ("graph": vectors added; "check": vectors searched for after a parallel build).
        Crash-safe: the new base and transform are fsynced under new names
        before the manifest (replaced atomically) points at them; retired rows
        and files are cleaned after.
        """
        self._check_writable()
        with self._write_mutex:
            return self._compact(rebuild=rebuild, refit=refit, progress=progress)

    def _compact(self, *, rebuild: bool, refit: bool | None, fitted: Adaptation | None | object = _NOT_FITTED,
                 progress: compaction.Progress | None = None) -> bool:
        """compact(); `fitted` is a transform the caller already fitted for this refit."""
        with self._write_mutex:
            manifest = read_manifest(self.folder)
            current, damaged = self._current_adaptation(manifest)
            transform, info = current, manifest.adaptation
            refitting = manifest.adapt and (refit is True or damaged or (refit is None and self._refit_due(manifest)))
            if refitting:
                new = self._fit(manifest) if fitted is _NOT_FITTED else fitted
                assert new is None or isinstance(new, Adaptation)
                if new is None:
                    self._fit_attempt = store.changes(self._write)
                if new is not None or info is not None:
                    transform, info = new, None  # None: written below, with the base
            elif not manifest.adapt and info is not None:
                transform = None  # adaptation was turned off
            new_metric = transform is not current or damaged
            built = compaction.build_next_base(
                self.folder, manifest, self._write, rebuild=rebuild, adaptation=transform,
                new_metric=new_metric, exact_below=self.exact_below,
                build_threads=self.threads or usable_cores(), progress=progress,
            )
            if built is None:
                return False
            base, generation = built
            if new_metric and transform is not None:
                info = adapt.save(self.folder, transform, generation=generation, changes=store.changes(self._write))
            elif transform is None:
                info = None
            old, old_adaptation = manifest.base, manifest.adaptation
            # With no live vectors left there is no base (base is None).
            write_manifest(self.folder, manifest.replace(base=base, generation=generation, adaptation=info))
            with store.Transaction(self._write) as conn:
                store.retire_tombstones(conn, below_generation=generation + 1)
                conn.execute(
                    "INSERT INTO meta VALUES ('generation', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(generation),),
                )
            # The compaction is done: removing what it replaced is cleanup, which the next writer's
            # open finishes if it fails here (an I/O error must not report a done compaction as failed).
            with contextlib.suppress(OSError):
                if old is not None and (base is None or old.file != base.file):
                    (self.folder / old.file).unlink(missing_ok=True)  # readers keep their mapping
                    (self.folder / (old.file + base_index.INTACT_SUFFIX)).unlink(missing_ok=True)
                if old_adaptation is not None and (info is None or old_adaptation.file != info.file):
                    (self.folder / old_adaptation.file).unlink(missing_ok=True)  # readers hold it in memory
            with self._read_mutex:
                self._load_state()
            if new_metric:
                self.recalibrate()
        return True

    def _current_adaptation(self, manifest: Manifest) -> tuple[Adaptation | None, bool]:
        """The transform the manifest names, and whether its file is damaged (then it must be refitted)."""
        state = getattr(self, "_state", None)  # absent while open() repairs a base
        if state is not None and state.manifest.adaptation == manifest.adaptation:
            return state.adaptation, False
        if manifest.adaptation is None:
            return None, False
        try:
            return adapt.load(self.folder, manifest.adaptation, dim=manifest.dim), False
        except CatalogCorruptError:
            return None, True

    # --- the decision rule ------------------------------------------------------------

    @property
    def rule(self) -> DecisionRule:
        """identify()'s rule in force (threshold, margin weight)."""
        self._check_open()
        self._refresh()
        manifest = self._state.manifest
        return DecisionRule(manifest.threshold, manifest.margin_weight)

    def threshold_current(self) -> bool:
        """False when the stored threshold was fitted under another metric than the one in force, or, for a
        rule fitted on the catalog, on products scored another way than search scores them now."""
        manifest = self._state.manifest
        if manifest.threshold_adaptation != (manifest.adaptation.sha256 if manifest.adaptation else ""):
            return False
        fitted_here = manifest.threshold_source in ("calibrated", "self-calibrated")
        return not fitted_here or (manifest.threshold_scoring or "photos") == self._scoring(self._state)

    def _scoring(self, state: _State) -> str:
        """How search scores products now: with prototypes when searched exactly (a THRESHOLD_SCORINGS entry)."""
        return "prototypes" if self._searched_exactly(state) else "photos"

    @_database_errors
    def calibrate(self, vectors: np.ndarray, labels: Sequence[str | None], *, target_precision: float,
                  keep: bool = True, force: bool = False) -> tuple[DecisionRule, CalibrationReport]:
        """Fit and store identify()'s rule for `target_precision` on labelled photo vectors (raw embeddings).

        keep: store the photos' vectors too, so a refitted metric recalibrates by itself.
        Refuses (CalibrationError), unless force=True, a rule that would mean
        nothing: too few photos, none of a known product, photos that are the
        catalog's own, or a rule that names almost no known photo right. The
        report lists milder doubts as warnings.
        """
        self._check_writable()
        vectors = self._check_vectors(vectors)
        labels = list(labels)
        if len(labels) != len(vectors):
            raise InvalidArgumentError("labels and vectors differ in length")
        with self._write_mutex:
            rule, result, scores, right, known = self._fit_rule(vectors, labels, target_precision)
            refusals, warnings = guard_calibration(result, scores, right, known)
            if refusals and not force:
                raise CalibrationError("; ".join(refusals) + " (force=True, or --force, stores it anyway)")
            result = dataclasses.replace(result, warnings=tuple(refusals + warnings))
            if keep:
                with store.Transaction(self._write) as conn:
                    store.replace_calibration(conn, labels, vectors)
            self._store_rule(rule, result, "calibrated", target_precision)
        return rule, result

    def _fit_rule(self, vectors: np.ndarray, labels: list[str | None], target_precision: float):
        results = self.search(vectors, k=2)
        scores, margins, right, known = _decision_inputs(results, labels, set(self._product_ids()))
        rule = fit_rule(scores, margins, right & known, target_precision)
        return rule, calibration_report(rule, scores, margins, right, known), scores, right, known

    def _store_rule(self, rule: DecisionRule, result: CalibrationReport, source: str,
                    target_precision: float | None) -> None:
        manifest = self._state.manifest
        self.update_manifest(
            threshold=rule.threshold, margin_weight=rule.margin_weight, threshold_source=source,
            target_precision=target_precision, calibration=result.to_dict(),
            threshold_adaptation=manifest.adaptation.sha256 if manifest.adaptation else "",
            threshold_scoring=self._scoring(self._state),
        )

    @_database_errors
    def recalibrate(self) -> str:
        """Refit the stored rule under the metric in force; returns what was done (for reports).

        A threshold calibrated on labelled photos is refitted on the same photos
        at the same target precision. An uncalibrated catalog whose metric is
        adapted fits its rule on its own photos (self_calibration). A failure
        keeps the old rule; `threshold_current()` then says it is stale.
        """
        self._check_writable()
        manifest = self._state.manifest
        if self.threshold_current():
            return "current"
        try:
            with self._write_mutex:
                labels, vectors = store.calibration_set(self._write, manifest.dim)
                if manifest.threshold_source == "calibrated" and len(labels):
                    target = manifest.target_precision or 0.95  # calibrations before this field aimed unknown
                    rule, result, *_ = self._fit_rule(vectors, labels, target)
                    self._store_rule(rule, result, "calibrated", target)
                    return "recalibrated"
                if manifest.threshold_source != "calibrated" and (
                    manifest.adaptation is not None or manifest.threshold_source == "self-calibrated"
                ):
                    sample = self_calibration.sample(self._write, manifest.dim)
                    rule, result = self_calibration.fit(sample, self._state.adaptation,
                                                        prototypes=self._searched_exactly(self._state))
                    self._store_rule(rule, result, "self-calibrated", None)
                    return "self-calibrated"
        except CalibrationError:
            return "stale"
        return "current" if self.threshold_current() else "stale"

    def self_calibrated_rule(self) -> tuple[DecisionRule, CalibrationReport]:
        """The rule self-calibration would fit on the catalog's own photos now, not stored (for evaluations)."""
        self._check_writable()
        with self._write_mutex:
            return self_calibration.fit(self_calibration.sample(self._write, self.dim), self._state.adaptation,
                                        prototypes=self._searched_exactly(self._state))

    def _product_ids(self) -> list[str]:
        with self._read_mutex:
            return [pid for pid, _, _ in store.list_products(self._read)]

    # --- reading -------------------------------------------------------------------

    @_database_errors
    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Per query vector (a raw embedding), up to k products, best first (each with its best image).

        Scores are cosines under the catalog's metric (adapted when a transform
        is in force). Searched exactly (float32, up to exact_below images), a
        product of two or more photos scores the higher of its best photo and
        its prototype, the normalised mean of its photos (snapmatch.sdk.catalog.dense);
        the graph of a larger catalog ranks by photos alone. Each match's margin
        is its score minus the best other product's score (positive only for
        the first; None when no other product was found).
        """
        self._check_open()
        if k < 1:
            raise InvalidArgumentError("k must be at least 1")
        raw = self._check_vectors(vectors)
        self._refresh()
        state = self._state
        queries = adapted(state.adaptation, raw)
        dense = self._dense_view(state)
        if dense is not None:
            return [with_margins(matches)[:k] for matches in dense.search(queries, max(k, 2))]
        view = SearchView(state.base, state.delta, state.tombstones, state.adaptation,
                          state.manifest.vector_dtype, self.threads, self.exact_below)
        found = search_products(view, queries, max(k, 2), self._lookup)
        return [with_margins(matches)[:k] for matches in found]

    @_database_errors
    def search_base(self, vectors: np.ndarray, count: int, *, candidates: int | None = None,
                    expansion_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keys and scores of the `count` nearest base vectors per query, found as search() finds them.

        Internal but documented: the entry point of benchmarks that measure the
        index alone (snapmatch.benchmarks.scale), with no delta and no grouping
        by product. candidates > count fetches that many from the index and
        ranks them on their stored float32 vectors, as search() does for an
        i8/f16 base. expansion_search changes the graph's effort in this process only.
        """
        self._check_open()
        queries = adapted(self._state.adaptation, self._check_vectors(vectors))
        state = self._state
        if expansion_search is not None and state.base is not None:
            state.base.expansion_search = int(expansion_search)  # type: ignore[misc]  # a setter at run time
        view = SearchView(state.base, state.delta, state.tombstones, state.adaptation,
                          state.manifest.vector_dtype, self.threads, self.exact_below)
        total = len(state.base) if state.base is not None else 0
        keys, scores = search_base(view, queries, max(count, candidates or 0), total)
        if candidates:
            scores = exact_scores(keys, scores, self._lookup(keys[keys >= 0], True), queries, state.adaptation)
            order = np.argsort(-scores, axis=1, kind="stable")
            keys, scores = np.take_along_axis(keys, order, 1), np.take_along_axis(scores, order, 1)
        return keys[:, :count], scores[:, :count]

    def _searched_exactly(self, state: _State) -> bool:
        """Whether search() scans every vector in memory (float32, up to exact_below images), not the graph."""
        size = (len(state.base) if state.base is not None else 0) + len(state.delta)
        return state.manifest.vector_dtype == "f32" and size <= self.exact_below

    def _dense_view(self, state: _State) -> DenseSnapshot | None:
        """The exact in-memory index when the catalog is small and stores float32 (else None: base + delta)."""
        if not self._searched_exactly(state):
            self._dense.drop()
            return None
        with self._read_mutex:
            return self._dense.view(self._read, state.manifest, self._seen_version, state.adaptation)

    def _lookup(self, keys: np.ndarray, vectors: bool) -> dict:
        with self._read_mutex:
            return store.lookup(self._read, keys, vectors=vectors)

    @_database_errors
    def products(self) -> list[Product]:
        self._check_open()
        with self._read_mutex:
            return [Product(pid, name, count) for pid, name, count in store.list_products(self._read)]

    def product(self, product_id: str) -> Product:
        for product in self.products():
            if product.id == product_id:
                return product
        raise ProductNotFoundError(f"no product {product_id!r} in the catalog")

    # --- checks & lifetime -----------------------------------------------------------

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        if not isinstance(vectors, (np.ndarray, list, tuple)):
            raise InvalidArgumentError(f"vectors must be a float array of shape [N, {self.dim}], not "
                                       f"{type(vectors).__name__}")
        try:
            vectors = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"vectors must be a float array of shape [N, {self.dim}]") from None
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InvalidArgumentError(f"vectors must have shape [N, {self.dim}], got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise EmbeddingError("vectors contain NaN or infinite values")
        norms = np.linalg.norm(vectors, axis=1)
        if len(norms) and float(np.max(np.abs(norms - 1.0))) > store.NORM_TOLERANCE:
            raise EmbeddingError("vectors must be L2-normalised (a zero or unnormalised vector was given)")
        return np.ascontiguousarray(vectors)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise CatalogClosedError(f"catalog {self.folder} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"catalog {self.folder} was opened read-only")

    def close(self) -> None:
        """Release the writer lock and the database; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._write_mutex:
            for conn in (getattr(self, "_read", None), getattr(self, "_write", None)):
                if conn is not None:
                    conn.close()
            self._lock.release()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writer"
        return f"Catalog({str(self.folder)!r}, {mode}, model_id={self.model_id!r})"


def _decision_inputs(results: list[list[Match]], labels: list[str | None], products: set[str]):
    """Per labelled query: best score, margin (NaN: none), best product right?, product in the catalog?"""
    scores = np.array([m[0].score if m else -1.0 for m in results], dtype=np.float64)
    margins = np.array([m[0].margin if m and m[0].margin is not None else np.nan for m in results], dtype=np.float64)
    right = np.array([bool(m) and m[0].product_id == label for m, label in zip(results, labels)])
    known = np.array([label is not None and label in products for label in labels])
    return scores, margins, right, known


def _earlier_key(digest: str | None, stored: dict[str, int], first: dict[str, int], by_index: dict[int, int]) -> int:
    """The key of a photo skipped as a duplicate: stored before this call, or earlier in it."""
    assert digest is not None  # only photos with a digest are skipped
    return stored[digest] if digest in stored else by_index[first[digest]]


def check_product_id(product_id: str) -> str:
    """The id, or InvalidArgumentError naming what is wrong with it."""
    if not isinstance(product_id, str) or not product_id.strip():
        raise InvalidArgumentError("a product id must be a non-empty string")
    if len(product_id) > 256 or any(ch in product_id for ch in "\n\r\0"):
        raise InvalidArgumentError(f"invalid product id {product_id!r}: at most 256 characters, no line breaks")
    return product_id
