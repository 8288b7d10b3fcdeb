"""Retrieval accuracy through the runtime (ONNX Runtime + usearch catalog), on DESIGN.md's protocols.

P1  in-store lookup: catalog = iconic + train photos, queries = val photos.
P2  new products: a model trained WITHOUT some products; those products are
    added on the device from their photos; queries = their val photos. Read
    beside the same queries answered by a model that was trained on them.
P3  catalog-only: catalog = one iconic image per product, queries = val photos.
OPEN unknown products: the catalog lacks a third of the products; the
    identify() threshold is calibrated on one half of the val photos and
    measured on the other.

Recall@k is product-level, from `Catalog.search` (what an app sees). MAP@R is
image-level, exact cosine over the same runtime embeddings.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from snapmatch.benchmarks.metrics import deepest_r, map_at_r, ranking
from snapmatch.sdk.calibration import choose_threshold
from snapmatch.sdk.catalog import Catalog
from snapmatch.sdk.embedder import Embedder
from snapmatch.sdk.errors import CalibrationError
from snapmatch.training.grocery import GroceryData, Photo

PROTOCOLS = ("P1", "P2", "P3", "OPEN")


@dataclass
class Embedded:
    """Runtime embeddings of a list of photos."""

    vectors: np.ndarray
    labels: np.ndarray

    def subset(self, mask: np.ndarray) -> "Embedded":
        return Embedded(self.vectors[mask], self.labels[mask])

    def __add__(self, other: "Embedded") -> "Embedded":
        return Embedded(np.concatenate([self.vectors, other.vectors]), np.concatenate([self.labels, other.labels]))


def embed(embedder: Embedder, photos: list[Photo], on_batch: Callable[[int], None] | None = None) -> Embedded:
    chunks = []
    for start in range(0, len(photos), 32):
        batch = photos[start:start + 32]
        chunks.append(embedder.embed([photo.path for photo in batch]))
        if on_batch:
            on_batch(len(batch))
    return Embedded(np.concatenate(chunks), np.array([photo.label for photo in photos]))


def held_out_products(data: GroceryData, *, count: int = 15, seed: int = 0) -> list[int]:
    """The products protocol P2 leaves out of training: drawn among those with val photos."""
    with_val = sorted({photo.label for photo in data.split("val")})
    rng = np.random.default_rng(seed)
    return sorted(int(label) for label in rng.choice(with_val, size=count, replace=False))


def build_catalog(folder: Path, gallery: Embedded, model_id: str) -> Catalog:
    catalog = Catalog.create(folder, model_id=model_id, dim=gallery.vectors.shape[1], compact_at=1 << 30)
    for label in np.unique(gallery.labels):
        catalog.add(str(int(label)), gallery.vectors[gallery.labels == label])
    catalog.compact()  # searched from the memory-mapped base, as on a device
    return catalog


def retrieval(gallery: Embedded, queries: Embedded, model_id: str) -> dict:
    """Recall@1, Recall@5 (product-level, via the catalog) and MAP@R (image-level)."""
    with tempfile.TemporaryDirectory() as tmp, build_catalog(Path(tmp) / "catalog", gallery, model_id) as catalog:
        results = catalog.search(queries.vectors, k=5)
    ranked = [[int(match.product_id) for match in matches] for matches in results]
    truth = queries.labels
    return {
        "recall@1": float(np.mean([bool(r) and r[0] == t for r, t in zip(ranked, truth)])),
        "recall@5": float(np.mean([t in r[:5] for r, t in zip(ranked, truth)])),
        "map@r": map_at_r(ranking(queries.vectors, gallery.vectors, depth=deepest_r(gallery.labels)),
                          gallery.labels, queries.labels),
        "queries": int(len(truth)),
        "catalog_images": int(len(gallery.labels)),
    }


def _open_scores(gallery: Embedded, queries: Embedded, model_id: str, seed: int):
    """Best-match score per query against a catalog lacking a third of the products, and whether it is right."""
    rng = np.random.default_rng(seed)
    products = np.unique(gallery.labels)
    unknown = [int(x) for x in rng.choice(products, size=len(products) // 3, replace=False)]
    known_gallery = gallery.subset(~np.isin(gallery.labels, unknown))
    with tempfile.TemporaryDirectory() as tmp, build_catalog(Path(tmp) / "catalog", known_gallery, model_id) as catalog:
        best = [m[0] if m else None for m in catalog.search(queries.vectors, k=1)]
    scores = np.array([m.score if m else -1.0 for m in best])
    predicted = np.array([int(m.product_id) if m else -1 for m in best])
    is_known = ~np.isin(queries.labels, unknown)
    return scores, (predicted == queries.labels) & is_known, is_known, len(unknown)


def open_set(gallery: Embedded, queries: Embedded, model_id: str, *, target_precision: float, seed: int = 0) -> dict:
    """identify() with a third of the products unknown: precision, known named right, unknown rejected.

    The threshold is calibrated on one half of the queries and measured on the other.
    """
    scores, correct, is_known, n_unknown = _open_scores(gallery, queries, model_id, seed)
    halves = np.random.default_rng(seed + 1).permutation(len(scores)) % 2 == 0
    try:
        threshold = choose_threshold(scores[halves], correct[halves], target_precision)
    except CalibrationError:
        threshold = float("inf")
    test = ~halves
    accepted = test & (scores >= threshold)
    return {
        "threshold": threshold,
        "target_precision": target_precision,
        "precision": float(correct[accepted].mean()) if accepted.any() else float("nan"),
        "known_named_right": float(correct[test & is_known & accepted].sum() / max(1, (test & is_known).sum())),
        "unknown_rejected": float(1 - accepted[test & ~is_known].sum() / max(1, (test & ~is_known).sum())),
        "unknown_products": n_unknown,
        "test_queries": int(test.sum()),
    }


def default_threshold(model: str | Path, data_root: str | Path, *, target_precision: float, threads: int | None = None) -> float:
    """The identify() threshold a model card recommends: calibrated on all val photos, a third of products unknown."""
    data = GroceryData.load(data_root)
    embedder = Embedder(model, threads=threads)
    gallery = embed(embedder, data.iconic_photos()) + embed(embedder, data.split("train"))
    queries = embed(embedder, data.split("val"))
    scores, correct, _, _ = _open_scores(gallery, queries, embedder.model_id, seed=0)
    return choose_threshold(scores, correct, target_precision)


def evaluate(
    model: str | Path,
    data_root: str | Path,
    *,
    protocols: tuple[str, ...] = PROTOCOLS,
    p2_model: str | Path | None = None,
    held_out: list[int] | None = None,
    target_precision: float = 0.95,
    threads: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Every requested protocol for one model; P2 also needs the model trained without `held_out`."""
    data = GroceryData.load(data_root)
    embedder = Embedder(model, threads=threads)
    train, val, iconic = data.split("train"), data.split("val"), data.iconic_photos()
    iconic_e, train_e, val_e = (embed(embedder, photos, on_batch) for photos in (iconic, train, val))
    gallery = iconic_e + train_e
    report: dict = {"model": str(model), "model_id": embedder.model_id}
    if "P1" in protocols:
        report["P1"] = retrieval(gallery, val_e, embedder.model_id)
    if "P3" in protocols:
        report["P3"] = retrieval(iconic_e, val_e, embedder.model_id)
    if "OPEN" in protocols:
        report["OPEN"] = open_set(gallery, val_e, embedder.model_id, target_precision=target_precision)
    if "P2" in protocols and p2_model is not None:
        held_out = held_out if held_out is not None else held_out_products(data)
        mask = np.isin(val_e.labels, held_out)
        report["P2"] = {
            "held_out": held_out,
            "trained_on_them": retrieval(gallery, val_e.subset(mask), embedder.model_id),
        }
        other = Embedder(p2_model, threads=threads)
        other_gallery = embed(other, iconic, on_batch) + embed(other, train, on_batch)
        other_val = embed(other, [photo for photo in val if photo.label in set(held_out)], on_batch)
        report["P2"]["never_trained_on_them"] = retrieval(other_gallery, other_val, other.model_id)
        report["P2"]["p2_model"] = str(p2_model)
    return report


def format_report(reports: list[dict]) -> str:
    """A markdown table, one row per model and protocol."""
    lines = ["| model | protocol | Recall@1 | Recall@5 | MAP@R |", "| --- | --- | --- | --- | --- |"]
    for report in reports:
        name = Path(report["model"]).name
        for protocol in ("P1", "P3"):
            if protocol in report:
                r = report[protocol]
                lines.append(f"| {name} | {protocol} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['map@r']:.3f} |")
        if "P2" in report:
            for key, label in (("trained_on_them", "P2 (trained on them)"), ("never_trained_on_them", "P2 (added on device)")):
                r = report["P2"][key]
                lines.append(f"| {name} | {label} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['map@r']:.3f} |")
    open_rows = [r for r in reports if "OPEN" in r]
    if open_rows:
        lines += ["", "| model | OPEN threshold | precision | known named right | unknown rejected |",
                  "| --- | --- | --- | --- | --- |"]
        for report in open_rows:
            o = report["OPEN"]
            lines.append(f"| {Path(report['model']).name} | {o['threshold']:.3f} | {o['precision']:.3f} | "
                         f"{o['known_named_right']:.3f} | {o['unknown_rejected']:.3f} |")
    return "\n".join(lines)
