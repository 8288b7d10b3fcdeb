"""The public API of DESIGN.md ("Public API"), with a real ONNX model, real usearch files and real SQLite.

The test model (tests/model_factory.py) embeds photos of one product close
together (cosine >= 0.97 between variants) and different products apart
(<= 0.51), so which product a photo shows is never in doubt; scores are
checked against the same model's embeddings compared with numpy (1e-4).
"""

from __future__ import annotations

import json
import shutil
import threading

import cv2
import numpy as np
import pytest

import snapmatch
from snapmatch import (
    CatalogClosedError,
    CatalogExistsError,
    CatalogLockedError,
    CatalogNotFoundError,
    Embedder,
    ImageNotFoundError,
    InvalidImageError,
    Match,
    ModelMismatchError,
    Product,
    ProductExistsError,
    ProductNotFoundError,
    ProductSearch,
    ReadOnlyError,
    SnapmatchError,
)
from snapmatch.sdk.errors import CalibrationError, ModelError
from tests.model_factory import product_image

from tests.sdk.conftest import KNOWN, TOL, UNKNOWN, pid


@pytest.fixture(scope="module")
def embedder(model_path):
    return Embedder(model_path, threads=1)


def manifest_of(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def assert_same_answers(got, expected):
    """Same products and image keys in the same order, scores within TOL (batching changes the last bits)."""
    if got and isinstance(got[0], list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same_answers(g, e)
        return
    assert [(m.product_id, m.name, m.image_key) for m in got] == [(m.product_id, m.name, m.image_key) for m in expected]
    np.testing.assert_allclose([m.score for m in got], [m.score for m in expected], atol=TOL)


def labelled_photos():
    """Photos of known products (variants 1-3) with their ids, and of unknown ones labelled None."""
    known = [(product_image(p, variant=v), pid(p)) for p in KNOWN for v in (1, 2, 3)]
    unknown = [(product_image(p, variant=v), None) for p in UNKNOWN for v in (0, 1)]
    return known + unknown


# --- create / open --------------------------------------------------------------------------------------


def test_create_keeps_a_copy_of_the_model_and_records_its_id(folder, model_path):
    with ProductSearch.create(folder, model=model_path) as search:
        assert search.products() == []
        assert search.model_id == "test-model-0-64"
    manifest = manifest_of(folder)
    assert (manifest["model_id"], manifest["dim"], manifest["metric"]) == ("test-model-0-64", 64, "cos")
    assert (folder / "model.onnx").read_bytes() == model_path.read_bytes()
    assert (folder / "catalog.sqlite").is_file()


def test_create_where_a_catalog_exists_raises_and_changes_nothing(search, folder, other_model_path):
    search.close()
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    with pytest.raises(CatalogExistsError, match="already exists"):
        ProductSearch.create(folder, model=other_model_path)
    after = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    assert after == before
    with ProductSearch.open(folder) as reopened:
        assert len(reopened.products()) == len(KNOWN)


def test_open_a_missing_catalog_raises_catalog_not_found(tmp_path):
    with pytest.raises(CatalogNotFoundError):
        ProductSearch.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogNotFoundError):
        ProductSearch.open(tmp_path / "empty")
    with pytest.raises(CatalogNotFoundError):
        ProductSearch.open(tmp_path / "empty", readonly=True)


def test_open_uses_the_catalogs_own_copy_of_the_model(tmp_path, model_path, other_model_path):
    source = tmp_path / "source.onnx"
    shutil.copyfile(model_path, source)
    folder = tmp_path / "catalog"
    with ProductSearch.create(folder, model=source) as search:
        search.add_product(pid(0), [product_image(0)])
    # the original file is gone, then replaced by another model: the catalog does not care
    source.unlink()
    shutil.copyfile(other_model_path, source)
    with ProductSearch.open(folder) as reopened:
        assert reopened.embedder.path == folder / "model.onnx"
        assert reopened.model_id == "test-model-0-64"
        assert reopened.identify(product_image(0, variant=1)).product_id == pid(0)


def test_open_with_another_model_raises_model_mismatch_naming_both_ids(search, folder, other_model_path, model_path):
    search.close()
    with pytest.raises(ModelMismatchError) as raised:
        ProductSearch.open(folder, model=other_model_path)
    assert "test-model-0-64" in str(raised.value) and "test-model-1-64" in str(raised.value)
    with pytest.raises(ModelMismatchError):
        ProductSearch.open(folder, model=other_model_path, readonly=True)
    with ProductSearch.open(folder, model=model_path) as same:  # the same model from elsewhere is fine
        assert len(same.products()) == len(KNOWN)


def test_open_without_the_model_copy_and_no_installed_match_raises_model_error(search, folder):
    search.close()
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelError, match="pass model="):
        ProductSearch.open(folder)


