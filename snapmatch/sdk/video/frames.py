"""Reading a frame source in its own thread: the reader hands frames to the lookup loop through a one-slot buffer.

A live source overwrites a frame the loop has not taken yet (`FrameSlot`) and
counts it as dropped, so the loop always works on the newest frame and
nothing queues up however slow lookup is. A video file is not a camera: by
default it is read losslessly (the reader waits for the loop, every frame is
seen); a paced file drops frames the way a camera would.
"""

from __future__ import annotations

import threading
import time

from snapmatch.sdk.errors import VideoSourceError
from snapmatch.sdk.video.sources import DEFAULT_FPS, Frame, VideoSource

class FrameSlot:
    """Hands frames from the reader thread to the loop, holding at most one.

    drop_stale=True (live sources): put() replaces an untaken frame and counts
    it as dropped. drop_stale=False (files): put() waits until the frame was taken.
    """

    def __init__(self, *, drop_stale: bool) -> None:
        self.drop_stale = drop_stale
        self.dropped = 0
        self._frame: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame) -> bool:
        """False when the slot was closed (the loop stopped)."""
        with self._cond:
            while not self.drop_stale and self._frame is not None and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame; None when closed and empty. Raises TimeoutError after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout):
                raise TimeoutError
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class FrameReader:
    """Reads a source in a daemon thread into a FrameSlot; errors surface in the consumer through get()."""

    def __init__(self, source: VideoSource) -> None:
        self.source = source
        self.frames_read = 0
        self.error: BaseException | None = None
        self.started_at: float | None = None  # time.monotonic() of the first frame (pacing starts there)
        self._slot = FrameSlot(drop_stale=source.live)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"snapmatch-reader ({source.name})", daemon=True)

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def start(self) -> None:
        self._thread.start()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, None at the end of the source; re-raises the reader's error."""
        frame = self._slot.get(timeout)
        if frame is None and self.error is not None:
            error, self.error = self.error, None
            raise error
        return frame

    def stop(self) -> None:
        self._stop.set()
        self._slot.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        source = self.source
        interval = 1.0 / ((source.fps or DEFAULT_FPS) * source.pace) if source.pace else 0.0
        try:
            while not self._stop.is_set():
                image = source.read(self._stop)
                if image is None:
                    break
                now = time.monotonic()
                if self.started_at is None:
                    self.started_at = now
                index = self.frames_read
                if interval:
                    # Release frame i at its due time, as a camera would deliver it.
                    due = self.started_at + index * interval
                    if due > now and self._stop.wait(due - now):
                        break
                    now = max(now, due)
                self.frames_read += 1
                frame = Frame(index, source.timestamp(index, self.started_at), image, now)
                if not self._slot.put(frame):
                    break
        except VideoSourceError as exc:
            self.error = exc
        except Exception as exc:  # OpenCV and FFmpeg raise untyped errors mid-stream
            self.error = VideoSourceError(f"{source.name}: reading failed: {exc}")
        finally:
            source.close()
            self._slot.close()
