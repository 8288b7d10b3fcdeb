"""Choose the identify() threshold that reaches a target precision on labelled photos."""

from __future__ import annotations

import numpy as np

from snapmatch.sdk.errors import CalibrationError


def choose_threshold(scores: np.ndarray, correct: np.ndarray, target_precision: float) -> float:
    """The lowest score threshold whose accepted answers reach `target_precision`.

    scores: the best match's score per labelled photo; correct: whether that
    best match names the photo's true product (always False for a photo of a
    product that is not in the catalog). Lowest, because among thresholds that
    are precise enough it names the most products.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError("target_precision must be in (0, 1]")
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
