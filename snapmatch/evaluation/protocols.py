"""DESIGN.md's protocols on any dataset, through the runtime (ONNX Runtime + a real usearch catalog).

The split (snapmatch.training.splits) gives the catalog photos and the query
photos; products held out of training are "unseen", the rest "seen".

P1   the catalog holds every product's catalog photos (unseen products'
     too, added from their photos as a device adds a new product); queries
     are the query photos, reported whole and as seen / unseen.
FEW  P1 with a device's catalog: catalog images + 3 shop photos per product.
P3   catalog-only: the catalog holds only catalog-style images (pack shots).
OPEN unknown products: the catalog lacks a third of the products; the
     identify() rule is calibrated on half the queries and measured on the
     other half, per rule (cosine, cosine+margin, self-calibrated).
P2   new products, with two models: the same queries of the products a
     second model never trained on (its recorded split), answered by the
     model trained on them and by the one that was not.

Every protocol runs with the catalog's adaptation off and, with `adapt`, on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from snapmatch.evaluation.embedding import Embedded, embed
from snapmatch.evaluation.open_set import open_set
from snapmatch.evaluation.retrieval import few_shot, retrieval
from snapmatch.sdk.errors import DatasetError
from snapmatch.sdk.model.embedder import Embedder
from snapmatch.training.data import Dataset
from snapmatch.training.splits import QUERY_SHARE, Split, holdout_split

PROTOCOLS = ("P1", "FEW", "P3", "OPEN", "P2")


def split_for(embedder: Embedder, dataset: Dataset, given: Split | None = None) -> tuple[Split, str]:
    """The split to measure `embedder`'s model on `dataset`, and where it came from.

    The model's own training split when it was drawn from this very dataset
    (so unseen products are the ones it never trained on); else every product's
    standing is unknown and the query photos are drawn as a run would draw them.
    """
    if given is not None:
        return given, "given"
    recorded = embedder.spec.training_split
    if recorded and recorded.get("dataset") == dataset.fingerprint():
        return Split.from_dict(recorded), "the model's training split"
    return holdout_split(dataset, holdout=0, query_share=QUERY_SHARE), "no split of this dataset recorded in the model"


def evaluate(
    model: str | Path,
    dataset: Dataset,
    *,
    split: Split | None = None,
    protocols: tuple[str, ...] = ("P1", "FEW", "P3", "OPEN"),
    p2_model: str | Path | None = None,
    target_precision: float = 0.95,
    threads: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    adapt: bool = False,
) -> dict:
    """Every requested protocol for one model (P2 also needs `p2_model`); with adapt, again under report["adapted"]."""
    embedder = Embedder(model, threads=threads)
    split, origin = split_for(embedder, dataset, split)
    _training, catalog_photos, query_photos = split.parts(dataset)
    if not query_photos:
        raise DatasetError(f"{dataset.source}: no query photos (a product needs 3 or more shop photos to have one)")
    if not set(protocols) - {"P3"}:  # catalog-style images are all P3 needs
        catalog_photos = [photo for photo in catalog_photos if photo.catalog]
    skipped: list[tuple[str, str]] = []
    gallery = embed(embedder, catalog_photos, on_batch, skipped)
    queries = embed(embedder, query_photos, on_batch, skipped)
    other = None
    if "P2" in protocols and p2_model is not None:
        p2 = Embedder(p2_model, threads=threads)
        recorded = p2.spec.training_split
        if not recorded or not recorded.get("unseen"):
            raise DatasetError(f"{p2_model} records no products held out of its training: P2 needs such a model")
        held_out = [str(p) for p in recorded["unseen"]]
        other = (p2, held_out, embed(p2, catalog_photos, on_batch), embed(p2, query_photos, on_batch))
    report: dict = {
        "model": str(model), "model_id": embedder.model_id, "dataset": str(dataset.source),
        "dataset_fingerprint": dataset.fingerprint(), "split": split.to_dict(), "split_origin": origin,
        "products": len(dataset.products), "unseen_products": len(split.unseen),
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
    }
    for adapted in ((False, True) if adapt else (False,)):
        part = _protocols(embedder.model_id, gallery, queries, split, protocols, target_precision, adapted, other)
        if adapted:
            report["adapted"] = part
        else:
            report.update(part)
    if other is not None:
        report["P2"]["p2_model"] = str(p2_model)
    return report


def _protocols(model_id: str, gallery: Embedded, queries: Embedded, split: Split, protocols, target_precision,
               adapt: bool, other) -> dict:
    groups = None
    if split.unseen:
        unseen = np.isin(queries.labels, list(split.unseen))
        groups = {"seen": ~unseen, "unseen": unseen}
    report: dict = {}
    if "P1" in protocols:
        report["P1"] = retrieval(gallery, queries, model_id, adapt=adapt, groups=groups)
    if "FEW" in protocols:
        report["FEW"] = retrieval(few_shot(gallery), queries, model_id, adapt=adapt, groups=groups)
    if "P3" in protocols and gallery.catalog.any():
        iconic = gallery.subset(gallery.catalog)
        covered = np.isin(queries.labels, np.unique(iconic.labels))  # products that have a catalog image
        report["P3"] = retrieval(iconic, queries.subset(covered), model_id, adapt=adapt,
                                 groups={k: v[covered] for k, v in groups.items()} if groups else None)
    if "OPEN" in protocols and len(np.unique(gallery.labels)) >= 3:
        report["OPEN"] = open_set(gallery, queries, model_id, target_precision=target_precision, adapt=adapt)
    if other is not None:
        p2, held_out, other_gallery, other_queries = other
        mask = np.isin(queries.labels, held_out)
        report["P2"] = {
            "held_out": held_out,
            "trained_on_them": retrieval(gallery, queries.subset(mask), model_id, adapt=adapt),
            "never_trained_on_them": retrieval(other_gallery, other_queries.subset(np.isin(other_queries.labels,
                                                                                           held_out)),
                                               p2.model_id, adapt=adapt),
        }
    return report
