"""The int8 copy of a small catalog's rows: its error bounds hold, so the exact answer can be found from it."""

from __future__ import annotations

import numpy as np
import pytest

from snapmatch.sdk.catalog.dense import QUANTIZED_FROM, DenseIndex
from snapmatch.sdk.catalog.quantized_rows import QuantizedRows, quantize, quantized_rows


def rows_of_every_shape(dim: int, seed: int) -> np.ndarray:
    """Unit rows, rows with one large component, tiny rows, a zero row: the cases a scale can get wrong."""
    rng = np.random.default_rng(seed)
    unit = rng.standard_normal((300, dim))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    spiky = 0.01 * rng.standard_normal((50, dim))
    spiky[np.arange(50), rng.integers(0, dim, 50)] = 1.0
    tiny = 1e-6 * rng.standard_normal((20, dim))
    return np.concatenate([unit, spiky, tiny, np.zeros((1, dim))]).astype(np.float32)


@pytest.mark.parametrize("dim", [3, 64, 960])
def test_bounds_contain_every_float_score(dim):
    rows = rows_of_every_shape(dim, seed=dim)
    quantized = QuantizedRows(*quantized_rows(rows))
    for query in rows_of_every_shape(dim, seed=dim + 1)[::17]:
        lower, upper = quantized.bounds(query)
        true = rows.astype(np.float64) @ query.astype(np.float64)
        assert np.all(lower <= true) and np.all(true <= upper)
        # and tight enough to be useful: unit rows and a unit query, within a few hundredths
        if abs(np.linalg.norm(query) - 1) < 1e-3:
            assert np.median(upper[:300] - lower[:300]) < 0.1


def test_quantize_keeps_each_row_within_half_a_step():
    rows = rows_of_every_shape(96, seed=0)
    codes, scales = quantize(rows)
    assert codes.dtype == np.int8 and np.abs(codes.astype(int)).max() <= 127
    assert np.all(np.abs(codes * scales[:, None] - rows) <= scales[:, None] / 2 + 1e-9)
    assert np.all(codes[-1] == 0)  # the zero row


def test_dense_index_quantizes_from_its_threshold_and_keeps_the_copy_through_renames_and_removals():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((QUANTIZED_FROM, 16)).astype(np.float32)
    index = DenseIndex(16)
    index.append(np.arange(1, QUANTIZED_FROM), ["a"] * (QUANTIZED_FROM - 1), vectors[:-1])
    assert index.snapshot.quantized is None
    index.append(np.array([QUANTIZED_FROM]), ["b"], vectors[-1:])
    quantized = index.snapshot.quantized
    assert quantized is not None and len(quantized.rows) == QUANTIZED_FROM
    np.testing.assert_array_equal(quantized.rows, quantize(vectors)[0])  # appended in two parts, same codes
    index.set_names({"a": "A"})
    index.keep_only(np.arange(2, QUANTIZED_FROM + 1))
    assert index.snapshot.quantized is quantized  # rows unchanged: not packed again


def test_a_lone_query_finds_the_float_answer_among_many_near_equal_photos():
    """Many photos per product, all near the query: the case where the int8 order is wrong most often."""
    rng = np.random.default_rng(5)
    products, photos, dim = 40, 30, 960
    centres = rng.standard_normal((products, dim)).astype(np.float32)
    vectors = np.repeat(centres, photos, axis=0) + 3 * rng.standard_normal((products * photos, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i}" for i in np.repeat(np.arange(products), photos)]
    index = DenseIndex(dim)
    index.append(np.arange(1, len(vectors) + 1), ids, vectors)
    index.keep_only(np.arange(1, len(vectors) + 1)[rng.random(len(vectors)) > 0.2])
    snapshot = index.snapshot
    assert snapshot.quantized is not None
    queries = centres[rng.integers(0, products, 20)] + 3 * rng.standard_normal((20, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    live = snapshot.codes >= 0
    for query in queries:
        found = snapshot.search(query[None], 7)[0]
        scores = vectors.astype(np.float64) @ query
        best: dict[str, tuple[float, int]] = {}
        for row in np.flatnonzero(live):
            if ids[row] not in best or scores[row] > best[ids[row]][0]:
                best[ids[row]] = (scores[row], row + 1)
        for product, (score, key) in best.items():  # a product's score: its best image or its prototype
            own = vectors[live & (np.array(ids) == product)].astype(np.float64)
            if len(own) >= 2:
                mean = own.mean(axis=0)
                best[product] = (max(score, float(mean @ query / np.linalg.norm(mean))), key)
        expected = sorted(best.items(), key=lambda item: -item[1][0])[:7]
        assert [(m.product_id, m.image_key) for m in found] == [(pid, key) for pid, (_, key) in expected]
        np.testing.assert_allclose([m.score for m in found], [s for _, (s, _) in expected], atol=1e-5)
