"""The watch loop: newest frame -> region of interest -> motion gate -> lookup -> vote -> events.

    >>> with search.watch("counter.avi") as watch:
    ...     for event in watch:
    ...         print(event.to_json())
    >>> watch.stats.to_dict()

Frames are read in their own thread (`frames.FrameReader`): on a live source
the loop always takes the newest frame and stale ones are dropped, so a slow
lookup falls behind by at most one frame, never by a growing queue.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from snapmatch.sdk.catalog.calibration import DecisionRule
from snapmatch.sdk.errors import InvalidArgumentError, RegionError, VideoSourceError
from snapmatch.sdk.types import Match
from snapmatch.sdk.video.frames import FrameReader
from snapmatch.sdk.video.sources import Backoff, Frame, open_source
from snapmatch.sdk.video.motion import MotionGate
from snapmatch.sdk.video.voting import Voter, VotingConfig, WatchEvent

if TYPE_CHECKING:
    from snapmatch.sdk.product_search import ProductSearch

Region = tuple[int, int, int, int]  # x, y, width, height in pixels
POLL_S = 0.5  # how often a waiting loop checks for stop()


@dataclass
class WatchStats:
    """What the loop did; `fps` is frames handled per second of wall time, `lookup_fps` lookups per second."""

    source: str
    frames_read: int = 0  # decoded by the reader thread
    frames_dropped: int = 0  # replaced by a newer frame before the loop took them (live sources only)
    frames_seen: int = 0  # taken by the loop
    looked_up: int = 0  # embedded and searched
    skipped_motion: int = 0  # unchanged since the last lookup: its answer was reused
    skipped_every: int = 0  # left out by every=N
    corrupt_frames: int = 0  # unreadable frames the source skipped
    reconnects: int = 0  # times a dropped stream came back
    elapsed_s: float = 0.0
    lookup_s: float = 0.0  # wall time spent inside lookups
    events: int = 0

    @property
    def fps(self) -> float:
        return self.frames_seen / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def lookup_fps(self) -> float:
        return self.looked_up / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def lookup_ms(self) -> float:
        return 1000.0 * self.lookup_s / self.looked_up if self.looked_up else 0.0

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "fps": round(self.fps, 2),
            "lookup_fps": round(self.lookup_fps, 2),
            "lookup_ms": round(self.lookup_ms, 2),
            "frames_read": self.frames_read,
            "frames_dropped": self.frames_dropped,
            "frames_seen": self.frames_seen,
            "looked_up": self.looked_up,
            "skipped_motion": self.skipped_motion,
            "skipped_every": self.skipped_every,
            "corrupt_frames": self.corrupt_frames,
            "reconnects": self.reconnects,
            "events": self.events,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class WatchStep:
    """One frame handled by the loop, for apps that draw on every frame."""

    frame: Frame
    best: Match | None  # best product of the latest lookup, any score (reused on frames the gate skipped)
    looked_up: bool  # this frame was embedded and searched
    voted: bool  # this frame cast a vote (looked up, or unchanged since a lookup)
    current: Match | None  # the product reported in view after this frame
    events: tuple[WatchEvent, ...] = field(default=())
    final: bool = False  # the step after the last frame, carrying the end-of-stream `gone`


class Watch:
    """Watch a camera, video file or stream and report the products that come and go.

    Iterate it for WatchEvents, iterate `steps()` for every frame, or call
    `run(on_event)`. It runs once; `stop()` (any thread) ends it cleanly, and
    the product still in view is then reported gone.
    """

    def __init__(
        self,
        search: "ProductSearch",
        source: int | str | os.PathLike,
        *,
        pace: float | None = None,
        every: int = 1,
        roi: Region | None = None,
        motion_threshold: float | None = 0.01,
        voting: VotingConfig | None = None,
        threshold: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if every < 1:
            raise InvalidArgumentError(f"every must be 1 or more (look up every N-th frame), not {every}")
        self.roi = check_region(roi) if roi is not None else None
        self.every = every
        rule = search.rule
        # An explicit threshold replaces the catalog's, under the catalog's margin weight.
        self.rule = rule if threshold is None else DecisionRule(threshold, rule.margin_weight)
        self.threshold = self.rule.threshold
        self._search = search
        self._gate = MotionGate(motion_threshold) if motion_threshold else None
        self._voter = Voter(voting)
        self._source = open_source(source, pace=pace, backoff=backoff)
        self._reader = FrameReader(self._source)
        self._stop = threading.Event()
        self._started = False
        self.stats = WatchStats(self._source.name)

    @property
    def source_name(self) -> str:
        return self._source.name

    @property
    def started_at(self) -> float | None:
        """time.monotonic() of the source's first frame (a paced file releases frame i at started_at + i / fps)."""
        return self._reader.started_at

    @property
    def fps(self) -> float | None:
        """The source's declared frame rate, when it has one."""
        return self._source.fps

    def __iter__(self) -> Iterator[WatchEvent]:
        for step in self.steps():
            yield from step.events

    def run(self, on_event: Callable[[WatchEvent], None], *,
            on_step: Callable[[WatchStep], None] | None = None) -> WatchStats:
        """Call on_event for every event (and on_step for every frame) until the source ends or stop()."""
        for step in self.steps():
            if on_step is not None:
                on_step(step)
            for event in step.events:
                on_event(event)
        return self.stats

    def stop(self) -> None:
        """End the loop after the current frame (safe from another thread or a callback)."""
        self._stop.set()

    def steps(self) -> Iterator[WatchStep]:
        if self._started:
            raise RuntimeError("a Watch runs once: start a new one with ProductSearch.watch()")
        self._started = True
        self._reader.start()
        started = time.perf_counter()
        best: Match | None = None
        last: Frame | None = None
        last_considered: int | None = None
        lost: VideoSourceError | None = None
        try:
            while not self._stop.is_set():
                try:
                    frame = self._reader.get(timeout=POLL_S)
                except TimeoutError:
                    continue
                except VideoSourceError as exc:  # a stream that could not be reconnected
                    lost = exc
                    break
                if frame is None:
                    break
                last = frame
                self.stats.frames_seen += 1
                if last_considered is not None and frame.index - last_considered < self.every:
                    self.stats.skipped_every += 1
                    yield WatchStep(frame, best, False, False, self._voter.current)
                    continue
                last_considered = frame.index
                image = crop(frame.image, self.roi, self._source.name)
                looked_up = self._gate is None or self._gate.changed(image) or self.stats.looked_up == 0
                if looked_up:
                    best = self._lookup(image)
                else:
                    self.stats.skipped_motion += 1  # unchanged: the last answer still holds
                accepted = best if best is not None and self.rule.accepts(best.score, best.margin) else None
                events = tuple(self._voter.vote(accepted, frame.index, frame.timestamp))
                self.stats.events += len(events)
                self._sync_stats(started)
                yield WatchStep(frame, best, looked_up, True, self._voter.current, events)
        finally:
            self._reader.stop()
            self._sync_stats(started)
        # The source ended, was lost, or stop() was called: the product in view is reported gone.
        if last is not None:
            yield from self._finish(last, best)
        if lost is not None:
            raise lost

    def _finish(self, last: Frame, best: Match | None) -> Iterator[WatchStep]:
        events = tuple(self._voter.finish(last.index, last.timestamp))
        self.stats.events += len(events)
        if events:
            yield WatchStep(last, best, False, False, None, events, final=True)

    def _lookup(self, image: np.ndarray) -> Match | None:
        start = time.perf_counter()
        results = self._search.search(image, k=1)
        self.stats.lookup_s += time.perf_counter() - start
        self.stats.looked_up += 1
        return results[0] if results else None

    def _sync_stats(self, started: float) -> None:
        stats, reader = self.stats, self._reader
        stats.frames_read = reader.frames_read
        stats.frames_dropped = reader.dropped
        stats.corrupt_frames = self._source.corrupt_frames
        stats.reconnects = self._source.reconnects
        stats.elapsed_s = time.perf_counter() - started

    def close(self) -> None:
        """Release the source (needed only when the watch was never run to its end)."""
        self.stop()
        if self._started:
            self._reader.stop()  # the reader releases the source when it ends
        else:
            self._source.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_region(roi) -> Region:
    """A region (x, y, width, height) of non-negative ints with a positive size, else RegionError."""
    try:
        x, y, width, height = (int(v) for v in roi)
    except (TypeError, ValueError):
        raise RegionError(f"region of interest must be x,y,width,height in pixels, not {roi!r}") from None
    if x < 0 or y < 0 or width < 1 or height < 1:
        raise RegionError(f"region of interest {x},{y},{width},{height} needs x, y >= 0 and a positive width and height")
    return x, y, width, height


def parse_region(text: str) -> Region:
    """'X,Y,W,H' as a region (what --roi takes)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        raise RegionError(f"region of interest must be X,Y,WIDTH,HEIGHT in whole pixels, not {text!r}")
    return check_region(parts)


def crop(image: np.ndarray, roi: Region | None, source_name: str = "the video") -> np.ndarray:
    if roi is None:
        return image
    x, y, width, height = roi
    frame_h, frame_w = image.shape[:2]
    if x + width > frame_w or y + height > frame_h:
        raise RegionError(
            f"region of interest {x},{y},{width},{height} does not fit in the {frame_w}x{frame_h} frames of {source_name}"
        )
    return image[y:y + height, x:x + width]
