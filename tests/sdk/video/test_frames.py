"""Frame sources and the newest-frame reader: real encoded files, damaged files, missing devices, streams."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from snapmatch.sdk.video.frames import FrameReader, FrameSlot
from snapmatch.sdk.video.sources import Backoff, Frame, open_source, redact
from snapmatch.sdk.errors import VideoSourceError
from tests.video_factory import corrupt_frames, counter_sequence, empty, write_video

FAST = Backoff(initial_s=0.01, maximum_s=0.02, attempts=3)


@pytest.fixture()
def video(tmp_path):
    path = tmp_path / "scene.avi"
    labels = write_video(path, counter_sequence(6)[0])
    return path, len(labels)


def read_all(source, *, limit: int = 10_000) -> tuple[list[Frame], FrameReader]:
    reader = FrameReader(source)
    reader.start()
    frames = []
    try:
        while (frame := reader.get(timeout=10)) is not None and len(frames) < limit:
            frames.append(frame)
    finally:
        reader.stop()
    return frames, reader


def frame(index: int) -> Frame:
    return Frame(index, index / 10, np.zeros((2, 2, 3), np.uint8), 0.0)


def test_live_slot_keeps_only_the_newest_frame_and_counts_the_rest():
    slot = FrameSlot(drop_stale=True)
    for i in range(5):
        assert slot.put(frame(i))
    assert slot.get(timeout=1).index == 4 and slot.dropped == 4
    slot.close()
    assert slot.get(timeout=1) is None and not slot.put(frame(5))


def test_lossless_slot_makes_the_reader_wait():
    slot = FrameSlot(drop_stale=False)
    slot.put(frame(0))
    second = threading.Thread(target=slot.put, args=(frame(1),))
    second.start()
    time.sleep(0.05)
    assert second.is_alive()  # blocked until the first frame is taken
    assert slot.get(timeout=1).index == 0
    second.join(timeout=1)
    assert slot.get(timeout=1).index == 1 and slot.dropped == 0


def test_file_is_read_losslessly_with_video_timestamps(video):
    path, count = video
    source = open_source(path)
    assert not source.live and source.fps == 15.0 and source.frame_count == count
    frames, reader = read_all(source)
    assert [f.index for f in frames] == list(range(count))
    assert frames[15].timestamp == pytest.approx(1.0)
    assert reader.dropped == 0 and reader.frames_read == count


def test_paced_file_runs_on_the_clock_and_drops_what_a_slow_reader_misses(video):
    path, count = video
    source = open_source(path, pace=20.0)  # 300 frames per second
    reader = FrameReader(source)
    reader.start()
    seen = []
    while (f := reader.get(timeout=10)) is not None:
        seen.append(f.index)
        time.sleep(0.01)  # a lookup slower than the source
    # Kept up with the source: stale frames were dropped, never queued, and the last one seen is the last one.
    assert reader.frames_read == count and reader.dropped > count // 3
    assert len(seen) + reader.dropped == count and seen == sorted(seen) and seen[-1] == count - 1


def test_missing_and_undecodable_files_are_named(tmp_path):
    with pytest.raises(VideoSourceError, match="video file not found: .*nope.avi"):
        open_source(tmp_path / "nope.avi")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoSourceError, match="cannot open video .*junk.avi"):
        open_source(junk)
    with pytest.raises(VideoSourceError, match="not a file"):
        open_source(tmp_path)


def test_truncated_file_ends_cleanly(video, tmp_path, caplog):
    path, count = video
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="snapmatch.watch"):
        frames, reader = read_all(open_source(cut))
    assert 0 < len(frames) < count
    assert any("ended early" in r.getMessage() for r in caplog.records)


def test_damaged_frames_do_not_stop_the_file(video, tmp_path):
    path, count = video
    damaged = corrupt_frames(path, [10, 11, 30], out=tmp_path / "damaged.avi")
    frames, reader = read_all(open_source(damaged))
    # FFmpeg conceals or skips damaged JPEG frames; either way reading goes on to the end.
    assert len(frames) + reader.source.corrupt_frames >= count - 3 and frames[-1].index >= count - 4


def test_a_camera_that_does_not_exist_is_named():
    with pytest.raises(VideoSourceError, match="camera 57 "):
        open_source(57)


def test_pace_is_for_files_only():
    with pytest.raises(ValueError, match="pace applies to video files only"):
        open_source("http://127.0.0.1:9/stream", pace=1.0)


def test_unreachable_stream_is_an_error_not_a_wait():
    with pytest.raises(VideoSourceError, match=r"cannot open stream http://127\.0\.0\.1:9/live"):
        open_source("http://127.0.0.1:9/live")


def test_dropped_stream_reconnects(tmp_path):
    path = tmp_path / "loop.avi"
    write_video(path, [empty(10)])
    source = open_source(path.resolve().as_uri(), backoff=FAST)  # each end of the file is a dropped stream
    reader = FrameReader(source)
    reader.start()
    seen = []
    try:
        while reader.frames_read < 25:
            seen.append(reader.get(timeout=10).index)
    finally:
        reader.stop()
    assert source.reconnects >= 2
    # A stream is live: the loop may miss frames, but indexes keep counting across reconnects.
    assert seen == sorted(set(seen)) and len(seen) + reader.dropped <= reader.frames_read


def test_stream_that_stays_down_is_given_up_with_a_clear_error(tmp_path, caplog):
    path = tmp_path / "gone.avi"
    write_video(path, [empty(10)])
    source = open_source(path.resolve().as_uri(), backoff=FAST)
    path.unlink()  # the open stream plays to its end, then nothing answers any more
    reader = FrameReader(source)
    reader.start()
    with caplog.at_level(logging.WARNING, logger="snapmatch.watch"):
        with pytest.raises(VideoSourceError, match="was lost: 3 reconnect attempts"):
            while reader.get(timeout=10) is not None:
                pass
    assert sum("reconnecting in" in r.getMessage() for r in caplog.records) == 3


def test_passwords_stay_out_of_messages():
    assert redact("rtsp://admin:hunter2@10.0.0.7/live") == "rtsp://admin:***@10.0.0.7/live"
    assert redact("http://10.0.0.7:8080/x") == "http://10.0.0.7:8080/x"
