"""calibration.choose_threshold against a hand-written brute-force reference.

The contract (its docstring): among the thresholds t for which "accept every
photo scoring >= t" reaches the target precision, pick the one that names the
most products right; among those, the highest (it accepts the fewest wrong
answers). The reference tries every distinct score as t, literally.
"""

from __future__ import annotations

import numpy as np
import pytest

from snapmatch.sdk.catalog.calibration import choose_threshold
from snapmatch.sdk.errors import CalibrationError, SnapmatchError

TARGETS = (0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


def reference_threshold(scores, correct, target):
    """Brute force: every distinct score is a candidate threshold; None when none reaches `target`."""
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    best = None  # (names right, threshold)
    for t in np.unique(scores):
        accepted = scores >= t
        right = int(correct[accepted].sum())
        precision = right / int(accepted.sum())
        if precision >= target - 1e-12 and right > 0:
            if best is None or (right, t) > best:
                best = (right, t)
    return None if best is None else float(best[1])


def random_case(seed: int, *, ties: bool):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    if ties:
        scores = rng.integers(0, 8, n) / 8.0  # few distinct values: many ties
    else:
        scores = rng.uniform(-1.0, 1.0, n)
    # Right answers tend to score higher, as with a real model.
    correct = rng.uniform(size=n) < np.clip(0.5 + scores / 2, 0.05, 0.95)
    target = float(rng.choice(TARGETS))
    return scores, correct, target


def check_against_reference(scores, correct, target):
    expected = reference_threshold(scores, correct, target)
    if expected is None:
        with pytest.raises(CalibrationError):
            choose_threshold(scores, correct, target)
    else:
        assert choose_threshold(scores, correct, target) == expected


@pytest.mark.parametrize("block", range(4))
def test_matches_brute_force_reference_without_ties(block):
    for seed in range(block * 100, block * 100 + 100):
        scores, correct, target = random_case(seed, ties=False)
        check_against_reference(scores, correct, target)


def test_matches_brute_force_reference_with_ties():
    for seed in range(400):
        scores, correct, target = random_case(seed, ties=True)
        check_against_reference(scores, correct, target)


def test_tied_run_ending_with_a_wrong_photo_is_a_valid_cut():
    assert choose_threshold([0.9, 0.8, 0.8], [True, True, False], 0.6) == 0.8


def test_result_does_not_depend_on_the_order_of_photos_without_ties():
    for seed in range(50):
        scores, correct, target = random_case(seed, ties=False)
        if reference_threshold(scores, correct, target) is None:
            continue
        expected = choose_threshold(scores, correct, target)
        order = np.random.default_rng(seed).permutation(len(scores))
        assert choose_threshold(scores[order], correct[order], target) == expected


def test_a_tie_is_accepted_whole_so_cutting_inside_it_is_not_allowed():
    # Accepting 0.8 accepts all three photos tied at 0.8 (precision 2/4): too low for 0.75.
    for correct in ([True, True, False, False], [True, False, False, True], [True, False, True, False]):
        assert choose_threshold([0.9, 0.8, 0.8, 0.8], correct, 0.75) == 0.9


def test_picks_the_lowest_precise_enough_score_of_a_right_answer():
    scores = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6]
    correct = [True, True, False, True, False, False]
    assert choose_threshold(scores, correct, 0.75) == 0.8  # 3 right of 4 accepted
    assert choose_threshold(scores, correct, 1.0) == 0.9
    assert choose_threshold(scores, correct, 0.5) == 0.8  # 0.6 also reaches 0.5 but names no more products


def test_threshold_is_one_of_the_scores_and_a_float():
    scores, correct, target = random_case(3, ties=False)
    threshold = choose_threshold(scores, correct, 0.5)
    assert isinstance(threshold, float)
    assert threshold in scores


def test_no_threshold_reaches_the_target_raises_calibration_error():
    with pytest.raises(CalibrationError, match="no threshold reaches precision"):
        choose_threshold([0.9, 0.8, 0.7], [False, True, False], 0.99)
    with pytest.raises(CalibrationError):
        choose_threshold([0.9, 0.8], [False, False], 0.5)  # nothing right at all
    with pytest.raises(CalibrationError):
        choose_threshold([0.9, 0.9], [True, False], 1.0)  # the right answer is tied with a wrong one
    assert issubclass(CalibrationError, SnapmatchError)


def test_no_labelled_photos_raises_calibration_error():
    with pytest.raises(CalibrationError, match="no labelled photos"):
        choose_threshold([], [], 0.9)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01])
def test_target_outside_zero_one_is_a_value_error(target):
    with pytest.raises(ValueError):
        choose_threshold([0.9], [True], target)
