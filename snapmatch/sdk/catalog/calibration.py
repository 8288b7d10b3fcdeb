"""identify()'s decision rule, and choosing it from labelled photos for a target precision.

The rule judges the best product by its cosine and by its margin over the
second-best product (a ratio test, standard in instance matching): a photo
whose best product barely beats another is ambiguous however high its score.
The rule's value is `score + margin_weight * margin`; margin_weight 0 is the
plain cosine. Calibration picks margin_weight (by two-fold cross-validation,
so the choice is not fitted to the same photos it is judged on) and then the
lowest threshold reaching the target precision on all the photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snapmatch.sdk.errors import CalibrationError, InvalidArgumentError

MARGIN_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
_CROSS_VALIDATE_FROM = 20  # fewer labelled photos than this: choose the weight on all of them


@dataclass(frozen=True)
class DecisionRule:
    """Accept the best product when score + margin_weight * margin >= threshold."""

    threshold: float
    margin_weight: float = 0.0

    def value(self, score: float, margin: float | None) -> float:
        # No second product: no evidence of separation, so the margin counts as nothing.
        return float(score) + self.margin_weight * (0.0 if margin is None else float(margin))

    def accepts(self, score: float, margin: float | None) -> bool:
        return self.value(score, margin) >= self.threshold

    def describe(self) -> str:
        if self.margin_weight == 0:
            return f"score >= {self.threshold:.4f}"
        return f"score + {self.margin_weight:g} x margin >= {self.threshold:.4f}"


@dataclass(frozen=True)
class CalibrationReport:
    """What a rule does on labelled photos: known products named right, wrong, rejected; unknown rejected."""

    photos: int
    known: int
    named_right: int
    named_wrong: int
    known_rejected: int
    unknown: int
    unknown_rejected: int
    warnings: tuple[str, ...] = ()  # what makes this rule doubtful (guard_calibration)

    @property
    def precision(self) -> float:
        named = self.named_right + self.named_wrong + (self.unknown - self.unknown_rejected)
        return self.named_right / named if named and self.known else float("nan")

    @classmethod
    def from_dict(cls, stored: dict) -> "CalibrationReport":
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in stored.items() if k in known}
        fields["warnings"] = tuple(fields.get("warnings", ()))
        return cls(**fields)

    def to_dict(self) -> dict:
        fields = dict(self.__dict__)
        fields["warnings"] = list(self.warnings)
        fields["precision"] = None if np.isnan(self.precision) else round(self.precision, 6)
        return fields

    def describe(self) -> str:
        if self.known == 0:  # self-calibration: the catalog's own photos, each looked up without its product
            return (f"on {self.photos} of the catalog's own photos looked up as unknown products: "
                    f"{self.unknown_rejected}/{self.unknown} rejected")
        return (f"on {self.photos} photos: {self.named_right}/{self.known} known named right, {self.named_wrong} "
                f"named wrong, {self.known_rejected} rejected; {self.unknown_rejected}/{self.unknown} unknown rejected")


def choose_threshold(scores: np.ndarray, correct: np.ndarray, target_precision: float) -> float:
    """The lowest threshold on `scores` whose accepted answers reach `target_precision`.

    scores: the rule's value per labelled photo; correct: whether the best
    match names the photo's true product (always False for a photo of a
    product that is not in the catalog). Lowest, because among thresholds that
    are precise enough it names the most products.
    """
    if not 0.0 < target_precision <= 1.0:
        raise InvalidArgumentError("target_precision must be in (0, 1]")
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if len(scores) == 0:
        raise CalibrationError("no labelled photos to calibrate on")
    # Within a tie, wrong answers first: a cut is only valid after the whole tie anyway.
    order = np.lexsort((correct, -scores))
    sorted_scores, sorted_correct = scores[order], correct[order]
    precision = np.cumsum(sorted_correct) / np.arange(1, len(scores) + 1)
    # Accepting "score >= t" accepts every photo tied at t: only the last of a run of ties is a valid cut.
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    ok = np.flatnonzero((precision >= target_precision - 1e-12) & last_of_tie & sorted_correct)
    if len(ok) == 0:
        raise CalibrationError(
            f"no threshold reaches precision {target_precision:.3f} on these {len(scores)} photos "
            f"(best: {precision.max():.3f}); add more catalog images or lower the target"
        )
    return float(sorted_scores[ok[-1]])


def rule_values(scores: np.ndarray, margins: np.ndarray, weight: float) -> np.ndarray:
    """The rule's value per photo; margins are NaN where there was no second product."""
    return np.asarray(scores, dtype=np.float64) + weight * np.nan_to_num(np.asarray(margins, dtype=np.float64))