def test_one_writer_at_a_time(search, folder):
    with pytest.raises(CatalogLockedError):
        ProductSearch.open(folder)
    with ProductSearch.open(folder, readonly=True) as reader:
        assert len(reader.products()) == len(KNOWN)


def test_context_manager_closes_and_releases_the_writer_lock(folder, model_path):
    with ProductSearch.create(folder, model=model_path) as search:
        search.add_product(pid(0), [product_image(0)])
    with pytest.raises(CatalogClosedError):
        search.search(product_image(0))
    search.close()  # closing twice is harmless
    with ProductSearch.open(folder) as writer:  # the lock was released
        assert [p.id for p in writer.products()] == [pid(0)]


# --- adding and removing --------------------------------------------------------------------------------


def test_add_product_is_searchable_at_once_with_name_and_count(search):
    keys = search.add_product("two-photos", [product_image(7), product_image(7, variant=1)], name="Seven")
    assert len(keys) == 2 and len(set(keys)) == 2
    products = {p.id: p for p in search.products()}
    assert products["two-photos"] == Product("two-photos", "Seven", 2)
    assert products[pid(0)] == Product(pid(0), "Product 0", 1)
    best = search.search(product_image(7, variant=2), k=1)[0]
    assert (best.product_id, best.name) == ("two-photos", "Seven")
    assert best.image_key in keys


def test_images_as_path_bytes_and_array_are_the_same_photo(tmp_path, search):
    photo = product_image(8, variant=2)
    path = tmp_path / "photo.png"  # lossless, so every form decodes to the same pixels
    cv2.imwrite(str(path), photo)
    encoded = path.read_bytes()
    forms = [str(path), path, encoded, bytearray(encoded), photo]
    results = [search.search(form, k=3) for form in forms]
    for result in results:
        assert_same_answers(result, results[0])
    keys = search.add_product("eight", forms)
    assert len(keys) == len(forms)
    assert search.search(photo, k=1)[0].score == pytest.approx(1.0, abs=TOL)


def test_add_product_with_an_existing_id_raises_and_changes_nothing(search):
    before = search.products()
    with pytest.raises(ProductExistsError, match="add_images"):
        search.add_product(pid(0), [product_image(9)])
    assert search.products() == before
    assert search.catalog.stats()["images"] == len(KNOWN)


def test_add_images_and_remove_product_of_an_unknown_id_raise_product_not_found(search):
    with pytest.raises(ProductNotFoundError):
        search.add_images("no-such-product", [product_image(0)])
    with pytest.raises(ProductNotFoundError):
        search.remove_product("no-such-product")
    assert "no-such-product" not in {p.id for p in search.products()}


def test_add_images_to_a_known_product(search):
    keys = search.add_images(pid(1), [product_image(1, variant=4), product_image(1, variant=5)])
    assert len(keys) == 2
    assert {p.id: p.image_count for p in search.products()}[pid(1)] == 3
    match = search.search(product_image(1, variant=4), k=1)[0]
    assert match.product_id == pid(1) and match.image_key == keys[0]
    assert match.score == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize(
    "bad, error",
    [
        (b"definitely not an image", InvalidImageError),
        ("/no/such/photo.jpg", ImageNotFoundError),
        (np.zeros((0, 10, 3), np.uint8), InvalidImageError),
    ],
)
def test_add_product_with_one_bad_image_raises_and_leaves_the_catalog_unchanged(search, bad, error):
    before = (search.products(), search.catalog.stats())
    good = [product_image(9), product_image(9, variant=1)]
    with pytest.raises(error):
        search.add_product("nine", [good[0], bad, good[1]])
    with pytest.raises(error):
        search.add_images(pid(0), [good[0], bad])
    assert (search.products(), search.catalog.stats()) == before
    search.add_product("nine", good)  # the id is still free
    assert {p.id: p.image_count for p in search.products()}["nine"] == 2


