"""The scale and memory benchmarks run end to end on small catalogs (structure and correctness, never speed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from snapmatch.benchmarks import embedding_profile, memory, scale
from snapmatch.benchmarks.synthetic_catalog import SyntheticSpec, clustered_chunks
from snapmatch.sdk.catalog.catalog import Catalog
from snapmatch.sdk.product_search import DEFAULT_MODEL
from snapmatch.sdk.model.embedder import Embedder


def _ordered(p: dict) -> bool:
    return 0 < p["median"] <= p["p95"] <= p["p99"]


def test_scale_measures_exact_and_graph_search(tmp_path):
    # exact_below=1000: the 800-vector catalog is searched exactly, the 3000-vector one through HNSW.
    results = scale.run([800, 3000], tmp_path, queries=40, adds=2, open_repeats=1, exact_below=1000)

    small, large = results
    assert small["exact_search_in_usearch"] and not large["exact_search_in_usearch"]
    assert small["recall_at_10"] == 1.0  # exact search agrees with numpy
    assert 0.5 < large["recall_at_10"] <= 1.0
    for r in results:
        assert r["dim"] == 576 and r["queries"] == 40
        for key in ("search_index_ms", "search_catalog_ms", "search_exact_numpy_ms", "add_ms"):
            assert _ordered(r[key]), key
        assert r["add_ms"]["n"] == 2
        exact, index = r["search_exact_numpy_ms"]["median"], r["search_index_ms"]["median"]
        assert r["speedup_vs_exact_p50"] == pytest.approx(exact / index)
        assert r["rss_mb"]["after_open"]["rss"] >= r["rss_mb"]["before_open"]["rss"] > 0
        assert r["build"]["base_bytes"] > 0 and r["open"]["open_ms"]["median"] > 0
        assert r["compact_after_adds_s"] > 0 and r["compact_after_removes_s"] > 0
        # The added products were removed again: the catalog holds exactly its synthetic content.
        with Catalog.open(r["catalog"], readonly=True) as catalog:
            stats = catalog.stats()
            assert stats["images"] == stats["base_vectors"] == r["size"]
            assert not any(p.id.startswith("bench-added") for p in catalog.products())
    json.dumps(results)
    table = scale.format_table(results)
    assert "recall@10" in table and "(exact)" in table
    assert scale.plot(results, tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scale_sweeps_the_search_effort(tmp_path):
    (result,) = scale.run([1500], tmp_path, queries=20, adds=1, open_repeats=1, exact_below=100, connectivity=8,
                          expansion_search=[8, 64])
    assert result["connectivity"] == 8 and result["expansion_search"] == 8  # the first value is stored
    assert [p["expansion_search"] for p in result["sweep"]] == [8, 64]
    low, high = result["sweep"]
    assert high["recall_at_10"] >= low["recall_at_10"] - 0.02  # more effort never loses much recall
    assert "expansion_search" in scale.format_table([result])


def test_scale_reuses_an_earlier_build_of_the_same_spec(tmp_path):
    first = scale.run([600], tmp_path, queries=4, adds=1, open_repeats=1)
    again = scale.run([600], tmp_path, queries=4, adds=1, open_repeats=1)
    assert not first[0]["build"]["reused"] and again[0]["build"]["reused"]
    rebuilt = scale.run([600], tmp_path, queries=4, adds=1, open_repeats=1, reuse=False)
    assert not rebuilt[0]["build"]["reused"]


def test_queries_are_near_copies_and_new_photos_of_stored_products():
    spec = SyntheticSpec(size=400, dim=576, distribution="profile")
    vectors = np.concatenate([chunk for _, _, chunk in clustered_chunks(spec)])
    queries = scale.make_queries(vectors, spec, 20)
    assert queries.shape == (20, 576) and np.allclose(np.linalg.norm(queries, axis=1), 1, atol=1e-5)
    best = (queries @ vectors.T).max(axis=1)
    assert best[:10].mean() > best[10:].mean() > 0.6  # near-copies sit closer than new photos


def test_profile_matches_the_real_embeddings_it_was_fitted_on():
    profile = embedding_profile.load_default()
    assert profile.dim == 576 and 0.3 < profile.between_share < 0.9
    spec = SyntheticSpec(size=2000, dim=576, distribution="profile")
    first = np.concatenate([chunk for _, _, chunk in clustered_chunks(spec)])
    again = np.concatenate([chunk for _, _, chunk in clustered_chunks(spec)])
    assert np.array_equal(first, again)  # seeded
    stats = embedding_profile.neighbour_stats(first, np.arange(2000) // spec.images_per_product)
    # Real default-model embeddings: |mean| 0.46, median pair similarity 0.19 (not ~0 as for random vectors).
    assert 0.35 < stats["mean_norm"] < 0.6 and 0.1 < stats["pairs_median"] < 0.3
    assert stats["nearest_same_median"] > stats["nearest_other_median"]


def test_fit_recovers_how_variance_splits_between_and_within_products():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 16)) * 2.0
    labels = np.repeat(np.arange(50), 20)
    vectors = centres[labels] + rng.standard_normal((1000, 16))
    profile = embedding_profile.fit(vectors, labels, source="test", components=8)
    assert profile.between_share == pytest.approx(4 / 5, abs=0.06)
    assert profile.components.shape == (8, 16)
    with pytest.raises(ValueError, match="two products"):
        embedding_profile.fit(vectors, np.zeros(1000), source="test")


def test_memory_reports_each_step_of_a_serving_process(tmp_path):
    spec = scale.catalog_spec(500, Embedder(DEFAULT_MODEL, threads=1).dim)  # the model's own embedding size
    scale.ensure_catalog(tmp_path / spec.name, spec, reuse=False, log=lambda m: None)
    photos = sorted(str(p) for p in (DEFAULT_MODEL.parent.parent / "demo").rglob("*.jpg"))[:3]
    result = memory.measure(tmp_path / spec.name, DEFAULT_MODEL, photos, queries=5)
    steps = result["steps"]
    assert list(steps) == ["start", "imported", "model_loaded", "catalog_opened", "photos_embedded", "after_searches"]
    assert steps["model_loaded"]["rss"] > steps["start"]["rss"]
    assert result["peak_rss_mb"] >= max(step["rss"] for step in steps.values()) - 1
    assert result["base_file_mb"] > 0 and result["queries"] == 5
