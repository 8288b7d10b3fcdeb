"""`snapmatch demo` on a fresh install: the shipped model, the bundled photos."""

from __future__ import annotations

import json

from click.testing import CliRunner

from snapmatch.cli import cli
from snapmatch.sdk.model.embedder import Embedder
from snapmatch.sdk.product_search import DEFAULT_MODEL, MODELS_DIR


def test_shipped_model_matches_its_card():
    card = json.loads((MODELS_DIR / "default.json").read_text())
    embedder = Embedder(DEFAULT_MODEL, threads=1)
    assert card["model_id"] == embedder.model_id and card["embedding_dim"] == embedder.dim
    assert card["default_threshold"] == embedder.spec.default_threshold
    assert card["evaluation"]["model"]["P1"]["recall@1"] > card["evaluation"]["imagenet_baseline"]["P1"]["recall@1"]


def test_demo_names_the_bundled_products(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--json", "--threads", "1", "--catalog", str(tmp_path / "demo")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    rows = payload["results"]
    known = [row for row in rows if row["truth"]]
    # The best match names every known product; identify() accepts most of them and rejects the unknown one.
    assert all(row["best_guess"] == row["truth"] for row in known)
    assert sum(row["identified"] == row["truth"] for row in known) >= 4
    assert all(row["identified"] is None for row in rows if not row["truth"])
    assert (tmp_path / "demo" / "manifest.json").exists()  # --catalog keeps it


def test_demo_text_output():
    result = CliRunner().invoke(cli, ["demo", "--threads", "1"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "photos answered right" in result.output and "Try next:" in result.output
