"""A reduced base (Catalog.create(base_dim=...)): the graph holds principal coordinates, results are exact.

Real usearch files and SQLite: the base's header says how many dimensions it
holds, search returns the cosine of the stored float32 vectors, a patched base
keeps its directions and a rebuilt one fits new ones, and a damaged
directions file is found at open and by verify, and repaired.
"""

from __future__ import annotations

import numpy as np
import pytest

from snapmatch.sdk.catalog import projection
from snapmatch.sdk.catalog._usearch import Index
from snapmatch.sdk.catalog.catalog import Catalog
from snapmatch.sdk.catalog.manifest import read_manifest
from snapmatch.sdk.catalog.verify import verify_catalog
from snapmatch.sdk.errors import CatalogCorruptError, InvalidArgumentError
from tests.conftest import unit_vectors

DIM, BASE_DIM = 48, 16


def products(count: int, per: int, seed: int) -> np.ndarray:
    """`per` photos of each of `count` products: unit vectors spread around a product's direction,
    with the energy of real embeddings concentrated in a few directions."""
    rng = np.random.default_rng(seed)
    scale = np.linspace(3.0, 0.3, DIM)  # a decaying spectrum: most of the energy in the first directions
    centres = rng.standard_normal((count, DIM)) * scale + 2.0
    photos = np.repeat(centres, per, axis=0) + 0.3 * rng.standard_normal((count * per, DIM)) * scale
    return (photos / np.linalg.norm(photos, axis=1, keepdims=True)).astype(np.float32)


def fill(catalog: Catalog, vectors: np.ndarray, per: int, first: int = 0) -> None:
    for product in range(len(vectors) // per):
        catalog.add(f"p{first + product}", vectors[per * product:per * (product + 1)])


def test_fit_finds_the_leading_principal_directions():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0]
    data = (rng.standard_normal((5000, DIM)) * np.r_[np.full(4, 10.0), np.full(DIM - 4, 0.1)]) @ basis.T
    directions = projection.fit(iter(np.array_split(data, 7)), 4)
    assert directions.shape == (4, DIM) and directions.dtype == np.float32
    np.testing.assert_allclose(directions @ directions.T, np.eye(4), atol=1e-5)
    # the same subspace as the first four basis vectors
    np.testing.assert_allclose(np.linalg.svd(directions @ basis[:, :4])[1], np.ones(4), atol=1e-3)


def test_a_reduced_base_answers_with_exact_scores(tmp_path):
    vectors = products(150, 4, seed=1)
    queries = unit_vectors(40, DIM, seed=2) * 0.2 + vectors[::15]
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    found = {}
    for name, base_dim in (("full", 0), ("reduced", BASE_DIM)):
        with Catalog.create(tmp_path / name, model_id="m", dim=DIM, vector_dtype="i8", base_dim=base_dim,
                            compact_at=1 << 20, exact_below=0) as catalog:
            fill(catalog, vectors, 4)
            catalog.compact()
            found[name] = catalog.search(queries, k=3)
            assert catalog.stats()["base_dim"] == (base_dim or DIM)
    base = read_manifest(tmp_path / "reduced").base
    assert (base.dim, base.projection) == (BASE_DIM, "proj-000001.npy")
    assert Index.metadata(str(tmp_path / "reduced" / base.file))["dimensions"] == BASE_DIM
    assert read_manifest(tmp_path / "full").base.dim == 0
    agree = 0
    for query, full, reduced in zip(queries, found["full"], found["reduced"]):
        for match in reduced:  # keys are 1, 2, ... in insertion order: each score is the stored vector's cosine
            assert match.score == pytest.approx(float(vectors[match.image_key - 1] @ query), abs=1e-5)
        agree += [m.product_id for m in reduced] == [m.product_id for m in full]
    assert agree >= 0.9 * len(queries)


