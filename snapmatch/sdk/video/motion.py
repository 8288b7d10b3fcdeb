"""Motion gate: skip lookups on frames that did not change since the last looked-up one.

A kiosk camera sees the same empty counter most of the time; embedding it
again gives the same answer. A frame is compared, as a small blurred
grayscale thumbnail, with the last frame that was looked up (not with the
previous frame, so slow drift adds up and is noticed); it counts as changed
when more than `threshold` of its thumbnail pixels moved by more than
`pixel_delta` grey levels. Sensor noise and JPEG artefacts stay below that.
"""

from __future__ import annotations

import cv2
import numpy as np

from snapmatch.sdk.errors import InvalidArgumentError

THUMB_WIDTH = 64


class MotionGate:
    """`changed(image)` is True when the image differs from the last one it said True for."""

    def __init__(self, threshold: float = 0.01, *, pixel_delta: int = 12) -> None:
        if not 0.0 <= threshold < 1.0:
            raise InvalidArgumentError(f"motion threshold is a share of pixels in [0, 1), not {threshold}")
        self.threshold = threshold
        self.pixel_delta = pixel_delta
        self._reference: np.ndarray | None = None

    def changed(self, image: np.ndarray) -> bool:
        thumb = thumbnail(image)
        if self._reference is None or self._reference.shape != thumb.shape:
            self._reference = thumb
            return True
        moved = np.count_nonzero(cv2.absdiff(thumb, self._reference) > self.pixel_delta) / thumb.size
        if moved > self.threshold:
            self._reference = thumb
            return True
        return False

    def reset(self) -> None:
        self._reference = None


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A 64-pixel-wide blurred grayscale copy: cheap to compare, blind to pixel noise."""
    height, width = image.shape[:2]
    size = (THUMB_WIDTH, max(1, round(height * THUMB_WIDTH / width)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)  # shrink first: colour conversion of a few pixels
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return cv2.GaussianBlur(gray, (3, 3), 0)