def fit_rule(
    scores: np.ndarray,
    margins: np.ndarray,
    correct: np.ndarray,
    target_precision: float,
    *,
    weights: tuple[float, ...] = MARGIN_WEIGHTS,
    seed: int = 0,
) -> DecisionRule:
    """The rule that names the most photos right at `target_precision` (CalibrationError if none reaches it)."""
    scores, margins, correct = np.asarray(scores), np.asarray(margins), np.asarray(correct, dtype=bool)
    cross = len(weights) > 1 and len(scores) >= _CROSS_VALIDATE_FROM
    order = list(range(len(weights)))
    if cross:
        fold = np.random.default_rng(seed).permutation(len(scores)) % 2 == 0
        named = [_cross_validated_named(rule_values(scores, margins, w), correct, fold, target_precision)
                 for w in weights]
        order.sort(key=lambda i: (-named[i], weights[i]))  # ties: the simpler rule
    fitted: list[tuple[int, float, DecisionRule]] = []
    error: CalibrationError | None = None
    for i in order:
        values = rule_values(scores, margins, weights[i])
        try:
            threshold = choose_threshold(values, correct, target_precision)
        except CalibrationError as exc:
            error = error or exc
            continue
        rule = DecisionRule(threshold, weights[i])
        if cross:
            return rule  # the best cross-validated weight that can be fitted on all the photos
        fitted.append((int(np.sum(correct & (values >= threshold))), -weights[i], rule))
    if not fitted:
        raise error or CalibrationError("no labelled photos to calibrate on")
    return max(fitted, key=lambda item: item[:2])[2]


def _cross_validated_named(values: np.ndarray, correct: np.ndarray, fold: np.ndarray, target: float) -> int:
    """Photos named right on each half at the threshold chosen on the other half."""
    named = 0
    for fit, test in ((fold, ~fold), (~fold, fold)):
        try:
            threshold = choose_threshold(values[fit], correct[fit], target)
        except CalibrationError:
            continue
        named += int(np.sum(correct[test] & (values[test] >= threshold)))
    return named


def report(rule: DecisionRule, scores: np.ndarray, margins: np.ndarray, predicted_right: np.ndarray,
           known: np.ndarray) -> CalibrationReport:
    """Count what `rule` does on labelled photos. predicted_right: the best product is the photo's own."""
    accepted = rule_values(scores, margins, rule.margin_weight) >= rule.threshold
    predicted_right, known = np.asarray(predicted_right, dtype=bool), np.asarray(known, dtype=bool)
    return CalibrationReport(
        photos=int(len(accepted)),
        known=int(known.sum()),
        named_right=int(np.sum(accepted & known & predicted_right)),
        named_wrong=int(np.sum(accepted & known & ~predicted_right)),
        known_rejected=int(np.sum(~accepted & known)),
        unknown=int(np.sum(~known)),
        unknown_rejected=int(np.sum(~accepted & ~known)),
    )


# Guard rails of an explicit calibration (the numbers say when a threshold stops meaning anything).
MIN_PHOTOS = 10  # below this, refuse: one photo moves the threshold
FEW_PHOTOS = 50  # below this, warn: the precision reached is a guess (+-7 points at 50 photos)
OWN_PHOTO_SCORE = 0.9995  # a photo the catalog holds finds itself at cosine ~1
MIN_NAMED_SHARE = 0.05  # refuse a rule naming fewer of the known photos right than this
LOW_NAMED_SHARE = 0.5


def guard_calibration(result: CalibrationReport, scores: np.ndarray, right: np.ndarray,
                      known: np.ndarray) -> tuple[list[str], list[str]]:
    """(reasons to refuse the rule, warnings) for a calibration on labelled photos."""
    refusals, warnings = [], []
    own = int(np.sum(known & right & (np.asarray(scores) >= OWN_PHOTO_SCORE)))
    if result.photos < MIN_PHOTOS:
        refusals.append(f"{result.photos} photo(s) are too few to calibrate on (at least {MIN_PHOTOS}; "
                        f"{FEW_PHOTOS} or more give a threshold to trust)")
    elif result.photos < FEW_PHOTOS:
        warnings.append(f"only {result.photos} photos: the precision reached is a rough estimate; use "
                        f"{FEW_PHOTOS} or more")
    if result.known == 0:
        refusals.append("none of the photos is of a product in the catalog")
    elif own * 2 >= result.known:
        refusals.append(f"{own} of {result.known} photos of known products are the catalog's own photos (they "
                        "match a catalog image exactly): calibrate on other photos of the products")
    elif own:
        warnings.append(f"{own} photo(s) are the catalog's own (an exact match): they make the rule look better")
    if result.known:
        share = result.named_right / result.known
        if share < MIN_NAMED_SHARE:
            refusals.append(f"the rule would name only {result.named_right} of {result.known} known photos right: "
                            "it would answer unknown almost always; lower the target precision or add catalog photos")
        elif share < LOW_NAMED_SHARE:
            warnings.append(f"the rule names only {result.named_right} of {result.known} known photos right")
    if result.unknown == 0:
        warnings.append("no photos of products outside the catalog: how often unknown products are rejected is "
                        "not measured (add a `_unknown` folder, or list lines with an empty product id)")
    return refusals, warnings
