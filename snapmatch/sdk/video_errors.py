"""Errors of live and recorded video: sources, regions of interest, preview windows, keyframes."""

from __future__ import annotations

from snapmatch.sdk.errors import SnapmatchError


class VideoSourceError(SnapmatchError):
    """A camera, video file or stream cannot be opened, or was lost and could not be reconnected."""


class RegionError(SnapmatchError, ValueError):
    """A region of interest is malformed or does not fit inside the video's frames."""


class DisplayError(SnapmatchError):
    """A preview window was asked for, but this process has no display (or OpenCV has no GUI)."""


class NoUsableFramesError(SnapmatchError):
    """A video holds no frame sharp and readable enough to add to the catalog."""
