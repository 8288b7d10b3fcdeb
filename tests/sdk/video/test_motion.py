"""The motion gate: unchanged frames are skipped, real changes (and slow drift) are not."""

from __future__ import annotations

import numpy as np
import pytest

from snapmatch.sdk.video.motion import MotionGate
from tests.video_factory import counter, demo_photos, render, held, empty


def noisy(image: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)


def test_sensor_noise_on_an_empty_counter_is_not_motion():
    gate = MotionGate()
    background = counter()
    assert gate.changed(noisy(background, 0))  # the first frame is always looked at
    assert not any(gate.changed(noisy(background, seed)) for seed in range(1, 30))


def test_a_product_entering_is_motion():
    gate = MotionGate()
    frames = [frame for frame, _ in render([empty(3), held(demo_photos()["banana"][0], "banana", 6, slide=3)])]
    decisions = [gate.changed(frame) for frame in frames]
    assert decisions[:3] == [True, False, False]
    assert any(decisions[3:])


def test_slow_drift_adds_up_against_the_last_looked_up_frame():
    gate = MotionGate()
    background = counter().astype(np.int16)
    assert gate.changed(background.astype(np.uint8))
    # +3 grey levels per frame: no single step moves a pixel past the 12-level delta, the sum does.
    decisions = [gate.changed(np.clip(background + 3 * i, 0, 255).astype(np.uint8)) for i in range(1, 8)]
    assert decisions[:4] == [False, False, False, False] and any(decisions[4:])


def test_threshold_is_checked():
    with pytest.raises(ValueError, match="share of pixels"):
        MotionGate(1.5)
