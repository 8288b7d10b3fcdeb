"""identify()'s rule fitted on the catalog's own photos, for a catalog nobody has calibrated.

A threshold calibrated on raw cosines (the model card's) means nothing once
the catalog adapts its metric, and a new catalog has no labelled photos. Its
own photos stand in for unknown products: each sampled photo is looked up
against the catalog without its whole product, so whatever wins is wrong,
and the rule's threshold is set to reject UNKNOWN_REJECTION of those
lookups. Known products are not estimated the same way: a photo looked up
without itself still finds its shelf-mates, near-duplicates that a camera's
later frames are not, and a precision target fitted on them named only a
tenth of Grocery's val photos. Measured on Grocery val (docs/BENCHMARKS.md),
this rule (cosine + 1 x margin, 90% of unknown lookups rejected) reached
precision 0.82-0.92 with the catalog's metric (five Large-minimalistic
models; 0.89-0.90 for the earlier Small one). `snapmatch catalog calibrate`
with real labelled photos replaces it.

The lookups score products as the catalog's search will: a catalog searched
exactly also scores each product's prototype, the normalised mean of its
photos (snapmatch.sdk.catalog.dense), and so do its lookups here. A threshold
fitted on photos alone would sit below what unknown products score.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from snapmatch.sdk.catalog import store
from snapmatch.sdk.catalog.adaptation import Adaptation
from snapmatch.sdk.catalog.calibration import (
    CalibrationReport,
    DecisionRule,
    report,
    rule_values,
)
from snapmatch.sdk.catalog.dense import MIN_PROTOTYPE_PHOTOS
from snapmatch.sdk.errors import CalibrationError

UNKNOWN_REJECTION = 0.9
MARGIN_WEIGHT = 1.0  # cosine + margin: on Grocery it named more than the cosine alone at the same rejection
MAX_GALLERY = 20_000  # images the lookups run against (a random subset of larger catalogs)
MAX_QUERIES = 1_000  # photos looked up as unknown products


@dataclass(frozen=True)
class Sample:
    products: np.ndarray  # int product index per image
    vectors: np.ndarray  # raw embeddings [n, d]


def sample(conn: sqlite3.Connection, dim: int, *, seed: int = 0) -> Sample:
    """The catalog's images, about MAX_GALLERY of them drawn at random as the rows stream by.

    Drawn chunk by chunk, so a catalog of a million images is never loaded whole.
    """
    rng = np.random.default_rng(seed)
    rate = min(1.0, MAX_GALLERY / max(1, store.counts(conn)[1]))
    ids: list[str] = []
    chunks = []
    for _, products, vectors in store.iter_product_rows(conn, dim):
        keep = rng.random(len(products)) < rate if rate < 1.0 else np.ones(len(products), dtype=bool)
        ids.extend(product for product, kept in zip(products, keep) if kept)
        chunks.append(vectors[keep])
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
    _, index = np.unique(np.array(ids, dtype=object), return_inverse=True)
    return Sample(np.asarray(index, dtype=np.int64).reshape(-1), vectors)


def fit(sample: Sample, adaptation: Adaptation | None, *, prototypes: bool = False,
        seed: int = 0) -> tuple[DecisionRule, CalibrationReport]:
    """The rule that rejects UNKNOWN_REJECTION of leave-one-product-out lookups (CalibrationError: too few products).

    prototypes: score each product of two or more photos by the higher of its best photo and
    its prototype, as exact search does (pass whether the catalog is searched exactly).
    """
    gallery = adaptation.apply(sample.vectors) if adaptation is not None else sample.vectors
    labels = sample.products
    if len(np.unique(labels)) < 3:
        raise CalibrationError("self-calibration needs at least 3 products")
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(len(labels), min(len(labels), MAX_QUERIES), replace=False))
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0])
    usable, means = _prototypes(gallery[order], starts) if prototypes else (None, None)
    best = []
    for start in range(0, len(queries), 256):
        chunk = queries[start:start + 256]
        similarity = gallery[chunk] @ gallery.T
        per_image = np.maximum.reduceat(similarity[:, order], starts, axis=1)  # best image per product
        if means is not None:
            per_image[:, usable] = np.maximum(per_image[:, usable], gallery[chunk] @ means.T)
        best.append(per_image)
    per_product = np.concatenate(best)
    per_product[np.arange(len(queries)), labels[queries]] = -np.inf  # as if its product were not in the catalog
    _, scores, margins = _top_two(per_product)
    values = rule_values(scores, margins, MARGIN_WEIGHT)
    rule = DecisionRule(float(np.quantile(values, UNKNOWN_REJECTION, method="higher")) + 1e-6, MARGIN_WEIGHT)
    unknown = np.zeros(len(queries), dtype=bool)
    return rule, report(rule, scores, margins, unknown, unknown)


def _prototypes(grouped: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which products (rows grouped by product from `starts`) have a prototype, and those prototypes:
    the normalised mean of the product's rows, for products of MIN_PROTOTYPE_PHOTOS or more."""
    sums = np.add.reduceat(grouped, starts, axis=0, dtype=np.float64)  # no float64 copy of the whole gallery
    counts = np.diff(np.r_[starts, len(grouped)])
    norms = np.linalg.norm(sums, axis=1)
    usable = (counts >= MIN_PROTOTYPE_PHOTOS) & (norms > 0)
    return usable, (sums[usable] / norms[usable, None]).astype(np.float32)


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
