"""The immutable base snapshot: a usearch file written once, then only memory-mapped.

usearch pitfalls this module exists to contain (measured with usearch 2.26):
`Index.save()` truncates in place and never fsyncs, so a base is always a new
file, fsynced, then renamed; a viewed index is never mutated (`remove` on a
view can segfault); `Index.restore()` returns None for a missing file; the
file's header is the only thing usearch checks, so size and header are checked
here at open and a SHA-256 by `verify`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from snapmatch.sdk.catalog import store
from snapmatch.sdk.catalog._usearch import Index, usearch
from snapmatch.sdk.catalog.manifest import BaseInfo
from snapmatch.sdk.errors import CatalogCorruptError, CatalogError
from snapmatch.sdk.fsutil import atomic_write_bytes, file_sha256, fsync_dir, fsync_file

# Graph degree of new catalogs. Measured on 100k vectors shaped like real embeddings (docs/BENCHMARKS.md):
# 32 reaches a recall that 16 needs twice the search effort for, for ~10% more file per f32 vector.
CONNECTIVITY = 32
EXPANSION_ADD = 128
# usearch 2.26's multi-threaded add can leave a few nodes that no search reaches
# (unum-cloud/usearch#735; 10 of 100,000 measured here). A graph built on several
# threads is therefore checked: each node is searched for with its own vector, at
# a cheap effort, and one that is not found is removed and added again on one
# thread, where insertion links it soundly (repair_unreachable). A few changes
# patched into a base are added on one thread.
PATCH_THREADS = 1
REACH_EXPANSION = 16  # the check's effort: a reachable node it misses is re-added, which costs nothing but time
REACH_TOP = 4  # the check looks for a node among this many results
REPAIR_ROUNDS = 3
_SCALAR_NAMES = {"f32": "F32", "f16": "F16", "i8": "I8", "bf16": "BF16"}


def base_filename(generation: int) -> str:
    return f"base-{generation:06d}.usearch"


def new_index(dim: int, dtype: str, *, connectivity: int = CONNECTIVITY, expansion_add: int = EXPANSION_ADD) -> Index:
    return Index(ndim=dim, metric="cos", dtype=dtype, connectivity=connectivity, expansion_add=expansion_add)


def repair_unreachable(index: Index, rows: Iterable[tuple[np.ndarray, np.ndarray]], *, threads: int,
                       on_checked: Callable[[int], None] | None = None) -> int:
    """Re-insert on one thread every node of `rows` (keys, vectors as added) that a search for its own vector
    does not find; returns how many were re-inserted (usearch#735: see PATCH_THREADS).

    on_checked(n): called with the count of rows searched for so far, after each chunk of `rows`.
    """
    saved = index.expansion_search
    index.expansion_search = REACH_EXPANSION  # type: ignore[misc]  # a setter at run time
    repaired = checked = 0
    try:
        suspects = []
        for keys, vectors in rows:
            suspects.append(_unfound(index, keys, vectors, threads))
            checked += len(keys)
            if on_checked is not None:
                on_checked(checked)
        for _ in range(REPAIR_ROUNDS):
            keys = np.concatenate([keys for keys, _ in suspects]) if suspects else np.zeros(0, np.uint64)
            if not len(keys):
                break
            vectors = np.concatenate([vectors for _, vectors in suspects])
            index.remove(keys)
            index.add(keys, vectors, threads=1)
            repaired += len(keys)
            suspects = [_unfound(index, keys, vectors, threads)]
    finally:
        index.expansion_search = saved  # type: ignore[misc]
    return repaired


def _unfound(index: Index, keys: np.ndarray, vectors: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """The keys (and their vectors) that a search for their own vector does not return among its first few
    (a few, not one: a photo added twice has a twin at the same distance)."""
    keys = np.asarray(keys, dtype=np.uint64)
    found = np.asarray(index.search(vectors, REACH_TOP, threads=threads).keys).reshape(len(keys), -1)
    missed = ~(found == keys[:, None]).any(axis=1)
    return keys[missed], np.asarray(vectors)[missed]


def intact(folder: Path, info: BaseInfo) -> bool:
    """Whether the base file is byte for byte the one the manifest describes (its SHA-256)."""
    try:
        return file_sha256(folder / info.file) == info.sha256
    except FileNotFoundError:
        return False
    except OSError as exc:  # it could not be read, which says nothing about its bytes
        raise store.io_error(folder, exc) from None


def load_for_update(folder: Path, info: BaseInfo) -> Index:
    """A private in-memory copy of a base, which (unlike a view) may be changed."""
    index = Index.restore(str(folder / info.file), view=False)
    if index is None:
        raise CatalogCorruptError(f"base index {folder / info.file} is missing")
    return index


def write_base(folder: Path, index: Index, *, generation: int, max_key: int) -> BaseInfo:
    """Write `index` as a new immutable base file, durable before this returns."""
    name = base_filename(generation)
    final = folder / name
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        index.save(str(tmp))
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(folder)
    except (OSError, RuntimeError) as exc:  # usearch reports a full disk as RuntimeError
        tmp.unlink(missing_ok=True)  # a half-written base would fill what is left of the disk
        raise CatalogError(f"could not write the new base {final} ({exc}); the catalog is unchanged (is the disk "
                           "full?)") from None
    info = BaseInfo(
        generation=generation,
        file=name,
        count=len(index),
        max_key=max_key,
        size=final.stat().st_size,
        sha256=file_sha256(final),
        usearch_version=usearch.__version__,
        connectivity=index.connectivity,
        expansion_add=index.expansion_add,
    )
    _remember_intact(folder, info)  # just hashed: the next open need not hash it again
    return info


# A base's graph is traversed by search: a flipped bit in it can crash the process (SIGSEGV) before
# verify runs. So a base is hashed before it is searched, once: the file's identity (size, mtime,
# inode) at that check is remembered beside it, and a later open of an unchanged file trusts it.
# Anything that rewrites the file changes its mtime, and is hashed again. (Decay that changes no
# metadata is left to `catalog verify`.)
INTACT_SUFFIX = ".intact"


def _stamp(path: Path, sha256: str) -> dict:
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ino": info.st_ino, "sha256": sha256}


def _remember_intact(folder: Path, info: BaseInfo) -> None:
    try:
        atomic_write_bytes(folder / (info.file + INTACT_SUFFIX), json.dumps(_stamp(folder / info.file, info.sha256)).encode())
    except OSError:
        pass  # only a shortcut: the next open hashes the file instead


def check_intact(folder: Path, info: BaseInfo, *, remember: bool) -> None:
    """CatalogCorruptError unless the base file hashes to the manifest's SHA-256 (or did, unchanged since)."""
    path = folder / info.file
    try:
        remembered = json.loads((folder / (info.file + INTACT_SUFFIX)).read_text())
        if remembered == _stamp(path, info.sha256):
            return
    except (OSError, ValueError):
        pass
    if not intact(folder, info):
        raise CatalogCorruptError(f"base index {path} is damaged: its SHA-256 is not the manifest's (catalog verify "
                                  "--repair rebuilds it from the database)")
    if remember:
        _remember_intact(folder, info)


def check_base(folder: Path, info: BaseInfo, *, dim: int, dtype: str) -> None:
    """Cheap checks (size, header) that a base file is the one the manifest describes."""
    path = folder / info.file
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CatalogCorruptError(f"base index {path} is missing; run `snapmatch catalog verify --repair`") from None
    if size != info.size:
        raise CatalogCorruptError(
            f"base index {path} is {size} bytes, the manifest says {info.size}: the file is truncated or "
            "was replaced; run `snapmatch catalog verify --repair` to rebuild it from the catalog database"
        )
    try:
        meta = Index.metadata(str(path))
    except Exception as exc:  # usearch raises plain RuntimeError/ValueError for bad headers
        raise CatalogCorruptError(f"base index {path} has an unreadable header ({exc})") from None
    if meta is None:
        raise CatalogCorruptError(f"base index {path} has an unreadable header")
    expected_scalar = _SCALAR_NAMES.get(dtype, dtype.upper())
    if getattr(meta.get("kind_metric"), "name", "") != "Cos" or getattr(meta.get("kind_key"), "name", "") != "U64":
        raise CatalogCorruptError(
            f"base index {path} header declares metric {meta.get('kind_metric')} and keys {meta.get('kind_key')}, "
            "not cosine with 64-bit keys: the header is damaged; run `snapmatch catalog verify --repair`"
        )
    if (
        meta.get("dimensions") != dim
        or meta.get("count_present") != info.count
        or getattr(meta.get("kind_scalar"), "name", "") != expected_scalar
    ):
        raise CatalogCorruptError(
            f"base index {path} header (dim {meta.get('dimensions')}, {meta.get('count_present')} vectors, "
            f"{getattr(meta.get('kind_scalar'), 'name', '?')}) disagrees with the manifest "
            f"(dim {dim}, {info.count} vectors, {expected_scalar}); run `snapmatch catalog verify --repair`"
        )


def view_base(folder: Path, info: BaseInfo, *, dim: int, dtype: str, expansion_search: int,
              remember: bool = False) -> Index:
    """Memory-map a base after checking it (its header, and its hash unless remembered: see check_intact)."""
    check_base(folder, info, dim=dim, dtype=dtype)
    check_intact(folder, info, remember=remember)
    path = folder / info.file
    try:
        # The catalog never looks keys up in the base (only searches it):
        # skipping usearch's key table makes open ~2.7x faster at 1M vectors.
        index = Index.restore(str(path), view=True, enable_key_lookups=False)
    except Exception as exc:
        raise CatalogCorruptError(f"base index {path} cannot be opened ({exc})") from None
    if index is None:
        raise CatalogCorruptError(f"base index {path} is missing")
    index.expansion_search = expansion_search  # type: ignore[misc]  # not stored in the file
    return index


def same_format(info: BaseInfo) -> bool:
    """True when the installed usearch reads this base safely (same major.minor as its writer)."""
    return info.usearch_version.split(".")[:2] == usearch.__version__.split(".")[:2]

