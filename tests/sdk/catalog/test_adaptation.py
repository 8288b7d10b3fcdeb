"""The catalog's own metric: fit, storage, freshness, fallback, damage, and identify's margin rule.

Catalogs of real photos (the Grocery Store Dataset beside the repository,
embedded by the shipped model through a real ONNX Runtime session), real
usearch files and SQLite; a few checks on synthetic vectors where an exact
reference is easier to state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from snapmatch.cli import cli
from snapmatch.sdk.catalog import adaptation as adapt, store
from snapmatch.sdk.catalog.catalog import REFIT_MIN_CHANGES, REFIT_SHARE, Catalog
from snapmatch.sdk.model.embedder import Embedder
from snapmatch.sdk.errors import CatalogCorruptError
from snapmatch.sdk.catalog.manifest import read_manifest
from snapmatch.sdk.product_search import DEFAULT_MODEL, ProductSearch
from snapmatch.sdk.catalog.verify import verify_catalog
from tests.export import GROCERY

needs_grocery = pytest.mark.skipif(not (GROCERY / "train.txt").is_file(), reason="needs the Grocery dataset ($SNAPMATCH_DATA)")


def clustered(products: int, per_product: int, dim: int = 32, spread: float = 0.5, seed: int = 0):
    """Product centres with photos scattered around them, L2-normalised; (vectors, product labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((products, dim))
    # Anisotropic within-product noise: what the whitening is for.
    scale = np.linspace(0.2, 2.0, dim)
    vectors = np.repeat(centres, per_product, axis=0) + spread * rng.standard_normal((products * per_product, dim)) * scale
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return vectors, np.repeat(np.arange(products), per_product)


def fill(catalog: Catalog, vectors: np.ndarray, labels: np.ndarray, prefix: str = "p") -> None:
    for label in np.unique(labels):
        catalog.add(f"{prefix}{label}", vectors[labels == label])


# --- the fit ----------------------------------------------------------------------------------


def test_the_fit_is_the_shrunk_inverse_square_root_of_the_within_product_scatter():
    vectors, labels = clustered(12, 5, dim=16)
    scatter = adapt.ScatterAccumulator(16)
    for start in range(0, len(vectors), 7):  # streamed in uneven chunks
        scatter.add([str(x) for x in labels[start:start + 7]], vectors[start:start + 7])
    fitted = scatter.fit(shrinkage=0.3)
    residuals = np.concatenate([vectors[labels == p] - vectors[labels == p].mean(0) for p in range(12)])
    s = residuals.T @ residuals / (len(vectors) - 12)
    s = 0.7 * s + 0.3 * np.trace(s) / 16 * np.eye(16)
    values, basis = np.linalg.eigh(s)
    reference = (basis * values ** -0.5) @ basis.T
    out = fitted.apply(vectors[:5])
    expected = (vectors[:5] - vectors.mean(0)) @ reference
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert (fitted.products, fitted.images) == (12, 60)


def test_one_photo_products_and_tiny_catalogs_give_no_fit():
    vectors, labels = clustered(40, 1)
    scatter = adapt.ScatterAccumulator(32)
    scatter.add([str(x) for x in labels], vectors)
    assert scatter.fit() is None  # one photo each: no within-product scatter at all
    few, few_labels = clustered(adapt.MIN_PRODUCTS - 1, 8)
    scatter = adapt.ScatterAccumulator(32)
    scatter.add([str(x) for x in few_labels], few)
    assert scatter.fit() is None


# --- storage, freshness, exactness ----------------------------------------------------------------


def test_exact_search_under_the_transform_equals_brute_force_numpy(tmp_path):
    vectors, labels = clustered(30, 4)
    queries, query_labels = clustered(30, 1, seed=1)
    with Catalog.create(tmp_path / "c", model_id="m", dim=32, adapt=True) as catalog:
        fill(catalog, vectors, labels)
        catalog.compact()
        fill(catalog, *clustered(5, 3, seed=2), prefix="delta")  # some in the delta, under the base's transform
        state = catalog._state
        assert state.adaptation is not None and len(state.delta) > 0
        results = catalog.search(queries, k=5)
        stored = np.concatenate([vectors, clustered(5, 3, seed=2)[0]])
        owners = [f"p{x}" for x in labels] + [f"delta{x}" for x in clustered(5, 3, seed=2)[1]]
        adapted_gallery = state.adaptation.apply(stored)
        adapted_query = state.adaptation.apply(queries)
        scores = adapted_query @ adapted_gallery.T
        owner_of = np.array(owners, dtype=object)
        means = {owner: adapted_gallery[owner_of == owner].mean(axis=0) for owner in set(owners)}
    for row, matches in enumerate(results):
        best: dict[str, float] = {}
        for owner, score in zip(owners, scores[row]):
            best[owner] = max(best.get(owner, -2.0), float(score))
        for owner, mean in means.items():  # each product's prototype: its adapted images' normalised mean
            best[owner] = max(best[owner], float(adapted_query[row] @ mean / np.linalg.norm(mean)))
        expected = sorted(best.items(), key=lambda item: -item[1])[:5]
        assert [m.product_id for m in matches] == [p for p, _ in expected]
        np.testing.assert_allclose([m.score for m in matches], [s for _, s in expected], atol=1e-4)
        assert matches[0].margin == pytest.approx(expected[0][1] - expected[1][1], abs=1e-4)


def test_the_transform_is_stored_checksummed_and_reloaded(tmp_path):
    vectors, labels = clustered(20, 4)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=32, adapt=True) as catalog:
        fill(catalog, vectors, labels)
        before = catalog.search(vectors[::7], k=3)
    manifest = read_manifest(folder)
    info = manifest.adaptation
    assert info is not None and (folder / info.file).is_file() and len(info.sha256) == 64
    # Within the staleness bound, the last product or two may not be in the fit yet.
    assert 18 <= info.products <= 20 and info.images >= 0.9 * 80
    for readonly in (True, False):
        with Catalog.open(folder, readonly=readonly) as reopened:
            after = reopened.search(vectors[::7], k=3)
            assert [[(m.product_id, round(m.score, 5)) for m in r] for r in after] == \
                   [[(m.product_id, round(m.score, 5)) for m in r] for r in before]
    assert sorted(p.name for p in folder.glob("adapt-*.npz")) == [info.file]


