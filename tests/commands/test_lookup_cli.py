"""`snapmatch search` and `snapmatch identify` as a user sees them."""

from __future__ import annotations

import json

import cv2
import pytest
from click.testing import CliRunner

from snapmatch.cli import cli
from snapmatch.sdk.product_search import ProductSearch


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def catalog(tmp_path, model_path, image_of):
    folder = tmp_path / "cat"
    with ProductSearch.create(folder, model=model_path) as search:
        for product in range(6):
            search.add_product(f"p{product}", [image_of(product), image_of(product, variant=1)], name=f"Product {product}")
    return folder


@pytest.fixture()
def queries(tmp_path, image_of):
    paths = []
    for product in (2, 4, 40):  # 40 is not in the catalog
        path = tmp_path / f"query_{product}.jpg"
        cv2.imwrite(str(path), image_of(product, variant=5))
        paths.append(path)
    return paths


def test_search_lists_products_best_first(catalog, queries):
    result = run("search", catalog, queries[0], "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{queries[0]}  (")
    assert lines[1].split()[:3] == ["1.", lines[1].split()[1], "p2"]
    scores = [float(line.split()[1]) for line in lines[1:4]]
    assert scores == sorted(scores, reverse=True) and len(lines) == 4


def test_search_json(catalog, queries):
    payload = json.loads(run("search", catalog, *queries[:2], "-k", "2", "--json").stdout)
    assert payload["k"] == 2
    payload = payload["results"]  # the same shape as identify's: one entry per image
    assert [entry["matches"][0]["product_id"] for entry in payload] == ["p2", "p4"]
    assert all(len(entry["matches"]) == 2 and entry["error"] is None for entry in payload)
    assert payload[0]["matches"][0]["name"] == "Product 2"


def test_identify_names_known_and_rejects_unknown(catalog, queries):
    with ProductSearch.open(catalog) as search:
        search.catalog.update_manifest(threshold=0.9)
    payload = json.loads(run("identify", catalog, *queries, "--json").stdout)
    assert payload["threshold"] == 0.9
    products = [r["product"]["product_id"] if r["product"] else None for r in payload["results"]]
    assert products == ["p2", "p4", None]
    best = payload["results"][2]["best"]  # an unknown answer still names its best guess
    assert best["product_id"].startswith("p") and best["score"] < 0.9
    assert payload["results"][2]["rule_value"] == best["score"]  # w = 0: the rule's value is the score
    assert payload["rule"] == "score >= 0.9000" and payload["margin_weight"] == 0.0
    text = run("identify", catalog, queries[2]).stdout
    assert text.strip().endswith("fails score >= 0.9000)")
    assert f": unknown (best guess {best['product_id']}: score {best['score']:.3f}, margin " in text


def test_lookup_reports_bad_images_and_fails(catalog, queries, tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00" * 100)
    result = run("search", catalog, queries[0], garbage, tmp_path / "missing.jpg")
    assert result.exit_code == 1
    assert f"{garbage}: error: " in result.output
    assert f"image not found: {tmp_path / 'missing.jpg'}" in result.output
    assert "error: 2 of 3 image(s) could not be looked up" in result.output
    assert "1. " in result.stdout  # the good image was still answered


def test_lookup_works_while_a_writer_holds_the_lock(catalog, queries):
    with ProductSearch.open(catalog) as writer:
        writer.add_product("late", [queries[2]])
        result = run("identify", catalog, queries[2], "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["results"][0]["product"]["product_id"] == "late"


def test_model_mismatch_is_refused(catalog, queries, other_model_path):
    (catalog / "model.onnx").write_bytes(other_model_path.read_bytes())
    result = run("search", catalog, queries[0])
    assert result.exit_code == 1
    assert "test-model-0-64" in result.output and "test-model-1-64" in result.output
