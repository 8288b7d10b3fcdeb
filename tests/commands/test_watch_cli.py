"""`snapmatch watch` and `snapmatch catalog add --video` as a user sees them."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from snapmatch.cli import cli
from tests.video_factory import build_demo_catalog, counter_sequence, demo_photos, held, write_video

OTHERS = ["arla-standard-milk", "oatly-oat-milk", "god-morgon-orange-juice", "red-bell-pepper",
          "yoggi-strawberry-yoghurt"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return build_demo_catalog(tmp_path_factory.mktemp("cli-watch") / "catalog")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    segments, order = counter_sequence(14)
    path = tmp_path_factory.mktemp("scene") / "counter.avi"
    return path, write_video(path, segments), order


def test_json_lines_name_the_products_in_order_then_a_summary(catalog, scene):
    path, labels, order = scene
    result = run("watch", catalog, "--video", path, "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    events, summary = lines[:-1], lines[-1]
    assert [(e["event"], e["product_id"]) for e in events] == [(k, p) for p in order for k in ("appeared", "gone")]
    assert set(events[0]) == {"event", "product_id", "name", "score", "frame_index", "timestamp"}
    assert events[0]["name"] == "Banana"
    assert summary["event"] == "summary" and summary["frames_seen"] == len(labels)
    assert summary["frames_dropped"] == 0 and summary["fps"] > 0 and summary["looked_up"] > 0


def test_text_output_and_summary_on_stderr(catalog, scene):
    path, _, _ = scene
    result = run("watch", catalog, "--video", path, "--every", "2", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert [line.split()[4] for line in result.stdout.splitlines()] == ["appeared", "gone"] * 3
    assert "appeared banana  Banana" in result.stdout
    assert "skipped by --every" in result.stderr and "fps" in result.stderr


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --camera N, --video FILE or --url URL"),
    (["--camera", "0", "--url", "rtsp://x/y"], "(got --camera and --url)"),
    (["--camera", "0", "--pace", "2"], "--pace applies to --video only"),
])
def test_usage_errors(catalog, args, message):
    result = run("watch", catalog, *args)
    assert result.exit_code == 2 and message in result.output


def test_bad_sources_are_one_clear_line(catalog, tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video" * 50)
    cases = [
        (["--camera", "57"], "error: camera 57 does not exist"),
        (["--video", tmp_path / "missing.avi"], f"error: video file not found: {tmp_path / 'missing.avi'}"),
        (["--video", junk], f"error: cannot open video {junk}: not a video file OpenCV can decode"),
        (["--url", "http://127.0.0.1:9/live"], "error: cannot open stream http://127.0.0.1:9/live"),
    ]
    for args, message in cases:
        result = run("watch", catalog, *args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(message) and len(result.output.strip().splitlines()) == 1
        assert "Traceback" not in result.output


def test_region_and_display_errors(catalog, scene):
    path, _, _ = scene
    result = run("watch", catalog, "--video", path, "--roi", "1,2,3")
    assert result.exit_code == 1 and result.output.startswith("error: region of interest must be X,Y,WIDTH,HEIGHT")
    result = run("watch", catalog, "--video", path, "--roi", "0,0,640,480")
    assert result.exit_code == 1 and "does not fit in the 320x240 frames" in result.output
    result = run("watch", catalog, "--video", path, "--show")  # opencv-python-headless: no GUI
    assert result.exit_code == 1 and result.output.startswith("error: no display available: ")
    assert len(result.output.strip().splitlines()) == 1


def test_catalog_add_from_video_reports_what_it_kept_and_makes_the_product_findable(tmp_path):
    catalog = build_demo_catalog(tmp_path / "catalog", products=OTHERS)
    photos = demo_photos()["banana"]
    segments = [seg for photo in photos for seg in (held(photo, "blurred", 6, blur=9), held(photo, "sharp", 10))]
    labels = write_video(tmp_path / "banana.avi", segments)
    result = run("catalog", "add", catalog, "banana", "--video", tmp_path / "banana.avi", "--name", "Banana", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["new_product"] and report["kept"] == len(report["image_keys"]) == 3
    assert all(labels[i] == "sharp" for i in report["kept_frames"])
    assert report["rejected"]["blurred"] >= 14 and report["rejected"]["near-duplicate"] >= 20
    query = tmp_path.parent / "q.jpg"
    shutil.copy(photos[0].parent.parent / "queries" / "Banana.jpg", query)
    found = json.loads(run("search", catalog, query, "-k", "1", "--json").stdout)["results"][0]["matches"][0]
    assert found["product_id"] == "banana"
    text = run("catalog", "add", catalog, "banana", "--video", tmp_path / "banana.avi")
    # The same video again: its frames are already there, so nothing is stored twice.
    assert text.exit_code == 0 and text.output.startswith("added 0 frame(s) of 48 to existing product banana")
    assert "3 already in it" in text.output
    assert "blurred" in text.output and "near-duplicate" in text.output


def test_catalog_add_needs_photos_or_a_video(tmp_path, catalog):
    result = run("catalog", "add", catalog, "x")
    assert result.exit_code == 2 and "give photos or --video FILE" in result.output