def test_adding_products_refits_within_the_documented_staleness(tmp_path):
    vectors, labels = clustered(40, 4)
    with Catalog.create(tmp_path / "c", model_id="m", dim=32, adapt=True) as catalog:
        fill(catalog, vectors, labels)
        first = catalog.manifest.adaptation
        assert first is not None
        bound = max(REFIT_MIN_CHANGES, REFIT_SHARE * first.images)
        extra, extra_labels = clustered(10, 4, seed=3)
        changes = 0
        for label in range(10):
            catalog.add(f"new{label}", extra[extra_labels == label])
            changes += 4
            current = catalog.manifest.adaptation
            # The transform in force never trails the catalog by the bound or more.
            assert catalog._state.manifest.adaptation == current
            assert store.changes(catalog._write) - current.changes < max(REFIT_MIN_CHANGES, REFIT_SHARE * current.images)
            # What was just added is found at once, under the transform in force.
            assert catalog.search(extra[extra_labels == label][:1], k=1)[0][0].product_id == f"new{label}"
        assert catalog.manifest.adaptation != first and changes >= bound


def test_adapt_off_and_on_again(tmp_path):
    vectors, labels = clustered(20, 4)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=32, adapt=True) as catalog:
        fill(catalog, vectors, labels)
        assert catalog.manifest.adaptation is not None
    with Catalog.open(folder) as catalog:
        assert catalog.set_adapt(False)
    with Catalog.open(folder) as catalog:
        assert catalog.manifest.adaptation is None and not list(folder.glob("adapt-*.npz"))
        raw = catalog.search(vectors[:1], k=1)[0][0]
        assert raw.score == pytest.approx(1.0, abs=1e-5)  # plain cosine again
        assert catalog.set_adapt(True) is True
        assert catalog.manifest.adaptation is not None
        status = catalog.stats()["adaptation"]
        assert status["in_force"] and status["products"] == 20


