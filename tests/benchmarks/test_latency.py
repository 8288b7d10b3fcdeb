"""The latency benchmark end to end on the small test model (structure and sanity only: speeds are never asserted)."""

from __future__ import annotations

import importlib.util
import json

import cv2
import pytest

from snapmatch.benchmarks import cpu_info, latency, ort_profile
from snapmatch.benchmarks.bench_photos import BenchmarkInputError, load_photos
from snapmatch.benchmarks.latency import STAGES, LatencyConfig
from snapmatch.benchmarks.latency_report import format_report
from snapmatch.sdk.errors import ModelError

HAS_TORCH = importlib.util.find_spec("torch") is not None
TINY = dict(repeats=3, warmup=1, batch_sizes=(1, 2), catalog_size=40, profile_runs=2)


@pytest.fixture(scope="module")
def result(model_path):
    # The int8 model is quantized on the fly (onnx is a dev dependency); PyTorch eager when torch is installed.
    return latency.run(LatencyConfig(model=model_path, threads=(1, 0), **TINY))


def _check_stats(stats):
    assert stats["n"] == TINY["repeats"]
    assert 0 < stats["min"] <= stats["median"] <= stats["p95"] <= stats["p99"] <= stats["max"]


def test_every_stage_at_every_thread_setting(result):
    assert [run["threads"] for run in result["runs"]] == [1, cpu_info.usable_cores()]
    for run in result["runs"]:
        assert set(STAGES) <= set(run["stages"])
        for stage in STAGES:
            _check_stats(run["stages"][stage])
        assert run["stages"]["other"]["median"] == pytest.approx(
            run["stages"]["total"]["median"] - sum(run["stages"][s]["median"] for s in STAGES[:-1]))


def test_baselines_and_ratios_come_from_the_same_run(result):
    expected = {"onnx_fp32", "onnx_int8"} | ({"torch_eager"} if HAS_TORCH else set())
    for run in result["runs"]:
        assert set(run["baselines"]) == expected
        for name, measured in run["baselines"].items():
            _check_stats(measured["batch1"])
            assert [row["batch"] for row in measured["throughput"]] == [1, 2]
            assert measured["best"]["images_per_s"] == max(row["images_per_s"] for row in measured["throughput"])
        ratios, base = run["ratios"], run["baselines"]
        assert ratios["int8_vs_fp32_latency"] == pytest.approx(
            base["onnx_int8"]["batch1"]["median"] / base["onnx_fp32"]["batch1"]["median"])
        if HAS_TORCH:
            assert ratios["model_speedup_vs_torch"] == pytest.approx(
                base["torch_eager"]["batch1"]["median"] / base["onnx_fp32"]["batch1"]["median"])
            stages = run["stages"]
            assert ratios["inference_search_vs_torch"] == pytest.approx(
                (stages["inference"]["median"] + stages["search"]["median"]) / base["torch_eager"]["batch1"]["median"])
        assert ratios["frame_path_vs_inference"] == pytest.approx(
            run["stages"]["total"]["median"] / run["stages"]["inference"]["median"])
        assert ratios["camera_path_vs_inference"] == pytest.approx(
            run["stages"]["camera_total"]["median"] / run["stages"]["inference"]["median"])
        assert ratios["int8_speedup_vs_fp32"] == pytest.approx(1 / ratios["int8_vs_fp32_latency"])
    assert {row["key"] for row in result["targets"]} == {"model_speedup_vs_torch", "inference_search_vs_torch",
                                                         "frame_path_vs_inference", "camera_path_vs_inference",
                                                         "int8_speedup_vs_fp32"}


def test_int8_retrieval_and_operator_profile(result):
    retrieval = result["int8"]["retrieval"]
    assert retrieval["queries"] == 24  # the demo's labelled photos
    assert retrieval["recall_at_1_difference"] == pytest.approx(
        retrieval["recall_at_1"]["int8"] - retrieval["recall_at_1"]["fp32"])
    assert -1.0 <= retrieval["cosine_min"] <= retrieval["cosine_mean"] <= 1.0 + 1e-6
    fp32 = result["profile"]["onnx_fp32"]
    op_types = {row["op_type"] for row in fp32["by_op_type"]}
    assert {"MatMul", "AveragePool"} <= op_types  # what the test model is made of
    assert sum(row["share"] for row in fp32["by_op_type"]) == pytest.approx(1.0)
    assert "onnx_int8" in result["profile"]


