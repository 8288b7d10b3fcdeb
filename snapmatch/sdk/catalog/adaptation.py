"""The catalog's own metric: a whitening fitted on the within-product scatter of its photos.

A shop's products are never the ones the network was trained on. What tells
*these* products apart is learned, with no retraining, from the catalog's own
photos: every image vector minus its product's mean gives the within-product
scatter S (lighting, angle, crop: what should not matter), shrunk toward a
scaled identity so a few photos give a stable estimate; W = S^(-1/2), and
catalog and query vectors alike become normalise((v - mean) @ W). Directions
in which photos of one product vary are shrunk; the rest are kept.

Products with one photo add nothing to the scatter (but still to the mean). A
catalog with too few multi-photo products gets no transform at all.
The fitted transform is a small .npz file (mean, W), named per base generation,
checksummed in the manifest, and loaded without pickle.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from snapmatch.sdk.catalog.manifest import AdaptationInfo
from snapmatch.sdk.catalog.row_products import row_products
from snapmatch.sdk.errors import CatalogCorruptError
from snapmatch.sdk.fsutil import fsync_dir

SHRINKAGE = 0.3  # weight of the scaled identity: measured on Grocery, 0.1-0.5 all within a point
MIN_PRODUCTS = 4  # products with at least two photos needed before a fit is trusted
MIN_RESIDUALS = 16  # photos beyond each product's first, summed over products


def adaptation_filename(generation: int) -> str:
    return f"adapt-{generation:06d}.npz"


@dataclass(frozen=True)
class Adaptation:
    """A fitted transform: x -> normalise((x - mean) @ matrix)."""

    mean: np.ndarray  # float32 [d]
    matrix: np.ndarray  # float32 [d, d], symmetric
    products: int  # products with >= 2 photos the scatter rests on
    images: int  # images the fit used

    @functools.cached_property
    def _columns(self) -> np.ndarray:
        return np.ascontiguousarray(self.matrix.T)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """The adapted, L2-normalised vectors ([N, d] float32)."""
        centred = np.asarray(vectors, dtype=np.float32) - self.mean
        out = row_products(centred, self._columns)  # centred @ matrix, on one thread for a query or a few
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        # A vector equal to the mean has no direction: leave it at zero (it matches nothing).
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


class ScatterAccumulator:
    """Streams (product, vector) rows into what a fit needs, so a large catalog is never loaded whole."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.outer = np.zeros((dim, dim), dtype=np.float64)
        self.total = np.zeros(dim, dtype=np.float64)
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def add(self, products: Iterable[str], vectors: np.ndarray) -> None:
        products = list(products)
        vectors = np.asarray(vectors, dtype=np.float64)
        self.outer += vectors.T @ vectors
        self.total += vectors.sum(axis=0)
        for product, vector in zip(products, vectors):
            if product in self.sums:
                self.sums[product] += vector
                self.counts[product] += 1
            else:
                self.sums[product] = vector.copy()
                self.counts[product] = 1

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    @property
    def multi_photo_products(self) -> int:
        return sum(1 for count in self.counts.values() if count >= 2)

    @property
    def residuals(self) -> int:
        return sum(count - 1 for count in self.counts.values())

    def fittable(self) -> bool:
        return self.multi_photo_products >= MIN_PRODUCTS and self.residuals >= MIN_RESIDUALS

    def fit(self, shrinkage: float = SHRINKAGE) -> Adaptation | None:
        """The shrunk within-product whitening, or None when the catalog is too small to estimate it."""
        if not self.fittable():
            return None
        # Sum over products of (x - mu_p)(x - mu_p)^T = sum x x^T - sum_p n_p mu_p mu_p^T.
        between = np.zeros_like(self.outer)
        for product, total in self.sums.items():
            between += np.outer(total, total) / self.counts[product]
        scatter = (self.outer - between) / self.residuals
        scatter = (scatter + scatter.T) / 2
        d = self.dim
        scatter = (1 - shrinkage) * scatter + shrinkage * np.trace(scatter) / d * np.eye(d)
        values, vectors = np.linalg.eigh(scatter)
        values = np.maximum(values, 1e-12 * max(float(values.max()), 1e-12))
        matrix = (vectors * values ** -0.5) @ vectors.T
        matrix /= np.sqrt(np.mean(np.diag(matrix)))  # scale is irrelevant after normalising; keep numbers tame
        mean = self.total / max(self.images, 1)
        return Adaptation(mean.astype(np.float32), matrix.astype(np.float32), self.multi_photo_products, self.images)


def save(folder: Path, adaptation: Adaptation, *, generation: int, changes: int, shrinkage: float = SHRINKAGE) -> AdaptationInfo:
    """Write the transform as a new file (fsynced before this returns); the manifest makes it current."""
    buffer = io.BytesIO()
    np.savez(buffer, mean=adaptation.mean, matrix=adaptation.matrix)
    data = buffer.getvalue()
    name = adaptation_filename(generation)
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / name)
    fsync_dir(folder)
    return AdaptationInfo(
        file=name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        products=adaptation.products,
        images=adaptation.images,
        shrinkage=shrinkage,
        changes=changes,
    )


def load(folder: Path, info: AdaptationInfo, *, dim: int) -> Adaptation:
    """Read and check a transform the manifest names: checksum, shapes, finite values."""
    path = folder / info.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CatalogCorruptError(
            f"adaptation {path} is missing; run `snapmatch catalog verify --repair` to refit it"
        ) from None
    if len(data) != info.size or hashlib.sha256(data).hexdigest() != info.sha256:
        raise CatalogCorruptError(
            f"adaptation {path} checksum differs from the manifest: the file is damaged; "
            "run `snapmatch catalog verify --repair` to refit it"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            mean, matrix = arrays["mean"], arrays["matrix"]
    except (ValueError, KeyError, OSError) as exc:
        raise CatalogCorruptError(f"adaptation {path} is unreadable ({exc})") from None
    if mean.shape != (dim,) or matrix.shape != (dim, dim) or not (np.isfinite(mean).all() and np.isfinite(matrix).all()):
        raise CatalogCorruptError(f"adaptation {path} does not hold a finite {dim}-d transform")
    return Adaptation(mean.astype(np.float32), matrix.astype(np.float32), info.products, info.images)
