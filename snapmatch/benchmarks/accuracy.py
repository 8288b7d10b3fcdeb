"""Retrieval accuracy through the runtime (ONNX Runtime + usearch catalog), on DESIGN.md's protocols.

P1  in-store lookup: catalog = iconic + train photos, queries = val photos.
P2  new products: a model trained WITHOUT some products; those products are
    added on the device from their photos; queries = their val photos. Read
    beside the same queries answered by a model that was trained on them.
P3  catalog-only: catalog = one iconic image per product, queries = val photos.
FEW as P1 with a device's catalog: iconic + 3 train photos per product.
OPEN unknown products: the catalog lacks a third of the products; the
    identify() rule is calibrated on one half of the val photos and
    measured on the other, for each rule: the plain cosine, cosine + margin
    (the weight chosen by calibration), and the rule an uncalibrated
    catalog fits on its own photos (self-calibrated).

Every protocol runs with the catalog's adaptation off and, with `adapt`,
on (the transform fitted on the catalog's photos only, never on queries).

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
from snapmatch.sdk import self_calibration, store
from snapmatch.sdk.calibration import DecisionRule, choose_threshold, fit_rule, rule_values
from snapmatch.sdk.catalog import Catalog
from snapmatch.sdk.embedder import Embedder
from snapmatch.sdk.errors import CalibrationError
from snapmatch.training.grocery import GroceryData, Photo

PROTOCOLS = ("P1", "P2", "P3", "FEW", "OPEN")
FEW_PHOTOS = 3


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


def build_catalog(folder: Path, gallery: Embedded, model_id: str, *, adapt: bool = False) -> Catalog:
    catalog = Catalog.create(folder, model_id=model_id, dim=gallery.vectors.shape[1], compact_at=1 << 30, adapt=adapt)
    for label in np.unique(gallery.labels):
        catalog.add(str(int(label)), gallery.vectors[gallery.labels == label])
    # Searched from the memory-mapped base, as on a device; with adapt, under a fit of every photo.
    catalog.compact(refit=True if adapt else None)
    return catalog


def few_shot(gallery_iconic: Embedded, train: Embedded, *, photos: int = FEW_PHOTOS, seed: int = 0) -> Embedded:
    """A device's catalog: the iconic image plus `photos` train photos per product (seeded)."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(train.labels == label), min(photos, int(np.sum(train.labels == label))),
                                      replace=False) for label in np.unique(train.labels)])
    return gallery_iconic + train.subset(np.isin(np.arange(len(train.labels)), rows))


def retrieval(gallery: Embedded, queries: Embedded, model_id: str, *, adapt: bool = False) -> dict:
    """Recall@1, Recall@5 (product-level, via the catalog) and MAP@R (image-level, under the catalog's metric)."""
    with tempfile.TemporaryDirectory() as tmp, \
            build_catalog(Path(tmp) / "catalog", gallery, model_id, adapt=adapt) as catalog:
        results = catalog.search(queries.vectors, k=5)
        transform = catalog._state.adaptation  # MAP@R ranks images by exact cosine under the same metric
        adapted = catalog.adaptation_status()["in_force"]
    ranked = [[int(match.product_id) for match in matches] for matches in results]
    truth = queries.labels
    g, q = (transform.apply(gallery.vectors), transform.apply(queries.vectors)) if transform else (gallery.vectors, queries.vectors)
    return {
        "recall@1": float(np.mean([bool(r) and r[0] == t for r, t in zip(ranked, truth)])),
        "recall@5": float(np.mean([t in r[:5] for r, t in zip(ranked, truth)])),
        "map@r": map_at_r(ranking(q, g, depth=deepest_r(gallery.labels)), gallery.labels, queries.labels),
        "queries": int(len(truth)),
        "catalog_images": int(len(gallery.labels)),
        "adapted": adapted,
    }


