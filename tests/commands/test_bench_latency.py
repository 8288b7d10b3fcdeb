"""`snapmatch benchmark latency` as a user runs it: table, --json, --plot, one-line errors."""

from __future__ import annotations

import importlib.util
import json

from click.testing import CliRunner

from snapmatch.cli import cli

HAS_TORCH = importlib.util.find_spec("torch") is not None
TINY = ["--repeats", "2", "--warmup", "1", "--batch-sizes", "1,2", "--catalog-size", "30", "--threads", "1"]


def invoke(*args):
    return CliRunner().invoke(cli, ["benchmark", "latency", *args], catch_exceptions=False)


def test_table_ratios_and_cpu(model_path, other_model_path):
    result = invoke("--model", str(model_path), "--int8", str(other_model_path), "--no-profile", *TINY)
    assert result.exit_code == 0, result.output
    for expected in ("CPU:", "AVX2", "decode", "resize", "inference", "search", "identify (total)",
                     "ONNX fp32", "ONNX int8", "ratios of medians", "targets (1 thread)"):
        assert expected in result.output
    assert ("PyTorch eager fp32" in result.output) == HAS_TORCH


def test_json_and_plot(model_path, other_model_path, tmp_path):
    png = tmp_path / "plots" / "latency.png"
    result = invoke("--model", str(model_path), "--int8", str(other_model_path), "--no-torch", "--json",
                    "--plot", str(png), *TINY)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report["runs"][0]["baselines"]) == {"onnx_fp32", "onnx_int8"}
    assert {row["op_type"] for row in report["profile"]["onnx_fp32"]["by_op_type"]} >= {"MatMul"}


def test_bad_images_dir_is_one_line_and_exit_1(model_path, tmp_path):
    result = CliRunner().invoke(
        cli, ["benchmark", "latency", "--model", str(model_path), "--images", str(tmp_path / "nope"), *TINY])
    assert result.exit_code == 1
    assert result.stderr == f"error: image folder not found: {tmp_path / 'nope'}\n"


def test_bad_model_is_one_line_and_exit_1(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    result = CliRunner().invoke(cli, ["benchmark", "latency", "--model", str(broken), *TINY])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {broken} is not a loadable ONNX model") and result.stderr.count("\n") == 1


def test_bad_threads_is_a_usage_error():
    result = invoke("--threads", "1,many")
    assert result.exit_code == 2 and "'many'" in result.output
