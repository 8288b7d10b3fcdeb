"""The one-thread product of a few queries with a matrix's rows (onnxruntime's Gemm, a hand-written graph)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from snapmatch.sdk.catalog.row_products import SMALL_BATCH, gemm_model_bytes, row_products


@pytest.mark.parametrize("queries", [1, 3, SMALL_BATCH, SMALL_BATCH + 1, 40])
def test_equals_numpy_for_any_batch(queries):
    rng = np.random.default_rng(queries)
    a = rng.standard_normal((queries, 96)).astype(np.float32)
    b = rng.standard_normal((500, 96)).astype(np.float32)
    out = row_products(a, b)
    assert out.shape == (queries, 500) and out.dtype == np.float32
    np.testing.assert_allclose(out, a @ b.T, rtol=1e-4, atol=1e-4)


def test_a_query_scores_the_same_alone_or_in_a_batch():
    rng = np.random.default_rng(7)
    batch = rng.standard_normal((SMALL_BATCH, 960)).astype(np.float32)
    rows = rng.standard_normal((2000, 960)).astype(np.float32)
    together = row_products(batch, rows)
    for i, query in enumerate(batch):
        np.testing.assert_array_equal(row_products(query[None], rows)[0], together[i])


def test_views_float64_and_empty_inputs():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((20, 64))
    rows = big[2:12]  # a row slice (what a grown DenseIndex publishes), float64: converted, not misread
    query = big[:1, :]
    np.testing.assert_allclose(row_products(query, rows), query @ rows.T, rtol=1e-4, atol=1e-4)
    assert row_products(query, np.zeros((0, 64))).shape == (1, 0)
    assert row_products(np.zeros((0, 64)), rows).shape == (0, 10)


def test_the_hand_written_graph_is_the_one_onnx_helper_writes():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    expected = helper.make_model(
        helper.make_graph(
            [helper.make_node("Gemm", ["a", "b"], ["c"], name="gemm", transB=1)], "row_products",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["q", "d"]),
             helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", "d"])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["q", "n"])]),
        opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    assert gemm_model_bytes() == expected.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(gemm_model_bytes()), full_check=True)


def test_threads_share_the_session():
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((300, 32)).astype(np.float32)
    queries = rng.standard_normal((16, 1, 32)).astype(np.float32)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(20):
            results[i] = row_products(queries[i], rows)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, query in enumerate(queries):
        np.testing.assert_allclose(results[i], query @ rows.T, rtol=1e-4, atol=1e-4)
