"""A reduced base: the graph is built on each vector's first principal coordinates, search rescored in full.

A large catalog's graph search is bound by memory, not arithmetic: at 1M
vectors each distance fetches a node's vector from DRAM (576 bytes as i8),
and a search computes thousands of them. The graph only has to find the
candidates; `search_products` ranks them again on the stored float32
vectors. So the graph can hold fewer bytes per vector: each (adapted)
vector rotated onto the principal directions of the catalog's own vectors
and cut to the first `dim` of them, where most of its energy lies. Rotation
keeps cosines; the cut drops the directions in which the catalog's vectors
hardly differ. The rescoring restores exact scores.

The directions are fitted at each full build of the base from up to
FIT_ROWS of its vectors (uncentred: the base's metric is cosine) and kept
as a small .npy file named by the base generation that fitted it, with its
SHA-256 in the base's manifest entry; a patched base keeps its file.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from snapmatch.sdk.catalog.row_products import row_products
from snapmatch.sdk.errors import CatalogCorruptError
from snapmatch.sdk.fsutil import fsync_dir

FIT_ROWS = 200_000  # vectors the directions are fitted on: a 576 x 576 second moment is stable long before
# How many candidates a reduced base hands to the exact rescoring at least: its own ranking is only roughly
# right (measured on 1M vectors shaped like real embeddings, docs/BENCHMARKS.md).
MIN_CANDIDATES = 40


def projection_filename(generation: int) -> str:
    return f"proj-{generation:06d}.npy"


def fit(rows: Iterable[np.ndarray], dim: int) -> np.ndarray:
    """The `dim` leading principal directions [dim, d] (orthonormal rows) of the vectors in `rows` (chunks)."""
    moment: np.ndarray | None = None
    seen = 0
    for vectors in rows:
        vectors = np.asarray(vectors, dtype=np.float64)[: FIT_ROWS - seen]
        part = vectors.T @ vectors
        moment = part if moment is None else moment + part
        seen += len(vectors)
        if seen >= FIT_ROWS:
            break
    if moment is None:
        raise ValueError("fitting a projection needs at least one vector")
    values, vectors = np.linalg.eigh(moment)
    order = np.argsort(values)[::-1][:dim]
    return np.ascontiguousarray(vectors[:, order].T, dtype=np.float32)


def project(directions: np.ndarray | None, vectors: np.ndarray) -> np.ndarray:
    """Vectors [n, d] -> their coordinates [n, dim] on the directions (unchanged when there are none)."""
    if directions is None:
        return vectors
    return row_products(np.asarray(vectors, dtype=np.float32), directions)


def save(folder: Path, directions: np.ndarray, *, generation: int) -> tuple[str, str]:
    """Write the directions as a new file, fsynced before this returns; (file name, SHA-256)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(directions, dtype=np.float32), allow_pickle=False)
    data = buffer.getvalue()
    name = projection_filename(generation)
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / name)
    fsync_dir(folder)
    return name, hashlib.sha256(data).hexdigest()


def load(folder: Path, name: str, sha256: str, *, dim: int, full_dim: int) -> np.ndarray:
    """Read and check the directions a base names: checksum, shape, finite values."""
    path = folder / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CatalogCorruptError(f"projection {path} is missing; run `snapmatch catalog verify --repair` to rebuild "
                                  "the base") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CatalogCorruptError(f"projection {path} checksum differs from the manifest: the file is damaged; "
                                  "run `snapmatch catalog verify --repair` to rebuild the base")
    try:
        directions = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CatalogCorruptError(f"projection {path} is unreadable ({exc})") from None
    if directions.shape != (dim, full_dim) or directions.dtype != np.float32 or not np.isfinite(directions).all():
        raise CatalogCorruptError(f"projection {path} does not hold {dim} finite {full_dim}-d directions")
    return directions
