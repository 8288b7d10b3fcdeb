"""Frame sources: a camera index, a video file, a stream URL (`open_source`), and the reconnect backoff.

Each source opens, reads one BGR frame at a time and closes; frames.py reads
them in their own thread. A video file is read losslessly unless `pace` plays
it like a live camera, at `pace` times its frame rate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# FFmpeg prints every damaged packet to stderr from C; unreadable frames are
# counted and reported here instead. Read when the first capture opens.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from snapmatch.sdk.errors import (
    InvalidArgumentError,
    VideoSourceError,  # noqa: E402
)

log = logging.getLogger("snapmatch.watch")

MAX_BAD_READS = 10  # unreadable frames in a row before a file is taken to end there
NETWORK_TIMEOUT_MS = 5000  # a stalled stream fails a read after this, instead of hanging
DEFAULT_FPS = 30.0  # for pacing a file whose container does not declare a frame rate


@dataclass(frozen=True)
class Backoff:
    """How a dropped stream is reconnected: waits of initial_s, doubling up to maximum_s, `attempts` times."""

    initial_s: float = 0.5
    maximum_s: float = 8.0
    attempts: int = 6

    def delays(self) -> list[float]:
        return [min(self.maximum_s, self.initial_s * 2**i) for i in range(self.attempts)]


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame and where it sits in its source."""

    index: int  # position in the source, counting frames that were dropped
    timestamp: float  # seconds into the stream: video time for files, since the first frame for live sources
    image: np.ndarray  # (H, W, 3) uint8 BGR
    captured_at: float  # time.monotonic() when it was read (for a paced file: when it was due)


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own warnings while probing a source: a failed open is reported as one clear error."""
    try:
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # builds without the logging utilities
        yield
        return
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


class VideoSource:
    """Base of the sources: open(), read() until it returns None, close()."""

    name = "video"
    live = True  # frames arrive on their own clock: stale ones are dropped, not queued
    fps: float | None = None
    pace: float | None = None  # files only: play at pace x fps
    corrupt_frames = 0
    reconnects = 0

    def open(self) -> None:
        raise NotImplementedError

    def read(self, stop: threading.Event) -> np.ndarray | None:
        """The next frame, or None at the end (or when `stop` is set while waiting)."""
        raise NotImplementedError

    def timestamp(self, index: int, started: float) -> float:
        return time.monotonic() - started

    _capture: cv2.VideoCapture | None = None

    def _opened(self) -> cv2.VideoCapture:
        if self._capture is None:
            raise VideoSourceError(f"{getattr(self, 'name', 'the video source')} is not open")
        return self._capture

    def close(self) -> None:
        capture = getattr(self, "_capture", None)
        if capture is not None:
            capture.release()
            self._capture = None


class CameraSource(VideoSource):
    """A local camera by index (0: the first one)."""

    def __init__(self, index: int) -> None:
        if index < 0:
            raise VideoSourceError(f"camera index must be 0 or more, not {index}")
        self.index = index
        self.name = f"camera {index}"
        self._capture = None

    def open(self) -> None:
        if sys.platform.startswith("linux") and not Path(f"/dev/video{self.index}").exists():
            found = sorted(p.name for p in Path("/dev").glob("video*"))
            available = f"cameras here: {', '.join(found)}" if found else "this machine has no camera"
            raise VideoSourceError(f"camera {self.index} does not exist (no /dev/video{self.index}; {available})")
        with _quiet_opencv():
            capture = cv2.VideoCapture(self.index)
        if not capture.isOpened():
            raise VideoSourceError(f"camera {self.index} cannot be opened: is another program using it?")
        self._capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None

    def read(self, stop: threading.Event) -> np.ndarray | None:
        for _ in range(MAX_BAD_READS):
            ok, image = self._opened().read()
            if ok and image is not None:
                return image
            self.corrupt_frames += 1
        raise VideoSourceError(f"{self.name} stopped delivering frames (unplugged?)")


class FileSource(VideoSource):
    """A video file, decoded every frame (pace=None) or played like a camera at pace x its frame rate."""

    def __init__(self, path: str | os.PathLike, *, pace: float | None = None) -> None:
        if pace is not None and pace <= 0:
            raise InvalidArgumentError(f"pace must be above 0 (1: real time), not {pace}")
        self.path = Path(path)
        self.name = f"video {self.path}"
        self.pace = pace
        self.live = pace is not None
        self.frame_count = 0
        self._capture = None
        self._pending: np.ndarray | None = None
        self._position = 0

    def open(self) -> None:
        if not self.path.exists():
            raise VideoSourceError(f"video file not found: {self.path}")
        if not self.path.is_file():
            raise VideoSourceError(f"video path is not a file: {self.path}")
        with _quiet_opencv():
            capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise VideoSourceError(f"cannot open video {self.path}: not a video file OpenCV can decode")
        self._capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and np.isfinite(fps) and fps > 0 else None
        self.frame_count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        # Read the first frame now: a file that opens but decodes nothing fails here, before any watching.
        self._pending = self.read(threading.Event())
        if self._pending is None:
            raise VideoSourceError(f"video {self.path} has no readable frame (empty, truncated or corrupt)")

    def read(self, stop: threading.Event) -> np.ndarray | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        for bad in range(MAX_BAD_READS + 1):
            ok, image = self._opened().read()
            if ok and image is not None:
                if bad:
                    self.corrupt_frames += bad
                    log.warning("%s: skipped %d unreadable frame(s) before frame %d", self.name, bad, self._position)
                self._position += 1
                return image
            if self.frame_count and self._position + bad >= self.frame_count:
                return None  # the normal end
        if self._position == 0:
            raise VideoSourceError(f"video {self.path} has no readable frame (empty, truncated or corrupt)")
        log.warning("%s ended early, after frame %d of %d: the rest is truncated or unreadable",
                    self.name, self._position, self.frame_count)
        return None

    def timestamp(self, index: int, started: float) -> float:
        return index / (self.fps or DEFAULT_FPS)


class UrlSource(VideoSource):
    """A network stream (rtsp://, http://...): reconnected with exponential backoff when it drops."""

    def __init__(self, url: str, *, backoff: Backoff | None = None) -> None:
        self.url = url
        self.name = f"stream {redact(url)}"
        self.backoff = backoff or Backoff()
        self._capture = None
        self._pending: np.ndarray | None = None

    def _connect(self):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS]
        with _quiet_opencv():
            capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def open(self) -> None:
        self._capture = self._connect()
        if self._capture is None:
            raise VideoSourceError(f"cannot open {self.name}: unreachable, refused, or not a video stream")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and np.isfinite(fps) and fps > 0 else None
        ok, self._pending = self._opened().read()
        if not ok or self._pending is None:
            self.close()
            raise VideoSourceError(f"{self.name} opened but delivers no frames")

    def read(self, stop: threading.Event) -> np.ndarray | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, image = self._opened().read()
        if ok and image is not None:
            return image
        return self._reconnect(stop)

    def _reconnect(self, stop: threading.Event) -> np.ndarray | None:
        self.close()
        delays = self.backoff.delays()
        for attempt, delay in enumerate(delays, start=1):
            log.warning("%s dropped; reconnecting in %.1f s (attempt %d of %d)", self.name, delay, attempt, len(delays))
            if stop.wait(delay):
                return None
            self._capture = self._connect()
            if self._capture is not None:
                ok, image = self._opened().read()
                if ok and image is not None:
                    self.reconnects += 1
                    log.warning("%s reconnected", self.name)
                    return image
                self.close()
        raise VideoSourceError(f"{self.name} was lost: {len(delays)} reconnect attempts over {sum(delays):.1f} s failed")


def redact(url: str) -> str:
    """A URL without its password, for messages (rtsp://user:secret@host -> rtsp://user:***@host)."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", url)


def open_source(source: int | str | os.PathLike, *, pace: float | None = None,
                backoff: Backoff | None = None) -> VideoSource:
    """Open a camera (an int), a stream (a string with "://") or a video file; VideoSourceError if it cannot be."""
    if isinstance(source, bool):
        raise TypeError("source must be a camera index, a video path or a stream URL")
    if isinstance(source, int):
        opened: VideoSource = CameraSource(source)
    elif "://" in os.fspath(source):
        opened = UrlSource(os.fspath(source), backoff=backoff)
    else:
        opened = FileSource(source, pace=pace)
    if pace is not None and not isinstance(opened, FileSource):
        raise InvalidArgumentError(f"pace applies to video files only; {opened.name} runs on its own clock")
    opened.open()
    return opened