def test_a_damaged_transform_is_refused_found_by_verify_and_refitted_by_repair(tmp_path):
    vectors, labels = clustered(20, 4)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=32, adapt=True) as catalog:
        fill(catalog, vectors, labels)
        catalog.compact()
        expected = [m.product_id for m in catalog.search(vectors[:1], k=3)[0]]
    path = folder / read_manifest(folder).adaptation.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CatalogCorruptError, match="adaptation"):
        Catalog.open(folder, readonly=True)
    report = verify_catalog(folder)
    assert not report.ok and any("adaptation" in problem for problem in report.problems)
    repaired = verify_catalog(folder, repair=True)
    # (This bare vector catalog has no model.onnx: that problem stays.)
    assert not any("adaptation" in problem for problem in repaired.problems), repaired.problems
    assert any("adaptation" in problem for problem in repaired.repaired)
    with Catalog.open(folder, readonly=True) as catalog:
        assert catalog.manifest.adaptation is not None
        assert [m.product_id for m in catalog.search(vectors[:1], k=3)[0]] == expected


# --- real photos ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grocery_vectors():
    """Shipped-model embeddings of 30 products' train photos (6 each) and 10 more products' (unknown)."""
    if not (GROCERY / "train.txt").is_file():
        pytest.skip(f"the grocery photos are not at {GROCERY}")
    by_label: dict[int, list[Path]] = {}
    for line in (GROCERY / "train.txt").read_text().splitlines():
        if line.strip():
            path, fine, _coarse = (part.strip() for part in line.split(","))
            by_label.setdefault(int(fine), []).append(GROCERY / path)
    # Every other product (fruit, vegetables and packages alike); photos spread over each product's list.
    photos = [(paths[i], label) for label, paths in sorted(by_label.items())[::2][:40]
              for i in np.linspace(0, len(paths) - 1, 6).astype(int)]
    embedder = Embedder(DEFAULT_MODEL, threads=1)
    vectors = embedder.embed([path for path, _ in photos])
    labels = np.array([label for _, label in photos])
    return photos, vectors, labels


@needs_grocery
def test_a_catalog_of_one_photo_products_falls_back_and_still_works(tmp_path, grocery_vectors):
    photos, _, labels = grocery_vectors
    firsts = [next(path for path, label in photos if label == product) for product in np.unique(labels)[:30]]
    with ProductSearch.create(tmp_path / "c", threads=1) as search:
        for index, path in enumerate(firsts):
            search.add_product(f"p{index}", [path])
        status = search.catalog.adaptation_status()
        assert status["in_force"] is False and "not fitted yet" in status["reason"]
        assert search.search(firsts[3], k=1)[0].product_id == "p3"
        assert search.catalog.manifest.threshold_source == "model card"
    text = CliRunner().invoke(cli, ["catalog", "info", str(tmp_path / "c")]).stdout
    assert "adaptation        none: not fitted yet" in text


