"""ProductSearch's promises about input: one add rule, repeated adds that change nothing, errors that name the input.

Real model, real catalog on disk (the fixtures of test_product_search).
"""

from __future__ import annotations

import threading
import time
import warnings

import cv2
import numpy as np
import pytest

from snapmatch import (
    CalibrationError,
    CalibrationWarning,
    CatalogExistsError,
    CatalogLockedError,
    Identification,
    InvalidArgumentError,
    InvalidImageError,
    ProductExistsError,
    ProductNotFoundError,
    ProductSearch,
    SnapmatchError,
)
from tests.model_factory import product_image
from tests.sdk.conftest import KNOWN, UNKNOWN, pid


def test_the_same_photos_twice_are_stored_once(search, tmp_path):
    photos = []
    for variant in (1, 2):
        path = tmp_path / f"{variant}.png"
        cv2.imwrite(str(path), product_image(7, variant=variant))
        photos.append(path)
    first = search.add("new", photos, name="New")
    assert first.created and first.added == 2 and first.duplicates == 0
    again = search.add("new", [photos[1], photos[0], photos[1]])
    assert not again.created and again.added == 0 and again.duplicates == 3
    assert again.keys == [first.keys[1], first.keys[0], first.keys[1]]
    assert search.catalog.product("new").image_count == 2
    # Bytes and arrays are identified by content too; a new photo is stored.
    assert search.add_images("new", [photos[0].read_bytes()]) == [first.keys[0]]
    assert search.add_images("new", [product_image(7, variant=3)])[0] not in first.keys
    assert search.catalog.product("new").image_count == 3


def test_one_add_rule(search):
    photo = product_image(0, variant=4)
    with pytest.raises(ProductExistsError):
        search.add_product(pid(0), [photo])
    keys = search.add_product(pid(0), [photo], extend=True)
    assert len(keys) == 1 and search.catalog.product(pid(0)).image_count == 2
    with pytest.raises(ProductNotFoundError):
        search.add_images("nobody", [photo])
    added = search.add(pid(1), [product_image(1, variant=4)], name="Renamed")
    assert not added.created and added.renamed and search.catalog.product(pid(1)).name == "Renamed"


@pytest.mark.parametrize("image, message", [
    (None, "cv2.imread returns None"),
    (42, "type int"),
    (np.full((32, 32, 3), 200.0, np.float32), r"float pixels must be in \[0, 1\]"),
])
def test_bad_images_are_snapmatch_errors_naming_the_input(search, image, message):
    for call in (search.identify, search.search, lambda i: search.add_product("x", i)):
        with pytest.raises(InvalidImageError, match=message):
            call(image)


def test_bad_arguments_are_snapmatch_errors(search):
    photo = product_image(0)
    for k in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="k must be"):
            search.search(photo, k=k)
    with pytest.raises(InvalidArgumentError, match="product id"):
        search.add_product("", [photo])
    with pytest.raises(InvalidArgumentError, match="no photos"):
        search.add_product("x", [])
    with pytest.raises(ValueError):  # also a ValueError, as before
        search.search(photo, k=0)
    assert issubclass(InvalidArgumentError, SnapmatchError)


def test_a_4d_array_is_a_batch_everywhere(search):
    batch = np.stack([product_image(p, variant=5) for p in (1, 3)])
    results = search.search(batch, k=1)
    assert [r[0].product_id for r in results] == [pid(1), pid(3)]
    assert [m.product_id for m in search.identify(batch) if m] == [pid(1), pid(3)]
    assert search.embedder.embed(batch).shape == (2, search.embedder.dim)


def test_identification_names_the_best_guess_of_an_unknown_photo(search):
    answer = search.identification(product_image(UNKNOWN[0]))
    assert isinstance(answer, Identification) and answer.match is None and not answer.known
    assert answer.best is not None and answer.rule_value < answer.threshold
    known = search.identification(product_image(KNOWN[2], variant=1))
    assert known.match.product_id == pid(KNOWN[2]) == known.best.product_id
    assert search.identify(product_image(KNOWN[2], variant=1)) == known.match


def test_calibration_refuses_the_catalogs_own_photos_and_too_few(search):
    own = [(product_image(p), pid(p)) for p in KNOWN] * 3 + [(product_image(p), None) for p in UNKNOWN]
    with pytest.raises(CalibrationError, match="catalog's own photos"):
        search.calibrate(own, target_precision=0.9)
    few = [(product_image(p, variant=2), pid(p)) for p in KNOWN[:3]]
    with pytest.raises(CalibrationError, match="too few"):
        search.calibrate(few, target_precision=0.9)
    assert search.calibration_report() == {}  # nothing stored
    fair = [(product_image(p, variant=v), pid(p)) for p in KNOWN for v in (1, 2, 3)]
    with pytest.warns(CalibrationWarning, match="no photos of products outside the catalog"):
        search.calibrate(fair, target_precision=0.9)
    report = search.calibration_report()
    assert report["photos"] == 15 and any("only 15 photos" in w for w in report["warnings"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.calibrate(few, target_precision=0.9, force=True)  # stored anyway
    assert search.calibration_report()["photos"] == 3


def test_create_refuses_a_folder_of_someone_elses_files(tmp_path, model_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not mine to mix with")
    with pytest.raises(CatalogExistsError, match="not empty"):
        ProductSearch.create(photos, model=model_path)
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    ProductSearch.create(empty, model=model_path).close()


def test_a_writer_waits_for_the_writer_before_it(search, folder):
    with pytest.raises(CatalogLockedError, match="--wait SECONDS"):
        ProductSearch.open(folder, wait=0.2)
    threading.Timer(0.3, search.close).start()
    started = time.monotonic()
    with ProductSearch.open(folder, wait=10) as second:
        assert time.monotonic() - started >= 0.25
        assert second.products()
