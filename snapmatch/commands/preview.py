"""A preview window for `snapmatch watch --show`: each frame with the product in view and its score.

opencv-python-headless (the runtime's OpenCV) has no GUI, and a kiosk or a
server often has no display: both are detected before watching starts and
reported as one DisplayError, instead of a crash on the first frame.
"""

from __future__ import annotations

import os
import re
import sys

import cv2
import numpy as np

from snapmatch.sdk.errors import DisplayError
from snapmatch.sdk.video.watch import Region, WatchStep

WINDOW = "snapmatch watch"
GREEN, GREY, YELLOW = (60, 200, 60), (200, 200, 200), (0, 215, 255)


def check_display() -> None:
    """Raise DisplayError naming why no preview window can be opened here."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if match and match.group(1).upper() == "NONE":
        raise DisplayError(
            "no display available: this OpenCV build has no GUI (opencv-python-headless); "
            "install opencv-python for --show, or watch without it"
        )
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayError("no display available: neither DISPLAY nor WAYLAND_DISPLAY is set; watch without --show")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        raise DisplayError(f"no display available: OpenCV cannot open a window ({str(exc).strip().splitlines()[-1]})") from None


def draw(step: WatchStep, *, threshold: float, roi: Region | None = None) -> np.ndarray:
    """A copy of the step's frame with the reported product (or the best guess) written on it."""
    image = step.frame.image.copy()
    if roi is not None:
        x, y, width, height = roi
        cv2.rectangle(image, (x, y), (x + width - 1, y + height - 1), YELLOW, 1)
    if step.current is not None:
        score = step.best.score if step.best is not None and step.best.product_id == step.current.product_id else step.current.score
        text, colour = f"{step.current.name or step.current.product_id}  {score:.2f}", GREEN
    elif step.best is not None:
        text, colour = f"? {step.best.product_id} {step.best.score:.2f} < {threshold:.2f}", GREY
    else:
        text, colour = "(empty catalog)", GREY
    scale = max(0.4, image.shape[1] / 900)
    cv2.rectangle(image, (0, 0), (image.shape[1], int(34 * scale + 8)), (0, 0, 0), -1)
    cv2.putText(image, text, (6, int(26 * scale + 2)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 2, cv2.LINE_AA)
    return image


class Preview:
    """The window; show() returns False once the user pressed q or Esc."""

    def __init__(self, *, threshold: float, roi: Region | None = None) -> None:
        check_display()
        self.threshold = threshold
        self.roi = roi

    def show(self, step: WatchStep) -> bool:
        cv2.imshow(WINDOW, draw(step, threshold=self.threshold, roi=self.roi))
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(WINDOW)
        except cv2.error:
            pass