@needs_grocery
def test_real_photos_adapt_self_calibrate_and_the_margin_rule_reaches_its_precision(tmp_path, grocery_vectors):
    photos, vectors, labels = grocery_vectors
    products = np.unique(labels)
    known = products[:30]  # the other products stay out of the catalog: their photos must be rejected
    in_catalog = np.zeros(len(labels), dtype=bool)
    for product in known:
        in_catalog[np.flatnonzero(labels == product)[:3]] = True  # 3 photos per product in the catalog
    with ProductSearch.create(tmp_path / "c", threads=1) as search:
        for product in known:
            rows = np.flatnonzero(in_catalog & (labels == product))
            search.add_product(f"p{product}", [photos[i][0] for i in rows])
        manifest = search.catalog.manifest
        assert manifest.adaptation is not None and manifest.adaptation.products >= 27
        # Uncalibrated: the rule was fitted on the catalog's own photos, under its metric.
        assert manifest.threshold_source == "self-calibrated" and search.catalog.threshold_current()
        queries = np.flatnonzero(~in_catalog)
        rng = np.random.default_rng(0)
        halves = rng.permutation(len(queries)) % 2 == 0
        truth = [f"p{labels[i]}" if labels[i] in known else None for i in queries]
        pairs = [(photos[i][0], t) for i, t in zip(queries, truth)]
        fit_on = [pair for pair, half in zip(pairs, halves) if half]
        held_out = [pair for pair, half in zip(pairs, halves) if not half]
        search.calibrate(fit_on, target_precision=0.9)
        assert search.catalog.manifest.threshold_source == "calibrated"
        report = search.calibration_report()
        assert report["photos"] == len(fit_on) and report["precision"] >= 0.9
        answers = search.identify([image for image, _ in held_out])
    named = [(answer.product_id, label) for answer, (_, label) in zip(answers, held_out) if answer is not None]
    right = sum(product == label for product, label in named)
    assert len(named) >= 10, "the calibrated rule names almost nothing"
    # Held out: the precision target holds up to the noise of ~100 photos (one standard error ~0.03).
    assert right / len(named) >= 0.9 - 0.08, (right, len(named))
    assert all(answer is None or answer.margin is not None for answer in answers)


@needs_grocery
def test_a_calibrated_rule_is_refitted_on_its_photos_when_the_metric_is_refitted(tmp_path, grocery_vectors):
    photos, vectors, labels = grocery_vectors
    products = np.unique(labels)
    with Catalog.create(tmp_path / "c", model_id="m", dim=vectors.shape[1], adapt=True) as catalog:
        for product in products[:20]:
            catalog.add(f"p{product}", vectors[labels == product][:3])
        labelled = [(vectors[i], f"p{labels[i]}" if labels[i] in products[:20] else None)
                    for i in range(len(labels)) if i % 6 >= 3]
        catalog.calibrate(np.stack([v for v, _ in labelled]), [t for _, t in labelled], target_precision=0.9)
        first = catalog.manifest
        for product in products[20:30]:
            catalog.add(f"p{product}", vectors[labels == product][:3])
        after = catalog.manifest
    assert after.adaptation != first.adaptation  # 30 new photos on 60 fitted: refitted
    assert after.threshold_source == "calibrated" and after.target_precision == 0.9
    assert after.threshold_adaptation == after.adaptation.sha256  # fitted under the metric in force


def test_a_refit_killed_before_its_recalibration_is_recalibrated_by_the_next_writer(tmp_path):
    from snapmatch.sdk.catalog.manifest import write_manifest

    vectors, labels = clustered(20, 4)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=32, adapt=True) as catalog:
        fill(catalog, vectors, labels)
        assert catalog.manifest.threshold_source == "self-calibrated" and catalog.threshold_current()
    # As a kill between the compaction's manifest and the recalibration's would leave it:
    write_manifest(folder, read_manifest(folder).replace(threshold_adaptation="0" * 64, threshold=0.123))
    with Catalog.open(folder, readonly=True) as reader:
        assert not reader.threshold_current()  # a reader says so (catalog info shows it) ...
    with Catalog.open(folder) as writer:  # ... and the writer mends it at open
        assert writer.threshold_current() and writer.manifest.threshold != 0.123


def test_self_calibration_of_a_large_catalog_draws_a_sample_as_rows_stream(tmp_path, monkeypatch):
    from snapmatch.sdk.catalog import self_calibration

    monkeypatch.setattr(self_calibration, "MAX_GALLERY", 50)  # a "large" catalog without building one
    vectors, labels = clustered(60, 3)
    with Catalog.create(tmp_path / "c", model_id="m", dim=32) as catalog:
        fill(catalog, vectors, labels)
        drawn = self_calibration.sample(catalog._write, 32)
        assert 20 <= len(drawn.vectors) <= 90  # about 50 of 180, never all
        assert drawn.products.max() + 1 == len(np.unique(drawn.products))  # products renumbered densely
        rule, result = self_calibration.fit(drawn, None)
    assert result.unknown == len(drawn.vectors) and result.unknown_rejected >= 0.85 * result.unknown
    assert rule.margin_weight == self_calibration.MARGIN_WEIGHT


