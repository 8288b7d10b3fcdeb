"""A statistical profile of a model's real embeddings, to synthesise catalogs that look like them.

Uniform random unit vectors, or tight isolated clusters, make approximate
search look easy or hopeless for reasons that do not hold on a device. Real
embeddings (MobileNetV3, pooled after a hard-swish) share a strong common
direction (|mean| ~0.46), their variance is concentrated in a few hundred
directions, and a product's photos are spread around it by about a third of
the total variance. `fit` captures exactly that (mean, principal directions,
between/within-product split); `products` and `images` sample from it; and
`neighbour_stats` is how the match is checked (nearest same-product and
nearest other-product similarity, all-pairs similarity).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snapmatch.sdk.errors import InvalidArgumentError

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
COMPONENTS = 128  # principal directions kept; the rest of the variance is spread evenly


@dataclass(frozen=True)
class EmbeddingProfile:
    mean: np.ndarray  # [dim]
    components: np.ndarray  # [k, dim], orthonormal rows
    variances: np.ndarray  # [k], variance along each component
    residual_variance: float  # per dimension, outside the components
    between_share: float  # share of the variance between products (the rest is within a product)
    source: str  # what it was fitted on

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def save(self, path: str | os.PathLike) -> None:
        np.savez_compressed(
            path, mean=self.mean.astype(np.float32), components=self.components.astype(np.float16),
            variances=self.variances.astype(np.float32), residual_variance=self.residual_variance,
            between_share=self.between_share, source=self.source,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmbeddingProfile":
        with np.load(path) as data:
            return cls(
                mean=data["mean"].astype(np.float64), components=data["components"].astype(np.float64),
                variances=data["variances"].astype(np.float64), residual_variance=float(data["residual_variance"]),
                between_share=float(data["between_share"]), source=str(data["source"]),
            )

    def products(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Product centres [count, dim] (not normalised)."""
        return self.mean + self._noise(count, self.between_share, rng)

    def images(self, centres: np.ndarray, rng: np.random.Generator, *, spread: float = 1.0) -> np.ndarray:
        """One unit image vector per centre; spread scales the within-product variance."""
        return _unit(centres + self._noise(len(centres), (1.0 - self.between_share) * spread**2, rng))

    def _noise(self, count: int, share: float, rng: np.random.Generator) -> np.ndarray:
        k = len(self.variances)
        along = (rng.standard_normal((count, k)) * np.sqrt(share * self.variances)) @ self.components
        # Isotropic noise also has a part along the components; it is small (residual << component variances).
        return along + np.sqrt(share * self.residual_variance) * rng.standard_normal((count, self.dim))


def fit(vectors: np.ndarray, labels: np.ndarray, *, source: str, components: int = COMPONENTS) -> EmbeddingProfile:
    """Fit a profile to real embeddings [n, dim] of photos labelled by product."""
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise InvalidArgumentError("fitting a profile needs photos of at least two products")
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / (len(vectors) - 1))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = np.clip(eigenvalues[order], 0, None), eigenvectors[:, order]
    k = min(components, vectors.shape[1] - 1)
    residual = float(eigenvalues[k:].sum() / (vectors.shape[1] - k))
    within = np.mean([np.sum((vectors[labels == c] - vectors[labels == c].mean(0)) ** 2, axis=1).mean()
                      for c in np.unique(labels)])
    total = float(eigenvalues.sum())
    return EmbeddingProfile(mean=mean, components=eigenvectors[:, :k].T, variances=eigenvalues[:k],
                            residual_variance=residual, between_share=float(np.clip(1 - within / total, 0, 1)),
                            source=source)


def load_default() -> EmbeddingProfile:
    """The profile shipped for the default model (fitted on its Grocery train+val embeddings)."""
    return EmbeddingProfile.load(PROFILES_DIR / "default.npz")


def neighbour_stats(vectors: np.ndarray, labels: np.ndarray, *, limit: int = 4000, seed: int = 0) -> dict:
    """Median similarity of each vector's nearest same-product and other-product neighbour, and of all pairs."""
    vectors, labels = np.asarray(vectors, dtype=np.float32), np.asarray(labels)
    if len(vectors) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(vectors), limit, replace=False))
        vectors, labels = vectors[keep], labels[keep]
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -2.0)
    same = labels[:, None] == labels[None, :]
    nearest_same = np.where(same, similarity, -2.0).max(axis=1)
    nearest_other = np.where(~same, similarity, -2.0).max(axis=1)
    pairs = similarity[np.triu_indices(len(vectors), 1)]
    has_same = nearest_same > -2.0
    return {
        "vectors": int(len(vectors)),
        "nearest_same_median": float(np.median(nearest_same[has_same])) if has_same.any() else None,
        "nearest_other_median": float(np.median(nearest_other)),
        "nearest_is_same_share": float(np.mean(nearest_same[has_same] > nearest_other[has_same])) if has_same.any() else None,
        "pairs_median": float(np.median(pairs)),
        "pairs_p99": float(np.percentile(pairs, 99)),
        "mean_norm": float(np.linalg.norm(vectors.mean(axis=0))),
    }


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
