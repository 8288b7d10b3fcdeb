"""`snapmatch benchmark scale|memory|accuracy` as a user sees them (small sizes; speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from snapmatch.cli import cli

from tests.dev_data import GROCERY


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_benchmark_lists_its_profilers():
    result = run("benchmark", "--help")
    assert result.exit_code == 0
    for name in ("latency", "accuracy", "scale", "memory"):
        assert name in result.output


def test_scale_json_and_table(tmp_path):
    result = run("benchmark", "scale", "--sizes", "700", "--queries", "6", "--adds", "1", "--folder", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cpu"]["model"] and [r["size"] for r in report["results"]] == [700]
    table = run("benchmark", "scale", "--sizes", "700", "--queries", "6", "--adds", "1", "--folder", tmp_path,
                "--plot", tmp_path / "scale.png")
    assert table.exit_code == 0, table.output
    assert "CPU:" in table.output and "recall@10" in table.output
    assert (tmp_path / "scale.png").stat().st_size > 0


@pytest.mark.parametrize("sizes", ["ten", "0", ","])
def test_scale_refuses_a_bad_size(sizes):
    result = run("benchmark", "scale", "--sizes", sizes)
    assert result.exit_code == 2 and "sizes" in result.output


def test_memory_prints_each_step(tmp_path):
    result = run("benchmark", "memory", "--size", "400", "--queries", "3", "--folder", tmp_path)
    assert result.exit_code == 0, result.output
    assert "catalog_opened" in result.output and "peak RSS" in result.output
    report = json.loads(run("benchmark", "memory", "--size", "400", "--queries", "3", "--folder", tmp_path,
                            "--json").stdout)
    assert report["result"]["build"]["reused"] and report["result"]["peak_rss_mb"] > 0


def test_accuracy_refuses_missing_data_and_p2_without_its_model(tmp_path, monkeypatch):
    monkeypatch.delenv("SNAPMATCH_DATA", raising=False)
    result = run("benchmark", "accuracy")
    assert result.exit_code == 2 and "--data" in result.output and "SNAPMATCH_DATA" in result.output
    result = CliRunner().invoke(cli, ["benchmark", "accuracy", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "no product sub-folders" in result.output
    result = run("benchmark", "accuracy", "--protocols", "P2", "--data", tmp_path)
    assert result.exit_code == 2 and "--p2-model" in result.output
    result = run("benchmark", "accuracy", "--protocols", "P9", "--data", tmp_path)
    assert result.exit_code == 2 and "P1" in result.output


@pytest.mark.skipif(not (GROCERY / "train.txt").is_file(), reason="needs the Grocery dataset ($SNAPMATCH_DATA)")
def test_accuracy_runs_a_protocol_through_the_runtime():
    result = run("benchmark", "accuracy", "--data", GROCERY, "--protocols", "P3", "--no-int8", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (fp32,) = report["reports"]
    assert fp32["variant"] == "fp32" and 0.3 < fp32["P3"]["recall@1"] <= fp32["P3"]["recall@5"] <= 1.0
    assert report["int8_minus_fp32"] == {}


@pytest.mark.parametrize("command", [["scale", "--sizes", "500"], ["latency", "--repeats", "2"]])
def test_plot_without_matplotlib_fails_before_measuring(tmp_path, command):
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib': raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import snapmatch.benchmarks.latency as latency, snapmatch.benchmarks.scale as scale\n"
        "def measured(*a, **k): raise SystemExit('measured before checking matplotlib')\n"
        "latency.run = scale.run = measured\n"
        "from snapmatch.cli import main\n"
        f"main(['benchmark', *{command!r}, '--plot', {str(tmp_path / 'x.png')!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == 'error: plots need matplotlib: pip install "snapmatch[bench]"'


@pytest.mark.parametrize("args", [["watch", "--threads", "two"], ["latency", "--threads", "0"],
                                  ["scale", "--expansion-search", "0"], ["latency", "--batch-sizes", "8,x"]])
def test_lists_of_counts_are_checked_before_anything_runs(args):
    result = run("benchmark", *args)
    assert result.exit_code == 2 and "Invalid value" in result.output
