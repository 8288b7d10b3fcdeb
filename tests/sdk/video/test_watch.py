"""The watch loop on real encoded videos of real product photos, with the shipped model."""

from __future__ import annotations


import pytest

from snapmatch.sdk.product_search import ProductSearch
from snapmatch.sdk.errors import RegionError
from tests.video_factory import (FPS, build_demo_catalog, corrupt_frames, counter_sequence, demo_photos, empty, held,
                                 write_video)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    folder = build_demo_catalog(tmp_path_factory.mktemp("watch") / "catalog")
    with ProductSearch.open(folder, readonly=True, threads=1) as opened:
        yield opened


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """empty, banana, empty, unknown (aubergine), empty, pepper, milk straight after, empty."""
    segments, order = counter_sequence(14)
    path = tmp_path_factory.mktemp("scene") / "counter.avi"
    return path, write_video(path, segments), order


def spans(labels) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for index, label in enumerate(labels):
        if label:
            first, _ = found.get(label, (index, index))
            found[label] = (first, index)
    return found


def test_products_appear_and_go_in_order_and_the_unknown_one_is_never_reported(search, scene):
    path, labels, order = scene
    with search.watch(path) as watch:
        events = list(watch)
    assert [(e.kind, e.product_id) for e in events] == [
        (kind, product) for product in order for kind in ("appeared", "gone")]
    where = spans(labels)
    for event in events:
        first, last = where[event.product_id]
        if event.kind == "appeared":  # within its first frames in view, at a score above the threshold
            assert first <= event.frame_index <= first + 8 and event.score >= search.threshold
            assert event.timestamp == pytest.approx(event.frame_index / FPS)
        else:  # gone within a few frames of leaving
            assert last < event.frame_index <= last + 8
    stats = watch.stats
    assert stats.frames_read == stats.frames_seen == len(labels) and stats.frames_dropped == 0


def test_an_empty_counter_and_an_unknown_product_report_nothing(search, tmp_path):
    path = tmp_path / "nothing.avi"
    write_video(path, [empty(10), held(demo_photos()["aubergine"][0], None, 20, slide=3), empty(10)])
    watch = search.watch(path)
    assert list(watch) == [] and watch.stats.looked_up > 0


def test_the_motion_gate_skips_unchanged_frames_without_changing_the_answer(search, scene):
    path, labels, _ = scene
    gated, ungated = search.watch(path), search.watch(path, motion_threshold=None)
    assert [(e.kind, e.product_id) for e in gated] == [(e.kind, e.product_id) for e in ungated]
    assert gated.stats.skipped_motion > 10 and gated.stats.looked_up < ungated.stats.looked_up == len(labels)


def test_every_n_looks_up_a_third_of_the_frames_and_still_names_the_products(search, scene):
    path, labels, order = scene
    watch = search.watch(path, every=3, motion_threshold=None)
    events = list(watch)
    assert [e.product_id for e in events if e.kind == "appeared"] == order
    assert watch.stats.looked_up == -(-len(labels) // 3) and watch.stats.skipped_every == len(labels) - watch.stats.looked_up


@pytest.mark.slow
def test_a_source_faster_than_lookup_drops_stale_frames_and_keeps_up(search, tmp_path):
    photos = demo_photos()
    path = tmp_path / "fast.avi"
    labels = write_video(path, [empty(30), held(photos["banana"][1], "banana", 90, slide=3), empty(30),
                                held(photos["red-bell-pepper"][1], "red-bell-pepper", 90, slide=3), empty(30)])
    pace = 100.0  # 1500 frames per second: far faster than a lookup
    watch = search.watch(path, pace=pace, motion_threshold=None)
    events = list(watch)
    stats = watch.stats
    # No backlog: frames a lookup could not keep up with were dropped, not queued.
    assert stats.frames_read == len(labels) and stats.frames_dropped > len(labels) // 3
    assert stats.frames_seen + stats.frames_dropped == stats.frames_read
    assert [e.product_id for e in events if e.kind == "appeared"] == ["banana", "red-bell-pepper"]


def test_region_of_interest_looks_only_inside_the_box(search, tmp_path):
    path = tmp_path / "scene.avi"
    write_video(path, [empty(5), held(demo_photos()["banana"][1], "banana", 20), empty(5)])
    inside = [e.product_id for e in search.watch(path, roi=(40, 0, 240, 240)) if e.kind == "appeared"]
    outside = list(search.watch(path, roi=(0, 0, 40, 240)))  # a strip at the edge, beside the product
    assert inside == ["banana"] and outside == []
    with pytest.raises(RegionError, match="does not fit in the 320x240 frames"):
        list(search.watch(path, roi=(100, 100, 300, 300)))


def test_damaged_frames_do_not_stop_the_watch(search, scene, tmp_path):
    path, labels, order = scene
    damaged = corrupt_frames(path, [12, 13, 50], out=tmp_path / "damaged.avi")
    events = list(search.watch(damaged))
    assert [e.product_id for e in events if e.kind == "appeared"] == order


def test_stop_ends_cleanly_and_reports_the_product_in_view_gone(search, tmp_path):
    path = tmp_path / "long.avi"
    write_video(path, [held(demo_photos()["banana"][1], "banana", 60)])
    watch = search.watch(path)
    kinds = []
    for step in watch.steps():
        kinds += [e.kind for e in step.events]
        if kinds == ["appeared"]:
            watch.stop()
    assert kinds == ["appeared", "gone"] and watch.stats.frames_seen < 60


def test_a_watch_runs_once_and_checks_its_options(search, scene):
    path, _, _ = scene
    watch = search.watch(path)
    list(watch)
    with pytest.raises(RuntimeError, match="runs once"):
        list(watch)
    with pytest.raises(ValueError, match="every must be 1 or more"):
        search.watch(path, every=0)
    with pytest.raises(RegionError, match="positive width"):
        search.watch(path, roi=(0, 0, 0, 10))
