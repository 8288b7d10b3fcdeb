"""Adding a product from a short video: sharp, distinct frames are kept, and they make the product findable."""

from __future__ import annotations

import shutil

import pytest

from snapmatch.sdk.video.keyframes import select_keyframes, sharpness
from snapmatch.sdk.product_search import ProductSearch
from snapmatch.sdk.errors import ProductExistsError, VideoSourceError
from tests.video_factory import DEMO_DIR, build_demo_catalog, demo_photos, held, render, write_video

OTHERS = ["arla-standard-milk", "oatly-oat-milk", "god-morgon-orange-juice", "red-bell-pepper",
          "yoggi-strawberry-yoghurt"]


@pytest.fixture(scope="module")
def base_catalog(tmp_path_factory):
    """The demo catalog without the banana."""
    return build_demo_catalog(tmp_path_factory.mktemp("kf") / "catalog", products=OTHERS)


@pytest.fixture()
def catalog(base_catalog, tmp_path):
    return shutil.copytree(base_catalog, tmp_path / "catalog")


def turning_banana():
    """Three sides of a banana, each reached with a motion-blurred swing of the hand, then held for 10 frames."""
    photos = demo_photos()["banana"]
    segments = []
    for side, photo in enumerate(photos):
        segments += [held(photo, "blurred", 6, blur=9), held(photo, f"side-{side}", 10)]
    return segments


def test_motion_blur_lowers_sharpness():
    photo = demo_photos()["banana"][0]
    (sharp, _), = render([held(photo, "x", 1)])
    (blurred, _), = render([held(photo, "x", 1, blur=9)])
    assert sharpness(blurred) < 0.5 * sharpness(sharp)


def test_keeps_one_sharp_frame_per_side_and_says_why_the_rest_were_left_out(catalog, tmp_path):
    labels = write_video(tmp_path / "banana.avi", turning_banana())
    with ProductSearch.open(catalog, threads=1) as search:
        chosen = select_keyframes(tmp_path / "banana.avi", search.embedder)
    kept = [labels[i] for i in chosen.kept]
    assert sorted(kept) == ["side-0", "side-1", "side-2"]  # every side, once, none blurred
    counts = chosen.counts()
    assert counts["blurred"] >= 14 and counts["near-duplicate"] >= 20  # 18 blurred frames, 27 repeats of a side
    assert sum(counts.values()) + len(chosen.kept) == chosen.frames_read == len(labels)
    assert all(labels[i] == "blurred" for i, reason in chosen.rejected.items() if reason == "blurred")


def test_max_frames_caps_what_is_kept(catalog, tmp_path):
    write_video(tmp_path / "banana.avi", turning_banana())
    with ProductSearch.open(catalog, threads=1) as search:
        chosen = select_keyframes(tmp_path / "banana.avi", search.embedder, max_frames=2)
    assert len(chosen.kept) == 2 and chosen.counts()["beyond max_frames"] >= 1


def test_added_from_video_the_product_is_found_from_a_new_photo(catalog, tmp_path):
    write_video(tmp_path / "banana.avi", turning_banana())
    query = DEMO_DIR / "queries" / "Banana.jpg"
    with ProductSearch.open(catalog, threads=1) as search:
        assert search.identify(query) is None  # not in the catalog yet
        added = search.add_product_from_video("banana", tmp_path / "banana.avi", name="Banana")
        assert added.new_product and len(added.image_keys) == 3
        assert search.search(query, k=1)[0].product_id == "banana"
        with pytest.raises(ProductExistsError):  # add_product* creates; extend=True adds to a known product
            search.add_product_from_video("banana", tmp_path / "banana.avi")
        again = search.add_product_from_video("banana", tmp_path / "banana.avi", extend=True)
        # The same video twice: the same frames, already held, are not stored again.
        assert not again.new_product and again.duplicates == 3 and again.image_keys == added.image_keys
        assert search.catalog.product("banana").image_count == 3
        assert len(repr(again)) < 300 and "array" not in repr(again)
    with ProductSearch.open(catalog, readonly=True) as search:  # durable
        assert search.search(query, k=1)[0].product_id == "banana"


def test_unreadable_video_leaves_the_catalog_unchanged(catalog, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    with ProductSearch.open(catalog, threads=1) as search:
        with pytest.raises(VideoSourceError, match="cannot open video"):
            search.add_product_from_video("banana", junk)
        assert "banana" not in {p.id for p in search.products()}
