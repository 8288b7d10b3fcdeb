"""`snapmatch benchmark tradeoff`: fold runs on disk (real ONNX models, evaluation.json as training writes it)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from snapmatch.benchmarks.tradeoff import load_recipe
from snapmatch.cli import cli
from snapmatch.sdk.model.model_spec import PREFIX
from tests.model_factory import build_model


def _evaluation(unseen_off: float, unseen_on: float) -> dict:
    def protocol(unseen: float) -> dict:
        return {"recall@1": unseen, "seen": {"recall@1": 0.9}, "unseen": {"recall@1": unseen, "map@r": unseen / 2}}

    report = {"P1": protocol(unseen_off), "P3": {"recall@1": 0.5}, "OPEN": {"known_named_right": 0.2},
              "adapted": {"P1": protocol(unseen_on), "OPEN": {"known_named_right": 0.3}}}
    return {"run": "x", "evaluation": report}  # as `snapmatch train` writes it


@pytest.fixture()
def fold_run(tmp_path, model_path):
    run = tmp_path / "runs" / "small-folds"
    for fold, (off, on) in enumerate([(0.6, 0.7), (0.8, 0.9)], start=1):
        (run / f"fold-{fold}").mkdir(parents=True)
        (run / f"fold-{fold}" / "evaluation.json").write_text(json.dumps(_evaluation(off, on)))
        shutil.copy(model_path, run / f"fold-{fold}" / "model.onnx")
    int8 = {PREFIX + "quantization": "int8"}  # what `snapmatch export --int8` would write
    build_model(run / "fold-1" / "model-int8.onnx", size=64, seed=2, metadata=int8)
    return run


def test_a_fold_run_gives_the_mean_of_its_folds_and_each_model_it_has(fold_run):
    recipe = load_recipe(fold_run)
    assert recipe.label == "small-folds" and recipe.folds == 2
    assert recipe.figures["unseen R@1"] == {"off": pytest.approx(0.7), "on": pytest.approx(0.8)}
    assert recipe.figures["unseen MAP@R"]["off"] == pytest.approx(0.35)
    assert recipe.figures["P3"] == {"off": pytest.approx(0.5), "on": None}  # not measured adapted: none made up
    assert [m.name for m in recipe.models] == ["model.onnx", "model-int8.onnx"]


def test_a_run_without_folds_is_one_fold(tmp_path, model_path):
    run = tmp_path / "mine"  # `snapmatch train DATA --out runs/mine`
    run.mkdir()
    (run / "evaluation.json").write_text(json.dumps(_evaluation(0.5, 0.6)))
    shutil.copy(model_path, run / "model.onnx")
    recipe = load_recipe(run)
    assert recipe.folds == 1 and recipe.figures["unseen R@1"] == {"off": 0.5, "on": 0.6}
    assert load_recipe(run / "model.onnx").label == "mine"  # a model file is named after its run


def test_a_figure_missing_from_one_fold_is_not_averaged_over_the_others(fold_run):
    path = fold_run / "fold-2" / "evaluation.json"
    report = json.loads(path.read_text())
    del report["evaluation"]["OPEN"]
    path.write_text(json.dumps(report))
    assert load_recipe(fold_run).figures["OPEN named"]["off"] is None


def test_the_command_times_every_model_and_plots_accuracy_per_millisecond(fold_run, model_path, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "tradeoff.png"
    result = CliRunner().invoke(cli, ["benchmark", "tradeoff", str(model_path), str(fold_run), "--label", "shipped",
                                      "--label", "folds", "--repeats", "5", "--plot", str(plot), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [(r["label"], r["variant"]) for r in rows] == [("shipped", "fp32"), ("folds", "fp32"), ("folds", "int8")]
    assert rows[0]["latency_vs_first"] == 1.0 and all(r["latency_ms"]["n"] == 5 for r in rows)
    assert rows[0]["figures"]["unseen R@1"]["on"] is None  # no evaluation.json beside it
    assert rows[1]["figures"]["unseen R@1"]["on"] == pytest.approx(0.8)
    assert plot.stat().st_size > 10_000  # a real PNG
    table = CliRunner().invoke(cli, ["benchmark", "tradeoff", str(fold_run), "--repeats", "2"], catch_exceptions=False)
    assert "| small-folds | int8 | 2 |" in table.stdout and "0.700 / 0.800" in table.stdout


def test_bad_runs_and_labels_are_refused_clearly(tmp_path, fold_run):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["benchmark", "tradeoff", str(tmp_path / "empty")])
    assert result.exit_code != 0 and "no model.onnx" in result.output
    result = CliRunner().invoke(cli, ["benchmark", "tradeoff", str(fold_run), "--label", "a", "--label", "b"])
    assert result.exit_code == 2 and "2 labels for 1 runs" in result.output