def test_remove_product_takes_it_out_of_every_answer(search):
    search.add_images(pid(2), [product_image(2, variant=1)])
    assert search.remove_product(pid(2)) == 2
    assert pid(2) not in {p.id for p in search.products()}
    query = product_image(2, variant=2)
    assert pid(2) not in {m.product_id for m in search.search(query, k=10)}
    assert search.identify(query) is None  # nothing else looks like it
    search.compact()
    assert pid(2) not in {m.product_id for m in search.search(query, k=10)}
    search.add_product(pid(2), [product_image(2)])  # the id can be used again
    assert search.identify(query).product_id == pid(2)


def test_compact_keeps_every_answer(search):
    queries = [product_image(p, variant=3) for p in range(10)]
    before = search.search(queries, k=5)
    assert search.compact() is True
    assert search.compact() is False
    assert_same_answers(search.search(queries, k=5), before)


# --- looking up ------------------------------------------------------------------------------------------


def test_search_scores_are_cosine_similarities_best_first_one_per_product(search, embedder):
    catalog = embedder.embed([product_image(p) for p in KNOWN])
    query = product_image(3, variant=2)
    expected = catalog @ embedder.embed([query])[0]
    matches = search.search(query, k=5)
    assert all(isinstance(m, Match) for m in matches)
    assert [m.product_id for m in matches] == [pid(p) for p in np.argsort(-expected)]
    np.testing.assert_allclose([m.score for m in matches], np.sort(expected)[::-1], atol=TOL)
    assert [m.product_id for m in search.search(query, k=2)] == [pid(p) for p in np.argsort(-expected)[:2]]
    assert len(search.search(query, k=50)) == len(KNOWN)  # k above the number of products
    assert matches[0].name == "Product 3"


def test_search_on_a_list_returns_a_list_of_lists(search):
    queries = [product_image(p, variant=1) for p in KNOWN]
    results = search.search(queries, k=2)
    assert isinstance(results, list) and len(results) == len(queries)
    assert all(isinstance(r, list) and len(r) == 2 for r in results)
    assert [r[0].product_id for r in results] == [pid(p) for p in KNOWN]
    assert_same_answers(search.search([queries[0]], k=2), [results[0]])


def test_identify_names_known_products_and_returns_none_below_the_threshold(search):
    match = search.identify(product_image(4, variant=1))
    assert isinstance(match, Match) and match.product_id == pid(4)
    assert match.score >= search.threshold
    search.catalog.update_manifest(threshold=min(match.score + 0.001, 1.0))
    assert search.identify(product_image(4, variant=1)) is None
    answers = search.identify([product_image(4), product_image(4, variant=1)])
    assert answers[0].product_id == pid(4) and answers[1] is None


def test_identify_on_an_empty_catalog_returns_none(folder, model_path):
    with ProductSearch.create(folder, model=model_path) as search:
        assert search.identify(product_image(0)) is None
        assert search.search(product_image(0), k=3) == []


# --- calibration -----------------------------------------------------------------------------------------


def test_calibrate_stores_the_threshold_and_a_reopened_catalog_uses_it(search, folder, embedder):
    photos = labelled_photos()
    threshold = search.calibrate(photos, target_precision=0.99)
    # independent reference: the rule's value (best cosine + weight x margin over the second product) in numpy
    catalog = embedder.embed([product_image(p) for p in KNOWN])
    ranked = np.sort(embedder.embed([image for image, _ in photos]) @ catalog.T, axis=1)
    value = ranked[:, -1] + search.rule.margin_weight * (ranked[:, -1] - ranked[:, -2])
    known_values = value[: 3 * len(KNOWN)]
    assert threshold == pytest.approx(known_values.min(), abs=TOL)  # every known photo is right and above all unknown
    assert threshold > value[3 * len(KNOWN):].max()
    manifest = manifest_of(folder)
    assert manifest["threshold"] == threshold and manifest["threshold_source"] == "calibrated"
    assert search.threshold == threshold
    expected = [label for _, label in photos]
    assert [m.product_id if m else None for m in search.identify([image for image, _ in photos])] == expected
    search.close()
    with ProductSearch.open(folder, readonly=True) as reopened:
        assert reopened.threshold == threshold
        assert [m.product_id if m else None for m in reopened.identify([image for image, _ in photos])] == expected


def test_calibrate_without_a_reachable_precision_raises_and_keeps_the_threshold(search, folder):
    before = manifest_of(folder)
    wrong = [(product_image(p, variant=1), pid((p + 1) % 5)) for p in KNOWN]  # every label wrong
    with pytest.raises(CalibrationError):
        search.calibrate(wrong, target_precision=0.9)
    assert manifest_of(folder) == before


