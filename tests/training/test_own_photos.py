"""A shop trains, evaluates, exports and serves a model on its own photos, with the real loop and runtime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from snapmatch.cli import cli
from tests.model_factory import product_image
from tests.without_training_extra import BLOCK_TRAINING_EXTRA
from tests.training.shop_photos import make_shop

pytestmark = pytest.mark.slow
FAST = ["--epochs", "1", "--image-size", "64", "--threads", "1"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return make_shop(tmp_path_factory.mktemp("shop") / "photos")


@pytest.fixture(scope="module")
def trained(shop, tmp_path_factory):
    """One run on the shop's 10 products: (run folder, the command's JSON)."""
    run = tmp_path_factory.mktemp("runs") / "mine"
    result = invoke("train", shop, "--out", run, *FAST, "--holdout", "0.2", "--json")
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_a_small_shop_trains_and_measures_seen_and_unseen_products(trained, shop):
    from snapmatch.training.data import load_dataset
    from snapmatch.training.splits import Split

    run, summary = trained
    result = summary["runs"][0]
    # 10 products, 2 held out: 8 x 4 photos fill a batch instead of the default 64.
    assert result["products_trained"] == 8 and result["batch_size"] == 32
    assert any("batch 64 -> 32" in note for note in result["notes"])
    for name in ("last.pt", "log.jsonl", "config.json", "model.onnx", "evaluation.json"):
        assert (run / name).is_file(), name
    report = result["evaluation"]
    assert report["split_origin"] == "given" and report["unseen_products"] == 2
    p1 = report["P1"]
    # One query photo per product (a quarter of 3-4 shop photos): 8 seen, 2 unseen.
    assert (p1["seen"]["queries"], p1["unseen"]["queries"], p1["queries"]) == (8, 2, 10)
    assert {"P3", "FEW", "OPEN", "adapted"} <= set(report) and report["P3"]["unseen"]["queries"] == 2

    # The held-out products were never trained on: the checkpoint's fingerprint is that of the
    # split's training photos, which hold none of them.
    import torch

    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    dataset = load_dataset(shop)
    split = Split.from_dict(state["split"])
    training, _, queries = split.parts(dataset)
    assert state["data_fingerprint"] == dataset.fingerprint(training)
    assert not {p.product for p in training} & set(split.unseen)
    with_unseen = training + [p for p in dataset.photos if p.product in split.unseen and p not in queries]
    assert state["data_fingerprint"] != dataset.fingerprint(with_unseen)


def test_the_run_s_model_opens_in_a_catalog_and_names_its_products(trained, shop, tmp_path):
    from snapmatch.sdk.model.embedder import Embedder
    from snapmatch.sdk.product_search import ProductSearch

    run, summary = trained
    model = run / "model.onnx"
    spec = Embedder(model, threads=1).spec
    assert spec.default_threshold is not None and spec.training_split["unseen"] == summary["runs"][0]["split"]["unseen"]
    created = invoke("catalog", "create", tmp_path / "catalog", "--model", model)
    assert created.exit_code == 0, created.output
    assert invoke("catalog", "import", tmp_path / "catalog", shop).exit_code == 0
    with ProductSearch.open(tmp_path / "catalog", readonly=True) as search:
        for product in ("banana", "synthetic-0", "red-bell-pepper"):
            photo = sorted((shop / product).glob("*.jpg"))[0]
            assert search.search(photo, k=1)[0].product_id == product


def test_evaluate_finds_the_model_s_own_split_and_says_when_it_has_none(trained, shop, model_path):
    run, _ = trained
    own = invoke("evaluate", run / "model.onnx", shop, "--protocols", "P1,OPEN", "--no-adapt", "--json")
    assert own.exit_code == 0, own.output
    report = json.loads(own.stdout)
    assert report["split_origin"] == "the model's training split" and "unseen" in report["P1"]
    foreign = invoke("evaluate", model_path, shop, "--protocols", "P1", "--no-adapt")
    assert foreign.exit_code == 0, foreign.output
    assert "no split of this dataset recorded" in foreign.output and "| unseen |" not in foreign.output


def test_the_same_command_twice_asks_for_resume_or_a_new_folder(trained, shop):
    run, _ = trained
    again = invoke("train", shop, "--out", run, *FAST)
    assert again.exit_code == 1 and "--resume" in again.output and "Traceback" not in again.output


def test_a_one_photo_product_and_an_unreadable_photo_are_named_and_skipped(shop, tmp_path):
    listing = tmp_path / "photos.txt"
    lines = [f"{path}, {path.parent.name}" for path in sorted(shop.glob("synthetic-*/*.jpg"))]
    cv2.imwrite(str(tmp_path / "lonely.jpg"), product_image(9))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    lines += ["lonely.jpg, lonely-product", "broken.jpg, synthetic-0"]
    listing.write_text("\n".join(lines) + "\n")
    result = invoke("train", listing, "--out", tmp_path / "run", *FAST, "--holdout", "0", "--no-evaluate")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable photo(s): broken.jpg" in result.output
    assert "left out 1 product(s) with fewer than 2 readable images to train on: lonely-product" in result.output


def test_an_empty_folder_and_a_corrupt_checkpoint_are_one_line_errors(tmp_path, trained):
    (tmp_path / "empty").mkdir()
    empty = invoke("train", tmp_path / "empty", "--out", tmp_path / "run")
    assert empty.exit_code == 1 and empty.output.count("\n") == 1 and "no product sub-folders" in empty.output
    run, _ = trained
    broken = tmp_path / "broken.pt"
    broken.write_bytes((run / "last.pt").read_bytes()[:5000])
    corrupt = invoke("export", broken)
    assert corrupt.exit_code == 1 and corrupt.output.count("\n") == 1
    assert "not a readable snapmatch checkpoint" in corrupt.output
    foreign = tmp_path / "foreign.pt"
    import torch

    torch.save({"weights": torch.zeros(3)}, foreign)
    result = invoke("export", foreign)
    assert result.exit_code == 1 and "not a snapmatch training checkpoint" in result.output


def test_a_failed_export_leaves_no_model(trained, tmp_path):
    from snapmatch.export.pipeline import export_checkpoint

    run, _ = trained
    out = tmp_path / "export"

    def fail_at_threshold(step: str) -> None:
        if step.startswith("calibrating"):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export_checkpoint(run / "last.pt", out, on_step=fail_at_threshold)
    assert list(out.iterdir()) == []


def test_a_killed_export_leaves_no_model_and_the_next_one_completes(trained, tmp_path):
    run, _ = trained
    out = tmp_path / "export"
    process = subprocess.Popen([sys.executable, "-m", "snapmatch.cli", "export", str(run / "last.pt"), "--out", str(out),
                                "--int8", "--calibration-photos", "8"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob(".export-*/model.onnx")):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "model.onnx").exists() and not (out / "model-int8.onnx").exists()
    finished = invoke("export", run / "last.pt", "--out", out, "--json")
    assert finished.exit_code == 0, finished.output
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # the killed one's leftovers are gone


@pytest.mark.parametrize("command", ["train", "export"])
def test_training_commands_without_torch_name_the_extra_to_install(tmp_path, command):
    script = BLOCK_TRAINING_EXTRA + textwrap.dedent(
        f"""
        from snapmatch.cli import main
        main({[command, str(tmp_path), "--out", str(tmp_path / "run")] if command == "train"
              else [command, str(tmp_path / "x.pt")]!r})
        """
    )
    (tmp_path / "x.pt").write_bytes(b"")
    (tmp_path / "p").mkdir()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs the train extra" in lines[0] and "pip install" in lines[0], done.stderr


def test_export_at_another_input_size(trained, tmp_path):
    from snapmatch.sdk.model.embedder import Embedder

    run, _ = trained
    result = invoke("export", run / "last.pt", "--out", tmp_path, "--image-size", "80", "--json")
    assert result.exit_code == 0, result.output
    spec = Embedder(json.loads(result.stdout)["fp32"], threads=1).spec
    assert (spec.input.height, spec.input.width) == (80, 80) and spec.default_threshold is not None


def test_ctrl_c_mid_training_exits_130_and_resume_finishes_the_run(shop, tmp_path):
    run = tmp_path / "run"
    epochs = 6
    args = ["train", str(shop), "--out", str(run), "--epochs", str(epochs), "--image-size", "96", "--threads", "1",
            "--no-evaluate"]
    # SIGINT as a terminal delivers it: a suite started in the background (`pytest &` from a script) runs with
    # SIGINT ignored, which the child would inherit, and Python then installs no KeyboardInterrupt handler.
    process = subprocess.Popen([sys.executable, "-m", "snapmatch.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "last.pt").exists() and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before its first checkpoint was seen: {process.communicate()}"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    lines = [line for line in stderr.splitlines() if line.strip() and "it/s" not in line]
    assert process.returncode == 130, f"exit {process.returncode}\nstdout: {stdout}\nstderr: {stderr}"
    assert lines[-1].startswith("error: interrupted (Ctrl-C)") and "Traceback" not in stderr
    done = len((run / "log.jsonl").read_text().splitlines())
    assert 1 <= done < epochs
    resumed = invoke("train", *args[1:], "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == list(
        range(1, epochs + 1))