def test_a_patch_keeps_the_directions_and_a_rebuild_fits_new_ones(tmp_path):
    vectors = products(80, 3, seed=3)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=DIM, base_dim=BASE_DIM, compact_at=1 << 20,
                        exact_below=0) as catalog:
        fill(catalog, vectors[:180], 3)
        catalog.compact()
        first = read_manifest(folder).base
        fill(catalog, vectors[180:], 3, first=60)  # in the delta: searched exactly beside the base
        assert catalog.search(vectors[200:201], k=1)[0][0].product_id == "p66"
        catalog.compact()  # patches the base: the same directions
        patched = read_manifest(folder).base
        assert (patched.generation, patched.projection, patched.projection_sha256) == (
            2, first.projection, first.projection_sha256)
        assert catalog.search(vectors[200:201], k=1)[0][0].product_id == "p66"
        catalog.compact(rebuild=True)
        rebuilt = read_manifest(folder).base
        assert rebuilt.projection == "proj-000003.npy"
        assert sorted(path.name for path in folder.glob("proj-*")) == ["proj-000003.npy"]
        assert catalog.search(vectors[200:201], k=1)[0][0].product_id == "p66"
        catalog.remove("p66")
        catalog.compact()
        assert all(m.product_id != "p66" for m in catalog.search(vectors[200:201], k=5)[0])
    with Catalog.open(folder, readonly=True, exact_below=0) as reader:
        assert reader.search(vectors[:1], k=1)[0][0].product_id == "p0"


def test_an_adapted_catalog_reduces_the_adapted_vectors(tmp_path):
    vectors = products(60, 4, seed=4)
    with Catalog.create(tmp_path / "c", model_id="m", dim=DIM, base_dim=BASE_DIM, adapt=True, compact_at=1 << 20,
                        exact_below=0) as catalog:
        fill(catalog, vectors, 4)
        catalog.compact(refit=True)
        metric = catalog.adaptation
        assert metric is not None and read_manifest(tmp_path / "c").base.dim == BASE_DIM
        for query, matches in zip(vectors[::9], catalog.search(vectors[::9], k=3)):
            expected = metric.apply(vectors[[m.image_key - 1 for m in matches]]) @ metric.apply(query[None])[0]
            np.testing.assert_allclose([m.score for m in matches], expected, atol=1e-5)
            assert matches[0].score == pytest.approx(1.0, abs=1e-5)  # its own photo


def test_a_damaged_projection_is_found_and_repaired(tmp_path):
    vectors = products(50, 3, seed=5)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=DIM, base_dim=BASE_DIM, compact_at=1 << 20) as catalog:
        fill(catalog, vectors, 3)
        catalog.compact()
    path = folder / read_manifest(folder).base.projection
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CatalogCorruptError, match="verify --repair"):
        Catalog.open(folder, readonly=True)
    report = verify_catalog(folder)
    assert not report.ok and any("projection" in problem for problem in report.problems)
    verify_catalog(folder, repair=True)
    # a vector-only catalog has no model.onnx to check: every other problem is gone
    assert [problem for problem in verify_catalog(folder).problems if "model" not in problem] == []
    assert not path.exists()  # the damaged file was replaced by the rebuild's own
    with Catalog.open(folder, readonly=True) as catalog:
        assert catalog.search(vectors[4:5], k=1)[0][0].product_id == "p1"


def test_an_interrupted_build_leaves_no_directions_behind(tmp_path):
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=DIM, base_dim=BASE_DIM, compact_at=1 << 20) as catalog:
        fill(catalog, products(10, 2, seed=6), 2)
        catalog.compact()
    stray = folder / "proj-000009.npy"  # written by a build that died before its manifest
    stray.write_bytes(b"partial")
    Catalog.open(folder).close()  # the writer's open cleans up
    assert not stray.exists() and (folder / read_manifest(folder).base.projection).exists()


@pytest.mark.parametrize("base_dim", [DIM, -1, 2.5, True])
def test_base_dim_must_be_fewer_than_the_catalogs(tmp_path, base_dim):
    with pytest.raises(InvalidArgumentError, match="base_dim"):
        Catalog.create(tmp_path / "c", model_id="m", dim=DIM, base_dim=base_dim)
    assert not (tmp_path / "c" / "manifest.json").exists()
