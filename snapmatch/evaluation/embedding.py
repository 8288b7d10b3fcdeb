"""Runtime embeddings of a dataset's photos: decoded once, skipping (and naming) the unreadable ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from snapmatch.sdk.errors import ImageError
from snapmatch.sdk.model.embedder import Embedder
from snapmatch.training.data import Photo


@dataclass
class Embedded:
    """Unit vectors of photos, with each photo's product id and whether it is a catalog-style image."""

    vectors: np.ndarray
    labels: np.ndarray  # product ids (str)
    catalog: np.ndarray  # bool

    def subset(self, mask: np.ndarray) -> "Embedded":
        return Embedded(self.vectors[mask], self.labels[mask], self.catalog[mask])

    def __add__(self, other: "Embedded") -> "Embedded":
        return Embedded(np.concatenate([self.vectors, other.vectors]), np.concatenate([self.labels, other.labels]),
                        np.concatenate([self.catalog, other.catalog]))

    def __len__(self) -> int:
        return len(self.labels)


def embed(embedder: Embedder, photos: Sequence[Photo], on_batch: Callable[[int], None] | None = None,
          skipped: list[tuple[str, str]] | None = None) -> Embedded:
    """Embed `photos` through the runtime; an unreadable photo is left out and, with `skipped`, named there."""
    vectors, kept = [], []
    for start in range(0, len(photos), embedder.batch_size):
        batch, inputs = photos[start:start + embedder.batch_size], []
        for photo, prepared in zip(batch, embedder.preprocess_many([photo.path for photo in batch])):
            if isinstance(prepared, ImageError):
                if skipped is not None:
                    skipped.append((str(photo.path), str(prepared)))
            else:
                inputs.append(prepared)
                kept.append(photo)
        if inputs:
            vectors.append(embedder.embed_batch(np.stack(inputs)))
        if on_batch:
            on_batch(len(batch))
    dim = embedder.spec.embedding_dim
    return Embedded(np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
                    np.array([photo.product for photo in kept], dtype=object),
                    np.array([photo.catalog for photo in kept], dtype=bool))
