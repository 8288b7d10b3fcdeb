"""Splits that measure what matters: products held out of training, not just photos.

A `Split` says, for one dataset:

- which photos are **queries** (looked up, never trained on, never in the
  catalog): the dataset's own (Grocery's val) or a seeded share of each
  product's shop photos;
- which products are **unseen**: held out of training entirely. Their other
  photos still go in the evaluation catalog, as a device adds a new product
  from its photos, so the run measures what a shop meets.

Everything else (the non-query photos of seen products, catalog images
included) is what training sees. `product_folds` deals the products into K
folds so that every product is unseen in exactly one of K runs.

No torch here: evaluation reads splits too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from snapmatch.sdk.errors import DatasetError
from snapmatch.training.data import Dataset, Photo

QUERY_SHARE = 0.25  # of each product's shop photos, when the dataset gives no query split
HOLDOUT = 0.2  # share of products held out of training by default


@dataclass(frozen=True)
class Split:
    dataset: str  # fingerprint of the whole dataset it was drawn from
    seed: int
    query_share: float | None  # None: the dataset's own query photos
    unseen: tuple[str, ...]  # products held out of training
    fold: int | None = None  # 1..folds when drawn by product_folds
    folds: int | None = None

    def is_query(self, dataset: Dataset) -> set:
        """Paths of the query photos."""
        if self.query_share is None:
            if dataset.given_queries is None:
                raise DatasetError(f"{dataset.source} gives no query photos; this split needs a query share")
            return set(dataset.given_queries)
        return _drawn_queries(dataset, self.seed, self.query_share)

    def parts(self, dataset: Dataset) -> tuple[list[Photo], list[Photo], list[Photo]]:
        """(training photos, catalog photos, query photos) of `dataset` under this split.

        The catalog holds every product, unseen ones included; training holds no unseen product.
        """
        queries = self.is_query(dataset)
        unseen = set(self.unseen)
        catalog = [photo for photo in dataset.photos if photo.path not in queries]
        training = [photo for photo in catalog if photo.product not in unseen]
        return training, catalog, [photo for photo in dataset.photos if photo.path in queries]

    def to_dict(self) -> dict:
        return {**asdict(self), "unseen": list(self.unseen)}

    @classmethod
    def from_dict(cls, raw: dict) -> "Split":
        return cls(raw["dataset"], int(raw["seed"]), raw.get("query_share"), tuple(raw.get("unseen", ())),
                   raw.get("fold"), raw.get("folds"))


def _drawn_queries(dataset: Dataset, seed: int, share: float) -> set:
    """A seeded share of each product's shop photos, keeping at least two photos per product to train on."""
    rng = np.random.default_rng(seed)
    queries = set()
    by_product: dict[str, list[Photo]] = {}
    for photo in dataset.store_photos():
        by_product.setdefault(photo.product, []).append(photo)
    for product in sorted(by_product):
        photos = sorted(by_product[product], key=lambda p: str(p.path))
        count = min(max(round(len(photos) * share), 1 if len(photos) >= 3 else 0), max(0, len(photos) - 2))
        queries.update(photos[i].path for i in rng.permutation(len(photos))[:count])
    return queries


def product_folds(dataset: Dataset, folds: int, *, seed: int = 0, query_share: float | None = QUERY_SHARE
                  ) -> list[Split]:
    """K splits whose unseen products partition the products that have query photos."""
    if folds < 2:
        raise DatasetError("k-fold needs at least 2 folds")
    share = None if dataset.given_queries is not None else query_share
    candidates = _products_with_queries(dataset, seed, share)
    if len(candidates) < folds:
        raise DatasetError(f"{len(candidates)} products have photos to query; {folds} folds need at least {folds}")
    order = [candidates[i] for i in np.random.default_rng(seed).permutation(len(candidates))]
    return [Split(dataset.fingerprint(), seed, share, tuple(sorted(order[f::folds])), f + 1, folds)
            for f in range(folds)]


def holdout_split(dataset: Dataset, *, holdout: float = HOLDOUT, seed: int = 0,
                  query_share: float | None = QUERY_SHARE, unseen: list[str] | None = None) -> Split:
    """One split: `holdout` of the products with query photos unseen (or the `unseen` products named)."""
    share = None if dataset.given_queries is not None else query_share
    if unseen is not None:
        missing = sorted(set(unseen) - set(dataset.products))
        if missing:
            raise DatasetError(f"unseen products not in {dataset.source}: {', '.join(missing[:5])}")
        return Split(dataset.fingerprint(), seed, share, tuple(sorted(unseen)))
    candidates = _products_with_queries(dataset, seed, share)
    count = round(len(candidates) * holdout)
    if holdout > 0 and count == 0 and len(candidates) >= 2:
        count = 1
    chosen = [candidates[i] for i in np.random.default_rng(seed).permutation(len(candidates))[:count]]
    return Split(dataset.fingerprint(), seed, share, tuple(sorted(chosen)))


def _products_with_queries(dataset: Dataset, seed: int, share: float | None) -> list[str]:
    queries = set(dataset.given_queries) if share is None else _drawn_queries(dataset, seed, share)
    return sorted({photo.product for photo in dataset.photos if photo.path in queries})