@pytest.mark.parametrize("searched_exactly", [True, False])
def test_self_calibration_scores_products_as_the_catalogs_search_does(tmp_path, searched_exactly):
    # Reference: each product's photos looked up by Catalog.search in a catalog of all the other products.
    # Searched exactly, a product also scores by its prototype (its photos' mean); through the graph it
    # does not, and the rule fitted on the catalog's own photos must follow suit.
    from snapmatch.sdk.catalog import self_calibration
    from snapmatch.sdk.catalog.calibration import rule_values

    vectors, labels = clustered(12, 3, dim=16, spread=1.5, seed=3)  # spread photos: their means decide often
    exact_below = 20_000 if searched_exactly else 0
    values = []
    for left_out in np.unique(labels):
        others = labels != left_out
        with Catalog.create(tmp_path / f"without-{left_out}", model_id="m", dim=16, adapt=False,
                            exact_below=exact_below) as catalog:
            fill(catalog, vectors[others], labels[others])
            for match in catalog.search(vectors[~others], k=2):
                values.append(rule_values(np.array([match[0].score]), np.array([match[0].margin]),
                                          self_calibration.MARGIN_WEIGHT)[0])
    expected = float(np.quantile(values, self_calibration.UNKNOWN_REJECTION, method="higher")) + 1e-6
    with Catalog.create(tmp_path / "all", model_id="m", dim=16, adapt=False, exact_below=exact_below) as catalog:
        fill(catalog, vectors, labels)
        rule, result = catalog.self_calibrated_rule()
        other, _ = self_calibration.fit(self_calibration.sample(catalog._write, 16), None,
                                        prototypes=not searched_exactly)
    assert rule.threshold == pytest.approx(expected, abs=1e-5)
    assert result.unknown == len(vectors)
    assert abs(other.threshold - expected) > 1e-3  # scoring the other way gives another rule: the check can fail


def test_a_rule_fitted_before_prototypes_is_refitted_by_the_next_writer(tmp_path):
    from snapmatch.sdk.catalog.manifest import write_manifest

    vectors, labels = clustered(20, 4)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=32, adapt=True) as catalog:
        fill(catalog, vectors, labels)
        fitted = catalog.manifest
    assert fitted.threshold_source == "self-calibrated" and fitted.threshold_scoring == "prototypes"
    # A manifest written before the field: its rule was fitted on lookups that scored photos alone.
    write_manifest(folder, read_manifest(folder).replace(threshold_scoring="", threshold=0.123))
    with Catalog.open(folder, readonly=True) as reader:
        assert not reader.threshold_current()  # exact search scores prototypes: the rule is stale
    with Catalog.open(folder) as writer:
        assert writer.threshold_current() and writer.manifest.threshold_scoring == "prototypes"
        assert writer.manifest.threshold == pytest.approx(fitted.threshold)


def test_a_catalog_that_outgrows_exact_search_refits_its_rule_for_the_graph(tmp_path):
    vectors, labels = clustered(30, 4)
    first = labels < 20
    with Catalog.create(tmp_path / "c", model_id="m", dim=32, adapt=True, exact_below=100) as catalog:
        fill(catalog, vectors[first], labels[first])  # 80 images: searched exactly
        exact = catalog.manifest
        for label in range(20, 30):  # up to 120: past exact_below, searched through the graph
            catalog.add(f"p{label}", vectors[labels == label])
            if catalog.stats()["images"] > 100:
                break
        crossed = catalog.manifest  # right after the write that crossed
        expected, _ = catalog.self_calibrated_rule()
        assert catalog.threshold_current()
    assert exact.threshold_source == "self-calibrated" and exact.threshold_scoring == "prototypes"
    assert crossed.threshold_source == "self-calibrated" and crossed.threshold_scoring == "photos"
    assert crossed.threshold == pytest.approx(expected.threshold)
    assert crossed.threshold != pytest.approx(exact.threshold)