def test_a_writer_calibration_reaches_an_open_reader(search, folder):
    with ProductSearch.open(folder, readonly=True) as reader:
        threshold = search.calibrate(labelled_photos(), target_precision=0.95)
        assert reader.threshold == threshold
        assert reader.identify(product_image(7)) is None


# --- read-only, durability, readers -------------------------------------------------------------------


def test_readonly_search_refuses_every_write(search, folder):
    with ProductSearch.open(folder, readonly=True) as reader:
        assert reader.search(product_image(1, variant=1), k=1)[0].product_id == pid(1)
        for write in (
            lambda: reader.add_product("new", [product_image(8)]),
            lambda: reader.add_images(pid(0), [product_image(0, variant=1)]),
            lambda: reader.remove_product(pid(0)),
            lambda: reader.compact(),
            lambda: reader.calibrate(labelled_photos()),
        ):
            with pytest.raises(ReadOnlyError):
                write()
    assert len(search.products()) == len(KNOWN)


def test_everything_written_is_there_for_a_new_object(search, folder):
    search.add_images(pid(0), [product_image(0, variant=1)])
    search.compact()
    search.add_product("after-compaction", [product_image(12)], name="Twelve")
    search.remove_product(pid(3))
    threshold = search.calibrate(labelled_photos(), target_precision=0.99)
    queries = [product_image(p, variant=2) for p in range(10)]
    products, answers = search.products(), search.search(queries, k=3)
    with ProductSearch.open(folder, readonly=True) as alongside:  # the writer is still open
        assert alongside.products() == products
        assert_same_answers(alongside.search(queries, k=3), answers)
    search.close()
    with ProductSearch.open(folder) as reopened:
        assert reopened.products() == products
        assert reopened.threshold == threshold
        assert_same_answers(reopened.search(queries, k=3), answers)


def test_a_reader_opened_before_the_writer_adds_sees_new_products(search, folder):
    with ProductSearch.open(folder, readonly=True) as reader:
        query = product_image(8, variant=1)
        assert reader.identify(query) is None
        search.add_product("late", [product_image(8)])
        assert reader.search(query, k=1)[0].product_id == "late"
        search.compact()
        assert reader.search(query, k=1)[0].product_id == "late"
        search.add_images("late", [product_image(8, variant=3)])
        assert {p.id: p.image_count for p in reader.products()}["late"] == 2
        search.remove_product("late")
        assert "late" not in {m.product_id for m in reader.search(query, k=10)}


def test_search_while_another_thread_adds_products(search):
    errors: list[BaseException] = []

    def add():
        try:
            for product in range(10, 30):
                search.add_product(pid(product), [product_image(product)])
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    thread = threading.Thread(target=add)
    thread.start()
    try:
        while thread.is_alive():
            assert search.search(product_image(1, variant=1), k=1)[0].product_id == pid(1)
    finally:
        thread.join()
    assert not errors
    assert search.search(product_image(29, variant=1), k=1)[0].product_id == pid(29)


# --- the API surface ------------------------------------------------------------------------------------


def test_public_names_and_one_error_hierarchy():
    for name in ("ProductSearch", "Embedder", "Match", "Product", "SnapmatchError", "__version__"):
        assert name in snapmatch.__all__ and hasattr(snapmatch, name)
    errors = [getattr(snapmatch, name) for name in snapmatch.__all__ if name.endswith("Error")]
    assert len(errors) >= 10
    assert all(issubclass(error, SnapmatchError) for error in errors)


def test_match_is_a_small_readable_result(search):
    match = search.search(product_image(0, variant=1), k=1)[0]
    assert set(match.to_dict()) == {"product_id", "name", "score", "margin", "image_key"}
    assert repr(match).startswith("Match('product-0', score=")
    assert -1.0 - TOL <= match.score <= 1.0 + TOL
    second = search.search(product_image(0, variant=1), k=2)
    assert match.margin == pytest.approx(second[0].score - second[1].score, abs=1e-6)
    assert second[1].margin == pytest.approx(second[1].score - second[0].score, abs=1e-6)


def test_create_takes_the_search_graph_settings(tmp_path, model_path):
    from snapmatch.sdk.catalog.manifest import read_manifest

    with snapmatch.ProductSearch.create(tmp_path / "c", model=model_path, vector_dtype="i8", connectivity=12,
                                        expansion_add=40, expansion_search=99):
        pass
    manifest = read_manifest(tmp_path / "c")
    assert (manifest.vector_dtype, manifest.connectivity, manifest.expansion_add, manifest.expansion_search) == (
        "i8", 12, 40, 99)
