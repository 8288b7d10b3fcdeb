"""The open-time benchmark runs end to end on small catalogs (structure only: timings are never asserted)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from snapmatch.benchmarks import open_time
from snapmatch.benchmarks.synthetic_catalog import SyntheticSpec, build, clustered_chunks, sample_queries
from snapmatch.sdk.catalog.catalog import Catalog


def test_run_builds_catalogs_that_open_and_answer(tmp_path):
    results = open_time.run(sizes=[1000, 5000], dim=32, folder=tmp_path, repeats=1)

    assert [r["size"] for r in results] == [1000, 5000]
    for result in results:
        build_facts = result["build"]
        assert build_facts["base_vectors"] == result["size"] and not build_facts["reused"]
        assert build_facts["base_bytes"] > 0 and build_facts["sqlite_bytes"] > 0
        assert set(result["open"]) == {"usearch_view", "usearch_view_nokeys", "readonly", "writer", "readonly_evicted"}
        for mode, measured in result["open"].items():
            assert len(measured["open_ms"]["runs"]) == 1
            assert measured["open_ms"]["min"] <= measured["open_ms"]["median"] <= measured["open_ms"]["max"]
            assert measured["first_search_ms"]["median"] > 0
            assert measured["after_open_rss_mb"] is None or measured["after_open_rss_mb"] > 0
            assert measured["top1_hits"] == measured["queries"] == 8
        # Independently of the child processes: the catalog opens here and finds its own vectors.
        spec = SyntheticSpec(**build_facts["spec"])
        queries, expected, _ = sample_queries(result["catalog"], spec)
        with Catalog.open(result["catalog"], readonly=True) as catalog:
            assert catalog.stats()["base_vectors"] == result["size"]
            assert [matches[0].product_id for matches in catalog.search(queries, k=3)] == expected
    assert set(open_time.ratios(results)) == set(open_time.slopes(results)) == set(results[0]["open"])
    json.dumps(results)  # the report is plain JSON
    assert "readonly" in open_time.format_table(results)


def test_bulk_rows_equal_catalog_add_rows(tmp_path):
    """The fast loader writes what Catalog.add writes (same keys, products, vectors)."""
    rows = {}
    for insert in ("bulk", "api"):
        spec = SyntheticSpec(size=301, dim=8, images_per_product=3, clusters=5, insert=insert)
        build(tmp_path / insert, spec)
        with sqlite3.connect(tmp_path / insert / "catalog.sqlite") as conn:
            rows[insert] = conn.execute("SELECT key, product_id, source, vector FROM images ORDER BY key").fetchall()
            assert conn.execute("SELECT count(*) FROM products").fetchone()[0] == spec.products == 101
    assert rows["bulk"] == rows["api"]
    generated = np.concatenate([vectors for _, _, vectors in clustered_chunks(spec)])
    stored = np.stack([np.frombuffer(row[3], dtype=np.float32) for row in rows["bulk"]])
    np.testing.assert_array_equal(stored, generated)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)


def test_product_search_mode_with_a_model(tmp_path, model_path):
    results = open_time.run(sizes=[400], dim=64, folder=tmp_path, repeats=1, model=model_path, modes=["product_search"])
    assert set(results[0]["open"]) == {"product_search"}
    assert results[0]["open"]["product_search"]["top1_hits"] == 8


def test_reuse_skips_the_build(tmp_path):
    first = open_time.run(sizes=[300], dim=8, folder=tmp_path, repeats=1, modes=["readonly"])
    again = open_time.run(sizes=[300], dim=8, folder=tmp_path, repeats=1, modes=["readonly"], reuse=True)
    assert again[0]["build"]["reused"] and again[0]["build"]["base_file"] == first[0]["build"]["base_file"]


def test_the_command_writes_json(tmp_path):
    from click.testing import CliRunner

    from snapmatch.cli import cli

    out = tmp_path / "out"
    argv = ["benchmark", "open-time", "--sizes", "300", "--dim", "8", "--repeats", "1", "--modes", "readonly",
            "--out", str(out), "--json"]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / open_time.RESULT_FILE).read_text())
    assert printed["results"][0]["size"] == 300 and printed["ratios"] == {}


def test_unknown_or_impossible_modes_are_refused_before_building(tmp_path):
    with pytest.raises(ValueError, match="unknown modes"):
        open_time.run(sizes=[300], dim=8, folder=tmp_path, modes=["cold_boot"])
    with pytest.raises(ValueError, match="needs a model"):
        open_time.run(sizes=[300], dim=8, folder=tmp_path, modes=["product_search"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, value", [("10k", 10_000), ("1M", 1_000_000), ("2500", 2500), ("1.5k", 1500)])
def test_parse_size(text, value):
    assert open_time.parse_size(text) == value
