"""Retrieval through a real catalog: Recall@1/@5 per product (what an app sees) and MAP@R per image."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from snapmatch.evaluation.embedding import Embedded
from snapmatch.evaluation.metrics import average_precision_at_r, deepest_r, ranking
from snapmatch.sdk.catalog.catalog import Catalog

FEW_PHOTOS = 3  # shop photos per product in the FEW protocol's catalog, beside its catalog images


def build_catalog(folder: Path, gallery: Embedded, model_id: str, *, adapt: bool = False) -> Catalog:
    catalog = Catalog.create(folder, model_id=model_id, dim=gallery.vectors.shape[1], compact_at=1 << 30, adapt=adapt)
    for label in np.unique(gallery.labels):
        catalog.add(str(label), gallery.vectors[gallery.labels == label])
    # Searched from the memory-mapped base, as on a device; with adapt, under a fit of every photo.
    catalog.compact(refit=True if adapt else None)
    return catalog


def few_shot(gallery: Embedded, *, photos: int = FEW_PHOTOS, seed: int = 0) -> Embedded:
    """A device's catalog: every catalog image plus `photos` shop photos per product (seeded)."""
    rng = np.random.default_rng(seed)
    keep = gallery.catalog.copy()
    for label in np.unique(gallery.labels):
        shop = np.flatnonzero((gallery.labels == label) & ~gallery.catalog)
        keep[rng.choice(shop, min(photos, len(shop)), replace=False)] = True
    return gallery.subset(keep)


def retrieval(gallery: Embedded, queries: Embedded, model_id: str, *, adapt: bool = False,
              groups: dict[str, np.ndarray] | None = None) -> dict:
    """Recall@1, Recall@5 (product-level, via the catalog) and MAP@R (image-level, under the catalog's metric).

    groups: named query masks (e.g. seen / unseen products) reported beside the whole.
    """
    with tempfile.TemporaryDirectory() as tmp, \
            build_catalog(Path(tmp) / "catalog", gallery, model_id, adapt=adapt) as catalog:
        results = catalog.search(queries.vectors, k=5)
        transform = catalog.adaptation  # MAP@R ranks images by exact cosine under the same metric
        adapted = catalog.adaptation_status()["in_force"]
    ranked = [[match.product_id for match in matches] for matches in results]
    truth = [str(label) for label in queries.labels]
    g, q = (transform.apply(gallery.vectors), transform.apply(queries.vectors)) if transform else \
        (gallery.vectors, queries.vectors)
    per_query = {
        "recall@1": np.array([bool(r) and r[0] == t for r, t in zip(ranked, truth)], dtype=float),
        "recall@5": np.array([t in r[:5] for r, t in zip(ranked, truth)], dtype=float),
        "map@r": average_precision_at_r(ranking(q, g, depth=deepest_r(gallery.labels)), gallery.labels,
                                        queries.labels),
    }
    report = {**summarise(per_query, np.ones(len(truth), bool)), "catalog_images": int(len(gallery)),
              "adapted": adapted}
    for name, mask in (groups or {}).items():
        report[name] = summarise(per_query, mask)
    return report


def summarise(per_query: dict[str, np.ndarray], mask: np.ndarray) -> dict:
    """Means over the queries in `mask`, with Recall@1's standard error (how far apart two numbers must be)."""
    n = int(mask.sum())
    out: dict = {}
    for key, values in per_query.items():
        chosen = values[mask]
        finite = chosen[np.isfinite(chosen)]
        out[key] = float(finite.mean()) if len(finite) else float("nan")
    hit = per_query["recall@1"][mask]
    out["recall@1_se"] = float(np.sqrt(hit.mean() * (1 - hit.mean()) / n)) if n > 1 else float("nan")
    out["queries"] = n
    return out
