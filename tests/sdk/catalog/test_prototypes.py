"""A product's prototype (the normalised mean of its photos) in exact search: what it wins, and that it stays exact."""

from __future__ import annotations

import numpy as np

from snapmatch.sdk.catalog.catalog import Catalog
from snapmatch.sdk.catalog.dense import QUANTIZED_FROM, REMOVED, DenseIndex


def unit(vectors) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_a_query_between_a_products_photos_names_it_by_their_mean(tmp_path):
    """Two photos of A at 45 degrees either side of the query, one photo of B at 30 degrees: each of A's photos
    is farther than B's (cos 0.707 against 0.866), their mean is the query itself (cos 1)."""
    a = unit([[1, 1, 0, 0], [1, -1, 0, 0]])
    b = unit([[np.cos(np.pi / 6), 0, np.sin(np.pi / 6), 0]])
    query = unit([1, 0, 0, 0])
    with Catalog.create(tmp_path / "c", model_id="m", dim=4) as catalog:
        keys_a = catalog.add("a", a)
        catalog.add("b", b)
        best, second = catalog.search(query, k=2)[0]
        assert (best.product_id, second.product_id) == ("a", "b")
        assert abs(best.score - 1.0) < 1e-6  # the prototype's cosine
        assert best.image_key == keys_a[0]  # still a photo of A: the best one (a tie: the first)
        assert abs(second.score - np.cos(np.pi / 6)) < 1e-6  # one photo: no prototype, its own cosine
        assert abs(best.margin - (1.0 - np.cos(np.pi / 6))) < 1e-6
        # With one of A's photos removed, A has no prototype left, and B's photo is nearer.
        catalog.remove("a")
        catalog.add("a", a[:1])
        assert [m.product_id for m in catalog.search(query, k=2)[0]] == ["b", "a"]


def test_the_graph_of_a_large_catalog_ranks_by_photos_alone(tmp_path):
    a = unit([[1, 1, 0, 0], [1, -1, 0, 0]])
    b = unit([[np.cos(np.pi / 6), 0, np.sin(np.pi / 6), 0]])
    with Catalog.create(tmp_path / "c", model_id="m", dim=4, exact_below=0) as catalog:
        catalog.add("a", a)
        catalog.add("b", b)
        catalog.compact()
        assert [m.product_id for m in catalog.search(unit([1, 0, 0, 0]), k=2)[0]] == ["b", "a"]


def prototype_scores(snapshot, query: np.ndarray) -> np.ndarray:
    """What a snapshot scores each product's prototype at for `query` (-inf: none)."""
    return snapshot.prototypes.scores(snapshot.vectors @ query)


def test_prototypes_follow_appends_and_removals_and_old_snapshots_keep_theirs():
    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((7, 8)))
    query = unit(rng.standard_normal(8))[0]

    def mean_score(rows) -> float:
        return float(unit(vectors[rows].astype(np.float64).mean(axis=0))[0] @ query)

    index = DenseIndex(8)
    index.append(np.arange(1, 4), ["a", "a", "b"], vectors[:3])
    first = index.snapshot
    assert first.prototypes is not None
    np.testing.assert_allclose(prototype_scores(first, query), [mean_score([0, 1]), -np.inf], atol=1e-6)
    assert list(first.prototypes.codes) == [0, REMOVED]  # b has one photo
    index.append(np.arange(4, 8), ["b", "c", "c", "a"], vectors[3:])
    second = index.snapshot
    np.testing.assert_allclose(prototype_scores(second, query),
                               [mean_score([0, 1, 6]), mean_score([2, 3]), mean_score([4, 5])], atol=1e-6)
    # the first snapshot is unchanged (a search holding it sees one consistent catalog)
    np.testing.assert_allclose(prototype_scores(first, query), [mean_score([0, 1]), -np.inf], atol=1e-6)
    index.keep_only(np.array([1, 3, 4, 5, 6, 7]))  # a loses key 2; nothing else changes
    np.testing.assert_allclose(prototype_scores(index.snapshot, query),
                               [mean_score([0, 6]), mean_score([2, 3]), mean_score([4, 5])], atol=1e-6)
    index.keep_only(np.array([1, 3, 4, 5]))  # a keeps one photo, c one: no prototype for either
    assert list(index.snapshot.prototypes.codes) == [REMOVED, 1, REMOVED]
    index.keep_only(np.array([1]))
    assert index.snapshot.prototypes is None  # no product has two photos


def test_lone_queries_and_batches_give_the_float64_answer_with_prototypes():
    """Products of 1-7 noisy photos, some removed, past QUANTIZED_FROM rows: the int8 scan of a lone query
    and the float32 product of a batch both give the reference answer, prototypes included."""
    rng = np.random.default_rng(1)
    products, dim = 300, 64
    sizes = rng.integers(1, 8, products)
    ids = [f"p{i}" for i in range(products) for _ in range(sizes[i])]
    centres = rng.standard_normal((products, dim))
    vectors = unit(np.repeat(centres, sizes, axis=0) + 1.2 * rng.standard_normal((len(ids), dim)))
    keys = np.arange(1, len(ids) + 1)
    index = DenseIndex(dim)
    half = len(ids) // 2
    index.append(keys[:half], ids[:half], vectors[:half])
    index.append(keys[half:], ids[half:], vectors[half:])
    live = rng.random(len(ids)) > 0.15
    index.keep_only(keys[live])
    snapshot = index.snapshot
    assert len(snapshot) >= QUANTIZED_FROM and snapshot.quantized is not None
    queries = unit(centres[rng.integers(0, products, 40)] + 1.2 * rng.standard_normal((40, dim)))
    owners = np.array(ids, dtype=object)
    won_by_prototype = 0
    for query, batch, alone in zip(queries, snapshot.search(queries, 7), [snapshot.search(q[None], 7)[0]
                                                                           for q in queries]):
        scores = vectors.astype(np.float64) @ query.astype(np.float64)
        expected = []
        for product in sorted(set(owners[live])):
            rows = np.flatnonzero(live & (owners == product))
            best = rows[np.argmax(scores[rows])]
            score = scores[best]
            if len(rows) >= 2:
                mean = vectors[rows].astype(np.float64).mean(axis=0)
                typical = float(mean @ query / np.linalg.norm(mean))
                won_by_prototype += typical > score
                score = max(score, typical)
            expected.append((-score, product, int(keys[best])))
        expected.sort()
        for found in (batch, alone):
            assert [(m.product_id, m.image_key) for m in found] == [(p, key) for _, p, key in expected[:7]]
            np.testing.assert_allclose([m.score for m in found], [-s for s, _, _ in expected[:7]], atol=1e-5)
    assert won_by_prototype > 0  # the case is tested, not only the photos
