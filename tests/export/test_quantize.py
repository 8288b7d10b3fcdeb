"""quantize_int8 and parity_report: the int8 model keeps the contract and retrieves what fp32 retrieves."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from snapmatch.export import ExportSpec, QuantizationError, QuantizeConfig, export_onnx, format_report, parity_report, quantize_int8
from snapmatch.export.onnx_export import read_metadata
from snapmatch.export.quantize import CALIBRATION_KEY, PhotoCalibrationReader
from snapmatch.sdk.embedder import Embedder
from snapmatch.sdk.model_spec import PREFIX, InputSpec
from snapmatch.sdk.preprocess import preprocess
from tests.export import grocery_photos, stand_in_net

SPEC = ExportSpec(
    input=InputSpec(height=64, width=64, resize="center_crop"),
    data_fingerprint="grocery-test-0001",
    name="stand-in",
    id_prefix="standin",
    default_threshold=0.62,
)
# int8 vs fp32 embeddings of the same photo. The stand-in measures ~0.999 mean
# and ~0.99 worst; a clipped calibration (percentile 90) falls to ~0.3, so 0.95
# separates a working quantization from a broken one with a wide margin.
MEAN_COSINE_TOLERANCE = 0.95
TOP1_AGREEMENT_TOLERANCE = 0.8  # share of queries whose nearest gallery photo is the same for both models


@pytest.fixture(scope="module")
def calibration_photos():
    return [path for path, _ in grocery_photos(per_product=4, products=8, skip=10)]


@pytest.fixture(scope="module")
def gallery():
    return grocery_photos(per_product=6, products=8)


@pytest.fixture(scope="module")
def queries():
    return grocery_photos(per_product=3, products=8, skip=6)


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory, calibration_photos):
    centre_on = np.stack([preprocess(path, SPEC.input) for path in calibration_photos])
    return export_onnx(stand_in_net(centre_on=centre_on), tmp_path_factory.mktemp("q") / "fp32.onnx", spec=SPEC)


@pytest.fixture(scope="module")
def int8_model(fp32_model, calibration_photos):
    return quantize_int8(fp32_model, fp32_model.with_name("int8.onnx"), calibration_images=calibration_photos)


def test_int8_model_is_accepted_by_the_runtime_as_int8(fp32_model, int8_model):
    fp32, int8 = Embedder(fp32_model), Embedder(int8_model)
    assert int8.spec.quantization == "int8"
    assert int8.model_id != fp32.model_id and int8.model_id.startswith("standin-int8-")
    assert int8.spec.input == fp32.spec.input and int8.dim == fp32.dim
    assert (int8.spec.data_fingerprint, int8.spec.name, int8.spec.default_threshold) == (
        "grocery-test-0001",
        "stand-in",
        0.62,
    )


def test_int8_model_keeps_every_other_metadata_entry(fp32_model, int8_model):
    before, after = read_metadata(fp32_model), read_metadata(int8_model)
    changed = {PREFIX + "quantization", PREFIX + "model_id"}
    assert {k: v for k, v in before.items() if k not in changed} == {
        k: v for k, v in after.items() if k not in changed | {CALIBRATION_KEY}
    }
    calibration = json.loads(after[CALIBRATION_KEY])
    assert calibration["method"] == "percentile" and calibration["images"] == 32
    assert calibration["source_model_id"] == before[PREFIX + "model_id"]


def test_int8_graph_has_int8_weights_and_a_float_head(int8_model):
    graph = onnx.load(str(int8_model)).graph
    ops = [node.op_type for node in graph.node]
    weight_types = {t.name: t.data_type for t in graph.initializer}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert weight_types["stem.weight_quantized"] == onnx.TensorProto.INT8
    (projection,) = [node for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    assert weight_types[projection.input[1]] == onnx.TensorProto.FLOAT  # exclude_head: the projection stays float
    assert int8_model.stat().st_size < 0.7 * int8_model.with_name("fp32.onnx").stat().st_size


def test_int8_embeddings_stay_close_and_retrieve_the_same_neighbours(fp32_model, int8_model, gallery, queries):
    report = parity_report(fp32_model, int8_model, gallery=gallery, queries=queries, latency_runs=5)
    assert report["cosine_mean"] >= MEAN_COSINE_TOLERANCE
    assert report["top1_agreement"] >= TOP1_AGREEMENT_TOLERANCE
    assert report["int8"]["recall_at_1"] >= report["fp32"]["recall_at_1"] - 0.1


def test_a_clipping_calibration_is_caught_by_the_parity_check(fp32_model, calibration_photos, gallery, queries, tmp_path):
    broken = quantize_int8(
        fp32_model, tmp_path / "clipped.onnx", calibration_images=calibration_photos, config=QuantizeConfig(percentile=90.0)
    )
    report = parity_report(fp32_model, broken, gallery=gallery, queries=queries, latency_runs=1)
    assert report["cosine_mean"] < MEAN_COSINE_TOLERANCE


@pytest.mark.parametrize(
    "config",
    [QuantizeConfig(method="minmax"), QuantizeConfig(method="entropy"), QuantizeConfig(exclude_first_conv=True, reduce_range=True)],
    ids=["minmax", "entropy", "float-stem-7bit"],
)
def test_other_calibration_settings_also_give_working_models(config, fp32_model, calibration_photos, tmp_path):
    path = quantize_int8(fp32_model, tmp_path / "q.onnx", calibration_images=calibration_photos[:16], config=config)
    photos = calibration_photos[16:24]
    cosines = np.sum(Embedder(fp32_model).embed(photos) * Embedder(path).embed(photos), axis=1)
    assert cosines.mean() >= MEAN_COSINE_TOLERANCE
    if config.exclude_first_conv:
        graph = onnx.load(str(path)).graph
        assert onnx.TensorProto.FLOAT == {t.name: t.data_type for t in graph.initializer}["stem.weight"]


def test_calibration_feeds_what_the_runtime_feeds(calibration_photos):
    reader = PhotoCalibrationReader(calibration_photos[:5], SPEC.input, input_name="images", batch_size=2)
    assert len(reader) == 3
    batches = [batch["images"] for batch in reader]
    assert [b.shape for b in batches] == [(2, 64, 64, 3), (2, 64, 64, 3), (1, 64, 64, 3)]
    np.testing.assert_array_equal(batches[0][1], preprocess(calibration_photos[1], SPEC.input))
    reader.set_range(1, 2)
    assert [b["images"].shape[0] for b in reader] == [2]


def test_quantize_refuses_bad_requests(fp32_model, int8_model, calibration_photos, tmp_path):
    with pytest.raises(QuantizationError, match="calibration photos"):
        quantize_int8(fp32_model, tmp_path / "a.onnx", calibration_images=[])
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_int8(int8_model, tmp_path / "b.onnx", calibration_images=calibration_photos[:2])
    with pytest.raises(ValueError, match="calibration method"):
        QuantizeConfig(method="kl")


def test_parity_report_has_every_field_and_formats_as_markdown(fp32_model, int8_model, gallery, queries):
    report = parity_report(fp32_model, int8_model, gallery=gallery[:16], queries=queries[:8], latency_runs=3)
    for name in ("fp32", "int8"):
        entry = report[name]
        assert set(entry) == {
            "path", "model_id", "size_bytes", "recall_at_1", "recall_at_5", "map_at_r",
            "latency_ms_median", "latency_ms_p95",
        }
        assert 0.0 <= entry["map_at_r"] <= entry["recall_at_5"] + 1e-9 <= 1.0 + 1e-9
        assert entry["recall_at_1"] <= entry["recall_at_5"] and entry["latency_ms_median"] > 0
    assert {"top1_agreement", "cosine_mean", "cosine_min", "gallery_size", "query_count", "threads"} <= set(report)
    assert (report["gallery_size"], report["query_count"], report["threads"]) == (16, 8, 1)
    table = format_report(report)
    assert table.splitlines()[0] == "| metric | fp32 | int8 | int8 vs fp32 |"
    assert "| Recall@1 |" in table and report["int8"]["model_id"] in table


def test_retrieval_metrics_match_a_hand_computed_case(tmp_path):
    from snapmatch.export.parity import _map_at_r, _ranking, _recall_at

    gallery = np.eye(4, dtype=np.float32)  # labels 0, 0, 1, 1
    queries = np.array([[0.9, 0.1, 0.4, 0], [0, 0, 0.2, 0.98]], dtype=np.float32)  # labels 0, 1
    order = _ranking(queries, gallery, depth=4)
    assert order.tolist() == [[0, 2, 1, 3], [3, 2, 0, 1]]
    g, q = np.array([0, 0, 1, 1]), np.array([0, 1])
    assert _recall_at(order, g, q, 1) == 1.0
    # query 0: R=2, relevant at ranks 1 and 3 -> top-2 holds one: (1/1)/2 = 0.5; query 1: both in top 2 -> 1.
    assert _map_at_r(order, g, q) == pytest.approx(0.75)