def _open_scores(gallery: Embedded, queries: Embedded, model_id: str, seed: int, *, adapt: bool = False):
    """Best match per query against a catalog lacking a third of the products: score, margin, right?, known?

    Also the rule that catalog fits on its own photos (snapmatch.sdk.self_calibration).
    """
    rng = np.random.default_rng(seed)
    products = np.unique(gallery.labels)
    unknown = [int(x) for x in rng.choice(products, size=len(products) // 3, replace=False)]
    known_gallery = gallery.subset(~np.isin(gallery.labels, unknown))
    with tempfile.TemporaryDirectory() as tmp, \
            build_catalog(Path(tmp) / "catalog", known_gallery, model_id, adapt=adapt) as catalog:
        best = [m[0] if m else None for m in catalog.search(queries.vectors, k=1)]
        try:
            own_rule, _ = self_calibration.fit(self_calibration.sample(catalog._write, catalog.dim),
                                               catalog._state.adaptation)
        except CalibrationError:
            own_rule = None
    scores = np.array([m.score if m else -1.0 for m in best])
    margins = np.array([m.margin if m and m.margin is not None else np.nan for m in best])
    predicted = np.array([int(m.product_id) if m else -1 for m in best])
    is_known = ~np.isin(queries.labels, unknown)
    return scores, margins, (predicted == queries.labels) & is_known, is_known, len(unknown), own_rule


def _measure(rule: DecisionRule | None, scores, margins, correct, is_known, test) -> dict:
    accepted = test & (rule_values(scores, margins, rule.margin_weight) >= rule.threshold) if rule else test & False
    return {
        "threshold": rule.threshold if rule else float("inf"),
        "margin_weight": rule.margin_weight if rule else 0.0,
        "precision": float(correct[accepted].mean()) if accepted.any() else float("nan"),
        "known_named_right": float(correct[test & is_known & accepted].sum() / max(1, (test & is_known).sum())),
        "unknown_rejected": float(1 - accepted[test & ~is_known].sum() / max(1, (test & ~is_known).sum())),
    }


def open_set(gallery: Embedded, queries: Embedded, model_id: str, *, target_precision: float, seed: int = 0,
             adapt: bool = False) -> dict:
    """identify() with a third of the products unknown: precision, known named right, unknown rejected, per rule.

    Calibrated rules are fitted on one half of the queries and measured on the
    other, then the halves swap; figures are the mean of both. The
    self-calibrated rule never sees a query. The top-level figures are the plain cosine's.
    """
    scores, margins, correct, is_known, n_unknown, own_rule = _open_scores(gallery, queries, model_id, seed,
                                                                           adapt=adapt)
    halves = np.random.default_rng(seed + 1).permutation(len(scores)) % 2 == 0
    rules: dict[str, dict] = {}
    for name, weights in (("cosine", (0.0,)), ("cosine+margin", None)):
        folds = []
        for fit_on in (halves, ~halves):
            try:
                kwargs = {"weights": weights} if weights else {}
                rule = fit_rule(scores[fit_on], margins[fit_on], correct[fit_on], target_precision, **kwargs)
            except CalibrationError:
                rule = None
            folds.append(_measure(rule, scores, margins, correct, is_known, ~fit_on))
        rules[name] = {key: float(np.nanmean([f[key] for f in folds])) if key != "threshold"
                       else [f[key] for f in folds] for key in folds[0]}
    rules["self-calibrated"] = _measure(own_rule, scores, margins, correct, is_known, np.ones(len(scores), bool))
    return {
        **{key: rules["cosine"][key] for key in ("precision", "known_named_right", "unknown_rejected")},
        "threshold": rules["cosine"]["threshold"][0],
        "rules": rules,
        "target_precision": target_precision,
        "unknown_products": n_unknown,
        "test_queries": int(len(scores)),
        "adapted": bool(adapt),
    }


def default_threshold(model: str | Path, data_root: str | Path, *, target_precision: float, threads: int | None = None) -> float:
    """The identify() threshold a model card recommends: calibrated on all val photos, a third of products unknown."""
    data = GroceryData.load(data_root)
    embedder = Embedder(model, threads=threads)
    gallery = embed(embedder, data.iconic_photos()) + embed(embedder, data.split("train"))
    queries = embed(embedder, data.split("val"))
    scores, _, correct, _, _, _ = _open_scores(gallery, queries, embedder.model_id, seed=0)
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
    adapt: bool = False,
) -> dict:
    """Every requested protocol for one model; P2 also needs the model trained without `held_out`.

    With adapt, every protocol runs again with the catalog's adaptation on, under report["adapted"].
    """
    data = GroceryData.load(data_root)
    embedder = Embedder(model, threads=threads)
    train, val, iconic = data.split("train"), data.split("val"), data.iconic_photos()
    iconic_e, train_e, val_e = (embed(embedder, photos, on_batch) for photos in (iconic, train, val))
    other = None
    if "P2" in protocols and p2_model is not None:
        held_out = held_out if held_out is not None else held_out_products(data)
        p2 = Embedder(p2_model, threads=threads)
        other = (p2, embed(p2, iconic, on_batch) + embed(p2, train, on_batch),
                 embed(p2, [photo for photo in val if photo.label in set(held_out)], on_batch))
    report: dict = {"model": str(model), "model_id": embedder.model_id}
    for adapted in ((False, True) if adapt else (False,)):
        part = _protocols(embedder.model_id, iconic_e, train_e, val_e, protocols, target_precision, adapted,
                          held_out, other)
        if adapted:
            report["adapted"] = part
        else:
            report.update(part)
    if other is not None:
        report["P2"]["p2_model"] = str(p2_model)
    return report


def _protocols(model_id, iconic_e, train_e, val_e, protocols, target_precision, adapt, held_out, other) -> dict:
    gallery = iconic_e + train_e
    report: dict = {}
    if "P1" in protocols:
        report["P1"] = retrieval(gallery, val_e, model_id, adapt=adapt)
    if "FEW" in protocols:
        report["FEW"] = retrieval(few_shot(iconic_e, train_e), val_e, model_id, adapt=adapt)
    if "P3" in protocols:
        report["P3"] = retrieval(iconic_e, val_e, model_id, adapt=adapt)
    if "OPEN" in protocols:
        report["OPEN"] = open_set(gallery, val_e, model_id, target_precision=target_precision, adapt=adapt)
    if other is not None:
        p2, other_gallery, other_val = other
        mask = np.isin(val_e.labels, held_out)
        report["P2"] = {
            "held_out": held_out,
            "trained_on_them": retrieval(gallery, val_e.subset(mask), model_id, adapt=adapt),
            "never_trained_on_them": retrieval(other_gallery, other_val, p2.model_id, adapt=adapt),
        }
    return report


def format_report(reports: list[dict]) -> str:
    """Markdown tables: retrieval per model, protocol and metric; then identify() per rule."""
    lines = ["| model | adapt | protocol | Recall@1 | Recall@5 | MAP@R |", "| --- | --- | --- | --- | --- | --- |"]
    for report in reports:
        name = Path(report["model"]).name
        for adapt, part in _parts(report):
            for protocol, label in (("P1", "P1"), ("FEW", f"P1, {FEW_PHOTOS} photos + iconic"), ("P3", "P3")):
                if protocol in part:
                    r = part[protocol]
                    lines.append(f"| {name} | {adapt} | {label} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | "
                                 f"{r['map@r']:.3f} |")
            if "P2" in part:
                for key, label in (("trained_on_them", "P2 (trained on them)"),
                                   ("never_trained_on_them", "P2 (added on device)")):
                    r = part["P2"][key]
                    lines.append(f"| {name} | {adapt} | {label} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | "
                                 f"{r['map@r']:.3f} |")
    open_rows = [(report, adapt, part) for report in reports for adapt, part in _parts(report) if "OPEN" in part]
    if open_rows:
        target = open_rows[0][2]["OPEN"]["target_precision"]
        lines += ["", f"identify() with a third of the products unknown (calibrated rules: target precision {target}, "
                  "fitted on half the val photos, measured on the other half, both ways)", "",
                  "| model | adapt | rule | precision | known named right | unknown rejected |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for report, adapt, part in open_rows:
            for rule, o in part["OPEN"].get("rules", {"cosine": part["OPEN"]}).items():
                lines.append(f"| {Path(report['model']).name} | {adapt} | {rule} | {o['precision']:.3f} | "
                             f"{o['known_named_right']:.3f} | {o['unknown_rejected']:.3f} |")
    return "\n".join(lines)


def _parts(report: dict):
    yield "off", report
    if "adapted" in report:
        yield "on", report["adapted"]
