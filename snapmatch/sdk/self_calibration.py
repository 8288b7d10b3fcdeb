"""identify()'s rule fitted on the catalog's own photos, for a catalog nobody has calibrated.

A threshold calibrated on raw cosines (the model card's) means nothing once
the catalog adapts its metric, and a new catalog has no labelled photos. Its
own photos stand in for them: each sampled photo is looked up against the
catalog without itself (a known product: right when its own product wins)
and against the catalog without its whole product (an unknown product: any
answer is wrong). On Grocery this reached precision 0.96-1.0 on held-out
photos for a 0.95 target: photos of one product from one shelf resemble
each other more than a camera's later frames do, so the threshold it gives
errs toward rejecting. `snapmatch catalog calibrate` with real labelled
photos replaces it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from snapmatch.sdk import store
from snapmatch.sdk.adaptation import Adaptation
from snapmatch.sdk.calibration import CalibrationReport, DecisionRule, fit_rule, report

TARGET_PRECISION = 0.95
MAX_GALLERY = 20_000  # images the lookups run against (a random subset of larger catalogs)
MAX_QUERIES = 1_000  # photos looked up, each once as known and once as unknown


@dataclass(frozen=True)
class Sample:
    products: np.ndarray  # int product index per image
    vectors: np.ndarray  # raw embeddings [n, d]


def sample(conn: sqlite3.Connection, dim: int, *, seed: int = 0) -> Sample:
    """The catalog's images (at most MAX_GALLERY of them, drawn at random)."""
    ids: list[str] = []
    chunks = []
    for _, products, vectors in store.iter_product_rows(conn, dim):
        ids.extend(products)
        chunks.append(vectors)
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
    _, index = np.unique(np.array(ids, dtype=object), return_inverse=True)
    if len(vectors) > MAX_GALLERY:
        keep = np.sort(np.random.default_rng(seed).choice(len(vectors), MAX_GALLERY, replace=False))
        vectors, index = vectors[keep], np.unique(index[keep], return_inverse=True)[1]
    return Sample(np.asarray(index, dtype=np.int64), vectors)


def fit(sample: Sample, adaptation: Adaptation | None, target_precision: float, *,
        seed: int = 0) -> tuple[DecisionRule, CalibrationReport]:
    """The rule for `target_precision` from leave-one-out lookups (CalibrationError when none reaches it)."""
    gallery = adaptation.apply(sample.vectors) if adaptation is not None else sample.vectors
    labels = sample.products
    counts = np.bincount(labels)
    multi = np.flatnonzero(counts[labels] >= 2)  # a photo of a one-photo product has nothing to find
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(multi, min(len(multi), MAX_QUERIES), replace=False)) if len(multi) else multi
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0])
    best = []
    for start in range(0, len(queries), 256):
        chunk = queries[start:start + 256]
        similarity = gallery[chunk] @ gallery.T
        similarity[np.arange(len(chunk)), chunk] = -np.inf  # not itself
        best.append(np.maximum.reduceat(similarity[:, order], starts, axis=1))  # best image per product
    per_product = np.concatenate(best) if best else np.zeros((0, len(starts)))
    own = labels[queries]
    rows = np.arange(len(queries))
    known = _top_two(per_product)
    without_own = per_product.copy()
    without_own[rows, own] = -np.inf
    unknown = _top_two(without_own)
    scores = np.concatenate([known[1], unknown[1]])
    margins = np.concatenate([known[2], unknown[2]])
    right = np.concatenate([known[0] == own, np.zeros(len(queries), dtype=bool)])
    is_known = np.r_[np.ones(len(queries), dtype=bool), np.zeros(len(queries), dtype=bool)]
    rule = fit_rule(scores, margins, right & is_known, target_precision, seed=seed)
    return rule, report(rule, scores, margins, right, is_known)


def _top_two(per_product: np.ndarray):
    """(best product, its score, its margin over the second; NaN when there is no second)."""
    if per_product.shape[1] == 0:
        empty = np.zeros(len(per_product))
        return empty.astype(np.int64), empty - 1.0, empty + np.nan
    top = np.argsort(-per_product, axis=1)[:, :2]
    rows = np.arange(len(per_product))
    first = per_product[rows, top[:, 0]]
    second = per_product[rows, top[:, 1]] if per_product.shape[1] > 1 else np.full(len(rows), -np.inf)
    margin = np.where(np.isfinite(second), first - second, np.nan)
    return top[:, 0], first, margin