def test_result_is_json_and_the_report_names_the_cpu(result):
    assert json.loads(json.dumps(result))["model"]["model_id"] == result["model"]["model_id"]
    text = format_report(result)
    assert result["cpu"]["model"] in text and "AVX2" in text and "identify (total)" in text
    assert "slowest operators" in text


def test_no_torch_means_no_torch_baseline(model_path):
    result = latency.run(LatencyConfig(model=model_path, threads=(1,), torch=False, profile=False, **TINY))
    assert "torch_eager" not in result["runs"][0]["baselines"] and "profile" not in result
    assert result["runs"][0]["ratios"]["model_speedup_vs_torch"] is None
    torch_rows = {"model_speedup_vs_torch", "inference_search_vs_torch"}
    assert all(row["met"] is None for row in result["targets"] if row["key"] in torch_rows)
    assert all(row["met"] is not None for row in result["targets"] if row["key"] not in torch_rows)


def test_a_given_int8_model_is_used(model_path, other_model_path):
    # Any model that keeps the contract can stand in for the int8 one here.
    result = latency.run(LatencyConfig(model=model_path, int8=other_model_path, threads=(1,), torch=False,
                                       profile=False, **TINY))
    assert result["int8"]["source"] == "given" and result["int8"]["path"] == str(other_model_path)
    assert "onnx_int8" in result["runs"][0]["baselines"]


def test_photo_folders(tmp_path, image_of):
    demo = load_photos()
    assert demo.layout == "photos.json" and len(demo.frames) == 7 and len(demo.gallery) == 18
    nested = tmp_path / "nested"
    for product in range(2):
        (nested / f"p{product}").mkdir(parents=True)
        cv2.imwrite(str(nested / f"p{product}" / "a.jpg"), image_of(product))
    photos = load_photos(nested)
    assert photos.layout == "sub-folders" and photos.labels == ["p0", "p1"] and photos.frames == [0, 1]
    with pytest.raises(BenchmarkInputError, match="not found"):
        load_photos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkInputError, match="no photos"):
        load_photos(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BenchmarkInputError, match="x.jpg"):
        load_photos(tmp_path / "bad")


def test_bad_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        latency.run(LatencyConfig(model=tmp_path / "missing.onnx", **TINY))


def test_cpu_info_parses_flags():
    text = "processor : 0\nmodel name : Test CPU 9000\nflags : fpu sse avx2 avx512f avx512_vnni amx_tile\n"
    info = cpu_info.describe(text)
    assert info["model"] == "Test CPU 9000"
    assert info["flags"] == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False, "amx": True}
    assert cpu_info.describe("")["flags"]["avx2"] is None  # unknown, not absent
    assert "AVX2 yes" in cpu_info.flags_line(info)


def test_profile_summary_drops_warmup_runs():
    trace = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 50},
        {"cat": "Node", "name": "a_kernel_time", "ts": 1, "dur": 40, "args": {"op_name": "Conv"}},
        {"cat": "Session", "name": "model_run", "ts": 100, "dur": 30},
        {"cat": "Node", "name": "a_kernel_time", "ts": 101, "dur": 20, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "b_kernel_time", "ts": 121, "dur": 10, "args": {"op_name": "Relu"}},
        {"cat": "Node", "name": "b_fence_before", "ts": 121, "dur": 5, "args": {"op_name": "Relu"}},
    ]
    summary = ort_profile.summarise(trace, warmup=1)
    assert summary["runs"] == 1 and summary["kernel_ms_per_run"] == pytest.approx(0.030)
    assert [row["op_type"] for row in summary["by_op_type"]] == ["Conv", "Relu"]
    assert summary["by_node"][0] == {"node": "a", "op_type": "Conv", "ms_per_run": 0.02, "share": pytest.approx(2 / 3)}
