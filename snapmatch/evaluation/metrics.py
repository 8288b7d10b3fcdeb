"""Image-level retrieval metrics by exact cosine (the reference the approximate index is judged by)."""

from __future__ import annotations

import numpy as np


def ranking(queries: np.ndarray, gallery: np.ndarray, *, depth: int, chunk: int = 512) -> np.ndarray:
    """Gallery indices of each query's `depth` nearest neighbours by cosine, nearest first."""
    depth = min(depth, len(gallery))
    rows = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ gallery.T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        top_scores = np.take_along_axis(scores, top, axis=1)
        # Stable order on equal scores: the lower gallery index first.
        rows.append(np.take_along_axis(top, np.lexsort((top, -top_scores), axis=1), axis=1))
    return np.concatenate(rows)


def recall_at(order: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray, k: int) -> float:
    hits = gallery_labels[order[:, :k]] == query_labels[:, None]
    return float(np.mean(hits.any(axis=1)))


def map_at_r(order: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray) -> float:
    """MAP@R (Musgrave et al., "A Metric Learning Reality Check"): R = gallery images of the query's label.

    `order` must rank at least R images per query; queries whose label has no gallery image are skipped.
    """
    scores = average_precision_at_r(order, gallery_labels, query_labels)
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


def deepest_r(gallery_labels: np.ndarray) -> int:
    """The largest R any query can have: how deep `ranking` must go for MAP@R."""
    _, counts = np.unique(gallery_labels, return_counts=True)
    return int(counts.max())


def average_precision_at_r(order: np.ndarray, gallery_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """Each query's AP@R (the terms MAP@R averages); NaN where the gallery holds nothing of its label."""
    out = np.full(len(query_labels), np.nan)
    for i, (row, label) in enumerate(zip(order, query_labels)):
        r = int(np.sum(gallery_labels == label))
        if r:
            relevant = gallery_labels[row[:r]] == label
            out[i] = float(np.sum(np.cumsum(relevant) / np.arange(1, r + 1) * relevant) / r)
    return out
