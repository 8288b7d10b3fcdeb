"""The on-disk catalog: a memory-mapped usearch base, an exact in-memory delta, SQLite as the log.

`Catalog` stores and searches vectors by product; it knows nothing of images
or models (that is `ProductSearch`). Layout and crash-safety are described in
DESIGN.md ("On-disk catalog"): SQLite commits make every change durable, the
base file is immutable and replaced only through the manifest, so a crash at
any step leaves a catalog that answers as before or as after.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from snapmatch.sdk._usearch import Index

from snapmatch.sdk import base_index, compaction, store
from snapmatch.sdk.delta import Delta, DeltaSnapshot
from snapmatch.sdk.errors import (
    CatalogClosedError,
    CatalogCorruptError,
    CatalogExistsError,
    EmbeddingError,
    ProductExistsError,
    ProductNotFoundError,
    ReadOnlyError,
)
from snapmatch.sdk.lock import WriterLock
from snapmatch.sdk.manifest import Manifest, manifest_path, read_manifest, write_manifest
from snapmatch.sdk.types import Match, Product

LOCK_FILE = "writer.lock"
VECTOR_DTYPES = ("f32", "f16", "i8")
NORM_TOLERANCE = 1e-2
_BASE_FILE = re.compile(r"^base-\d{6}\.usearch$")


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
        self._read: object = None
        self._write: object = None
        self._closed = False

    # --- opening -------------------------------------------------------------------

    @classmethod
    @_database_errors
    def create(
        cls,
        folder: str | os.PathLike,
        *,
        model_id: str,
        dim: int,
        vector_dtype: str = "f32",
        threshold: float = 0.5,
        threshold_source: str = "default",
        compact_at: int = 4096,
        expansion_search: int = 64,
        connectivity: int = base_index.CONNECTIVITY,
        expansion_add: int = base_index.EXPANSION_ADD,
        threads: int = 0,
        exact_below: int = 20_000,
    ) -> "Catalog":
        """Create an empty catalog in `folder` (new or without a manifest) and open it for writing.

        connectivity, expansion_add and expansion_search tune the HNSW graph of
        catalogs larger than exact_below (see docs/BENCHMARKS.md, scale).
        """
        folder = Path(folder)
        if vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"vector_dtype must be one of {VECTOR_DTYPES}, not {vector_dtype!r}")
        if manifest_path(folder).exists():
            raise CatalogExistsError(f"a catalog already exists at {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        conn = store.connect(folder, readonly=False, create=True)
        conn.close()
        # The manifest is written last: a folder without one is not a catalog yet.
        write_manifest(
            folder,
            Manifest(
                model_id=model_id,
                dim=int(dim),
                vector_dtype=vector_dtype,
                threshold=float(threshold),
                threshold_source=threshold_source,
                compact_at=int(compact_at),
                expansion_search=int(expansion_search),
                connectivity=int(connectivity),
                expansion_add=int(expansion_add),
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
    ) -> "Catalog":
        """Open a catalog; the writer (readonly=False) takes the OS lock and finishes an interrupted compaction.

        rebuild_base rebuilds the base index from the database instead of opening it (repair).
        """
        folder = Path(folder)
        manifest = read_manifest(folder)
        catalog = cls(folder, readonly=readonly, threads=threads, exact_below=exact_below)
        try:
            if not readonly:
                catalog._lock.acquire()
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
        for entry in self.folder.iterdir():
            name = entry.name
            stray_tmp = name.startswith(".") and name.endswith(".tmp")
            if stray_tmp or (sound and _BASE_FILE.match(name) and name != current):
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
                        expansion_search=manifest.expansion_search,
                    )
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
        delta.append(keys, vectors)
        self._delta = delta
        self._max_seen = int(keys[-1]) if len(keys) else (manifest.base.max_key if manifest.base else 0)
        self._state = _State(manifest, base, delta.snapshot, store.tombstone_count(self._read, manifest.generation))

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
                    self._state.base.expansion_search = manifest.expansion_search
                self._state = _State(manifest, self._state.base, self._state.delta, self._state.tombstones)
            self._seen_version = version
            keys, vectors = store.rows_after(self._read, self._max_seen, self._state.manifest.dim)
            if len(keys):
                self._delta.append(keys, vectors)
                self._max_seen = int(keys[-1])
            state = self._state
            self._state = _State(
                state.manifest, state.base, self._delta.snapshot,
                store.tombstone_count(self._read, state.manifest.generation),
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
        }

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
        self._check_writable()
        product_id = _check_product_id(product_id)
        vectors = self._check_vectors(vectors)
        if len(vectors) == 0:
            raise ValueError("no vectors to add: give at least one image")
        sources = [str(s) for s in sources] if sources is not None else [""] * len(vectors)
        if len(sources) != len(vectors):
            raise ValueError("sources and vectors differ in length")
        with self._write_mutex:
            with store.Transaction(self._write) as conn:
                exists = store.product_exists(conn, product_id)
                if new_product and exists:
                    raise ProductExistsError(
                        f"product {product_id!r} is already in the catalog: use add_images to add photos to it"
                    )
                if not new_product and not exists:
                    raise ProductNotFoundError(f"no product {product_id!r} in the catalog")
                if not exists:
                    store.insert_product(conn, product_id, name or "")
                keys = store.insert_images(conn, product_id, vectors, sources)
            self._refresh()
            if len(self._state.delta) >= self._state.manifest.compact_at:
                self.compact()
        return keys

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
        return removed

    @_database_errors
    def update_manifest(self, **changes) -> None:
        """Durably change manifest settings (threshold, expansion_search, compact_at, ...)."""
        self._check_writable()
        with self._write_mutex:
            manifest = read_manifest(self.folder).replace(**changes)
            write_manifest(self.folder, manifest)
            self._touch_database()
            self._refresh()

    def _touch_database(self) -> None:
        # Readers notice changes through SQLite's data_version: make every
        # manifest change also a database commit.
        with store.Transaction(self._write) as conn:
            conn.execute(
                "INSERT INTO meta VALUES ('manifest_serial', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )

    @_database_errors
    def compact(self, *, rebuild: bool = False) -> bool:
        """Merge the delta and tombstones into a new base; returns False when there was nothing to do.

        Crash-safe: the new base is fsynced under a new name before the manifest
        (replaced atomically) points at it; retired rows and files are cleaned after.
        """
        self._check_writable()
        with self._write_mutex:
            manifest = read_manifest(self.folder)
            built = compaction.build_next_base(self.folder, manifest, self._write, rebuild=rebuild)
            if built is None:
                return False
            info, generation = built
            old = manifest.base
            # With no live vectors left there is no base (info is None).
            write_manifest(self.folder, manifest.replace(base=info, generation=generation))
            with store.Transaction(self._write) as conn:
                store.retire_tombstones(conn, below_generation=generation + 1)
                conn.execute(
                    "INSERT INTO meta VALUES ('generation', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(generation),),
                )
            if old is not None and (info is None or old.file != info.file):
                (self.folder / old.file).unlink(missing_ok=True)  # readers keep their mapping
            with self._read_mutex:
                self._load_state()
        return True

    # --- reading -------------------------------------------------------------------

    @_database_errors
    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Per query vector, up to k products, best first (each with its best image)."""
        self._check_open()
        if k < 1:
            raise ValueError("k must be at least 1")
        queries = self._check_vectors(vectors)
        self._refresh()
        state = self._state
        base_count = len(state.base) if state.base is not None else 0
        fetch = max(4 * k, 16) + state.tombstones
        results: list[list[Match] | None] = [None] * len(queries)
        pending = list(range(len(queries)))
        while pending:
            base_keys, base_scores = self._search_base(state, queries[pending], fetch, base_count)
            delta_keys, delta_scores = state.delta.search(queries[pending], fetch)
            # Below the last score of a list that was cut off, an unseen vector
            # could outrank what was seen: only what is above every such cutoff is final.
            cutoff = np.full(len(pending), -np.inf, dtype=np.float32)
            for part, total in ((base_scores, base_count), (delta_scores, len(state.delta))):
                if part.shape[1] and total > part.shape[1]:
                    cutoff = np.maximum(cutoff, part[:, -1])
            keys = np.concatenate([base_keys, delta_keys], axis=1)
            scores = np.concatenate([base_scores, delta_scores], axis=1)
            # An i8/f16 base ranks its candidates approximately: rescore them on the stored float32 vectors,
            # so scores (and the threshold that judges them) do not depend on the base's scalar type.
            rescore = state.manifest.vector_dtype != "f32" and base_keys.shape[1] > 0
            with self._read_mutex:
                rows = store.lookup(self._read, keys[keys >= 0], vectors=rescore)
            if rescore:
                scores[:, :base_keys.shape[1]] = _exact_scores(base_keys, base_scores, rows, queries[pending])
            exhausted = fetch >= base_count and fetch >= len(state.delta)
            still = []
            for row, query in enumerate(pending):
                final = np.where(scores[row] >= cutoff[row], scores[row], -np.inf)
                matches = _group_by_product(keys[row], final, rows, k)
                if len(matches) >= k or exhausted:
                    results[query] = matches
                else:
                    still.append(query)
            pending = still
            fetch *= 4
        return results  # type: ignore[return-value]

    def _search_base(self, state: _State, queries: np.ndarray, fetch: int, base_count: int):
        count = min(fetch, base_count)
        if count == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.int64), empty.astype(np.float32)
        found = state.base.search(queries, count, threads=self.threads, exact=base_count <= self.exact_below)
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)
        scores = 1.0 - np.asarray(found.distances, dtype=np.float32).reshape(len(queries), -1)
        counts = np.asarray(getattr(found, "counts", [keys.shape[1]])).reshape(-1)
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        keys = np.where(valid, keys, -1)
        scores = np.where(valid & np.isfinite(scores), scores, -np.inf)
        return keys, scores

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
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape [N, {self.dim}], got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise EmbeddingError("vectors contain NaN or infinite values")
        norms = np.linalg.norm(vectors, axis=1)
        if len(norms) and float(np.max(np.abs(norms - 1.0))) > NORM_TOLERANCE:
            raise EmbeddingError("vectors must be L2-normalised (a zero or unnormalised vector was given)")
        return np.ascontiguousarray(vectors)

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
            for conn in (self._read, self._write):
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


def _exact_scores(keys: np.ndarray, approximate: np.ndarray, rows: dict, queries: np.ndarray) -> np.ndarray:
    """Cosine of each query with its candidates' stored vectors (unit length); -inf where a key is gone."""
    exact = np.full(approximate.shape, -np.inf, dtype=np.float32)
    for r, c in zip(*np.nonzero(keys >= 0)):
        row = rows.get(int(keys[r, c]))
        if row is not None and np.isfinite(approximate[r, c]):
            exact[r, c] = float(np.frombuffer(row.vector, dtype=np.float32) @ queries[r])
    return exact


def _group_by_product(keys: np.ndarray, scores: np.ndarray, rows: dict, k: int) -> list[Match]:
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


def _check_product_id(product_id: str) -> str:
    if not isinstance(product_id, str) or not product_id.strip():
        raise ValueError("a product id must be a non-empty string")
    if len(product_id) > 256 or any(ch in product_id for ch in "\n\r\0"):
        raise ValueError(f"invalid product id {product_id!r}: at most 256 characters, no line breaks")
    return product_id
