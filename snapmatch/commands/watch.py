"""`snapmatch watch`: name the products a camera, video file or stream sees, live."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from pathlib import Path

import click

from snapmatch.commands.output import json_option, threads_option


@click.command()
@click.argument("catalog", type=click.Path(file_okay=False, path_type=Path))
@click.option("--camera", type=click.IntRange(min=0), default=None, help="Camera index (0: the first camera).")
@click.option("--video", type=click.Path(path_type=Path), default=None, help="A video file.")
@click.option("--url", default=None, help="A stream URL (rtsp://, http://...); reconnected with backoff if it drops.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Look up every N-th frame only.")
@click.option("--pace", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Play a video file like a live camera, at PACE x its frame rate (1: real time); "
                   "stale frames are then dropped. Default: every frame, as fast as lookup goes.")
@click.option("--roi", default=None, metavar="X,Y,W,H", help="Look only inside this box (pixels).")
@click.option("--motion-threshold", type=click.FloatRange(0, 1, max_open=True), default=0.01, show_default=True,
              help="Skip lookup unless this share of the picture changed since the last lookup (0: always look).")
@click.option("--window", type=click.IntRange(min=1), default=5, show_default=True,
              help="Votes (looked-up frames) remembered.")
@click.option("--min-votes", type=click.IntRange(min=1), default=3, show_default=True,
              help="Wins in the window for a product to be reported.")
@click.option("--keep-votes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Below this many wins in the window, a reported product is gone.")
@click.option("--threshold", type=float, default=None, help="Score a frame's best match needs (default: the catalog's).")
@click.option("--show", is_flag=True, help="Draw the product and score on a preview window (needs a display).")
@threads_option
@json_option
def watch(catalog: Path, camera: int | None, video: Path | None, url: str | None, every: int, pace: float | None,
          roi: str | None, motion_threshold: float, window: int, min_votes: int, keep_votes: int,
          threshold: float | None, show: bool, threads: int | None, as_json: bool) -> None:
    """Watch a camera, video file or stream and report products as they appear and go.

    A product is reported when it wins MIN_VOTES of the last WINDOW looked-up
    frames with a score above the catalog's threshold, and reported gone when
    it stops winning. Empty scenes and unknown products report nothing.
    With --json, every event is a JSON line on stdout and a final
    {"event": "summary"} line gives frames per second and dropped frames.
    Ctrl-C ends cleanly, with the summary.

    \b
    snapmatch watch my-catalog --camera 0
    snapmatch watch my-catalog --video counter.mp4 --json
    snapmatch watch my-catalog --url rtsp://10.0.0.7/stream --every 2 --roi 100,50,400,400
    """
    from snapmatch.sdk.product_search import ProductSearch
    from snapmatch.sdk.video.voting import VotingConfig
    from snapmatch.sdk.video.watch import parse_region

    chosen = [option for option, value in (("--camera", camera), ("--video", video), ("--url", url)) if value is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --camera N, --video FILE or --url URL"
                               + (f" (got {' and '.join(chosen)})" if chosen else ""))
    if pace is not None and video is None:
        raise click.UsageError("--pace applies to --video only: cameras and streams run on their own clock")
    region = parse_region(roi) if roi else None
    voting = VotingConfig(window=window, min_votes=min_votes, keep_votes=keep_votes)
    preview = None
    if show:
        from snapmatch.commands.preview import Preview

        preview = Preview(threshold=0.0, roi=region)  # says "no display available: ..." before anything starts
    source = camera if camera is not None else (url if url is not None else video)
    assert source is not None  # click's checks above demand one of the three
    with ProductSearch.open(catalog, readonly=True, threads=threads) as search:
        if preview is not None:
            preview.threshold = search.threshold if threshold is None else threshold
        with search.watch(source, pace=pace, every=every, roi=region, motion_threshold=motion_threshold or None,
                          voting=voting, threshold=threshold) as watcher, _warnings_on_stderr(), _stop_on_ctrl_c(watcher):
            try:
                for step in watcher.steps():
                    for event in step.events:
                        click.echo(event.to_json() if as_json else _describe(event))
                    if preview is not None and not step.final and not preview.show(step):
                        watcher.stop()
            finally:
                if preview is not None:
                    preview.close()
                _summary(watcher.stats, as_json)


def _describe(event) -> str:
    name = f"  {event.name}" if event.name and event.name != event.product_id else ""
    return (f"{event.timestamp:8.2f} s  frame {event.frame_index:<6} {event.kind:<8} {event.product_id}{name}"
            f"  ({event.score:.3f})")


def _summary(stats, as_json: bool) -> None:
    data = stats.to_dict()
    if as_json:
        click.echo(json.dumps({"event": "summary", **data}))
        return
    click.echo(f"{data['source']}: {data['frames_seen']} frames in {data['elapsed_s']:.1f} s ({data['fps']:.1f} fps), "
               f"{data['looked_up']} looked up ({data['lookup_fps']:.1f}/s, {data['lookup_ms']:.1f} ms each), "
               f"{data['frames_dropped']} dropped, {data['skipped_motion']} unchanged, "
               f"{data['skipped_every']} skipped by --every"
               + (f", {data['corrupt_frames']} unreadable" if data["corrupt_frames"] else "")
               + (f", {data['reconnects']} reconnect(s)" if data["reconnects"] else ""), err=True)


@contextlib.contextmanager
def _warnings_on_stderr():
    """The sources' warnings (unreadable frames, reconnects) as `warning: ...` lines on stderr."""

    class Echo(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            click.echo(f"warning: {record.getMessage()}", err=True)

    logger, handler = logging.getLogger("snapmatch.watch"), Echo(logging.WARNING)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextlib.contextmanager
def _stop_on_ctrl_c(watcher):
    """Ctrl-C stops the watch after the current frame, so the summary is still printed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: watcher.stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
