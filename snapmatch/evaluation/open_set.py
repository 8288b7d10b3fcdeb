"""identify() with products the catalog lacks: precision, known named right, unknown rejected, per rule."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from snapmatch.evaluation.embedding import Embedded
from snapmatch.evaluation.retrieval import build_catalog
from snapmatch.sdk.catalog.calibration import (
    DecisionRule,
    choose_threshold,
    fit_rule,
    rule_values,
)
from snapmatch.sdk.errors import CalibrationError


def open_scores(gallery: Embedded, queries: Embedded, model_id: str, seed: int, *, adapt: bool = False):
    """Best match per query against a catalog lacking a third of the products: score, margin, right?, known?

    Also the rule that catalog fits on its own photos (snapmatch.sdk.catalog.self_calibration).
    """
    rng = np.random.default_rng(seed)
    products = np.unique(gallery.labels)
    unknown = [str(x) for x in rng.choice(products, size=len(products) // 3, replace=False)]
    known_gallery = gallery.subset(~np.isin(gallery.labels, unknown))
    with tempfile.TemporaryDirectory() as tmp, \
            build_catalog(Path(tmp) / "catalog", known_gallery, model_id, adapt=adapt) as catalog:
        best = [m[0] if m else None for m in catalog.search(queries.vectors, k=1)]
        try:
            own_rule, _ = catalog.self_calibrated_rule()
        except CalibrationError:
            own_rule = None
    scores = np.array([m.score if m else -1.0 for m in best])
    margins = np.array([m.margin if m and m.margin is not None else np.nan for m in best])
    predicted = np.array([m.product_id if m else "" for m in best], dtype=object)
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
    scores, margins, correct, is_known, n_unknown, own_rule = open_scores(gallery, queries, model_id, seed,
                                                                          adapt=adapt)
    halves = np.random.default_rng(seed + 1).permutation(len(scores)) % 2 == 0
    rules: dict[str, dict] = {}
    for name, weights in (("cosine", (0.0,)), ("cosine+margin", None)):
        folds = []
        for fit_on in (halves, ~halves):
            try:
                if weights:
                    rule = fit_rule(scores[fit_on], margins[fit_on], correct[fit_on], target_precision, weights=weights)
                else:
                    rule = fit_rule(scores[fit_on], margins[fit_on], correct[fit_on], target_precision)
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


def recommended_threshold(gallery: Embedded, queries: Embedded, model_id: str, *, target_precision: float) -> float:
    """The plain-cosine identify() threshold a model card recommends: all queries, a third of products unknown."""
    scores, _, correct, _, _, _ = open_scores(gallery, queries, model_id, seed=0)
    return choose_threshold(scores, correct, target_precision)
