"""Damage that used to give wrong answers without an error (issue 15, items 2, 3, 5, 6): now found and refused.

Real catalogs on disk; each damage is done to the file as a disk or a person would do it.
"""

from __future__ import annotations

import json
import sqlite3
import struct

import numpy as np
import pytest

from snapmatch import CatalogCorruptError, ProductSearch
from snapmatch.sdk.catalog.catalog import Catalog
from snapmatch.sdk.catalog.verify import verify_catalog
from tests.model_factory import product_image


def unit(rng, n, dim=16):
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture()
def vector_catalog(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=16) as catalog:
        for p in range(4):
            catalog.add(f"p{p}", unit(rng, 2))
        catalog.compact()
        catalog.add("delta", unit(rng, 1))  # above the base: the first delta product
    return folder


def test_a_vector_with_a_flipped_exponent_bit_is_never_served(vector_catalog):
    with sqlite3.connect(vector_catalog / "catalog.sqlite") as conn:
        key, blob = conn.execute("SELECT key, vector FROM images WHERE product_id = 'delta'").fetchone()
        damaged = bytearray(blob)
        damaged[3] ^= 0x40  # the top exponent bit of the first float: about 1e34
        conn.execute("UPDATE images SET vector = ? WHERE key = ?", (bytes(damaged), key))
    assert abs(struct.unpack("<f", bytes(damaged[:4]))[0]) > 1e30
    rng = np.random.default_rng(5)
    with Catalog.open(vector_catalog, readonly=True) as catalog:
        answers = catalog.search(unit(rng, 20), k=1)
    assert all(matches[0].product_id != "delta" and matches[0].score <= 1.0 + 1e-5 for matches in answers)
    report = verify_catalog(vector_catalog)
    assert not report.ok and any(f"image keys {key}" in problem for problem in report.problems)


def test_a_manifest_field_changed_by_one_is_found_at_open(vector_catalog):
    path = vector_catalog / "manifest.json"
    raw = json.loads(path.read_text())
    raw["base"]["max_key"] += 1  # would hide the first delta product: listed, never found
    path.write_text(json.dumps(raw))
    for readonly in (True, False):
        with pytest.raises(CatalogCorruptError, match="checksum"):
            Catalog.open(vector_catalog, readonly=readonly)


@pytest.mark.parametrize("version", ["x", None, {}, 1.5, True])
def test_a_malformed_format_version_is_a_corrupt_catalog(vector_catalog, version):
    path = vector_catalog / "manifest.json"
    raw = json.loads(path.read_text())
    raw["format_version"] = version
    path.write_text(json.dumps(raw))
    with pytest.raises(CatalogCorruptError):
        Catalog.open(vector_catalog, readonly=True)


def test_a_flipped_bit_in_the_model_is_found_at_open_and_by_verify(tmp_path, model_path):
    folder = tmp_path / "shop"
    with ProductSearch.create(folder, model=model_path) as search:
        search.add_product("a", [product_image(0)])
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(CatalogCorruptError, match="model.onnx is damaged"):
        ProductSearch.open(folder, readonly=True)
    report = verify_catalog(folder)
    assert not report.ok and any("model.onnx is damaged" in problem for problem in report.problems)


def test_odd_paths_and_inputs_are_snapmatch_errors(vector_catalog, tmp_path):
    from snapmatch import CatalogError, InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="NUL"):
        Catalog.open(str(vector_catalog) + "\0x")
    with Catalog.open(vector_catalog, readonly=True) as catalog:
        for bad in (None, 5, "text"):
            with pytest.raises(InvalidArgumentError, match="vectors must be"):
                catalog.search(bad, k=1)
    lock = vector_catalog / "writer.lock"
    lock.unlink()
    lock.mkdir()
    with pytest.raises(CatalogError, match="is a directory"):
        Catalog.open(vector_catalog)
    lock.rmdir()
    lock.symlink_to(tmp_path / "nowhere" / "lock")
    with pytest.raises(CatalogError, match="link to nothing"):
        Catalog.open(vector_catalog)


def test_a_full_disk_during_compaction_leaves_no_temp_file(vector_catalog, monkeypatch):
    from snapmatch import CatalogError
    from snapmatch.sdk.catalog import base_index

    def full_disk(self, path):
        with open(path, "wb") as half:
            half.write(b"\0" * 4096)
        raise RuntimeError("Failed to serialize into stream")

    monkeypatch.setattr(base_index.Index, "save", full_disk)
    with Catalog.open(vector_catalog) as catalog:
        with pytest.raises(CatalogError, match="disk full"):
            catalog.compact()
        assert catalog.search(unit(np.random.default_rng(1), 1), k=1)[0]  # still answers
    assert not list(vector_catalog.glob(".*.tmp"))


def test_deleting_writer_lock_under_a_writer_does_not_let_a_second_one_in(vector_catalog):
    from snapmatch import CatalogLockedError

    with Catalog.open(vector_catalog):
        (vector_catalog / "writer.lock").unlink()
        with pytest.raises(CatalogLockedError):
            Catalog.open(vector_catalog)
    Catalog.open(vector_catalog).close()  # released: the next writer gets in


def test_a_lost_wal_loses_no_acknowledged_write(tmp_path):
    """Every commit is checkpointed into catalog.sqlite: a crash image without its WAL still has every product."""
    import shutil

    rng = np.random.default_rng(2)
    folder, image = tmp_path / "c", tmp_path / "image"
    with Catalog.create(folder, model_id="m", dim=16) as catalog:
        for p in range(5):
            catalog.add(f"p{p}", unit(rng, 2))
        catalog.remove("p1")
        shutil.copytree(folder, image)  # what the disk holds if the process dies now
    (image / "catalog.sqlite-wal").unlink(missing_ok=True)
    (image / "catalog.sqlite-shm").unlink(missing_ok=True)
    with Catalog.open(image, readonly=True) as reopened:
        assert sorted(p.id for p in reopened.products()) == ["p0", "p2", "p3", "p4"]


def test_a_damaged_graph_is_refused_before_search_and_rebuilt_by_the_writer(vector_catalog):
    manifest = json.loads((vector_catalog / "manifest.json").read_text())
    base = vector_catalog / manifest["base"]["file"]
    data = bytearray(base.read_bytes())
    data[-9] ^= 0x10  # inside the graph, past every header check: a search through it may crash
    base.write_bytes(bytes(data))
    for readonly in (True, False):  # hashed before any search: refused, never traversed
        with pytest.raises(CatalogCorruptError, match="SHA-256"):
            Catalog.open(vector_catalog, readonly=readonly)
    Catalog.open(vector_catalog, rebuild_base=True).close()  # what verify --repair does
    rng = np.random.default_rng(4)
    with Catalog.open(vector_catalog) as catalog:
        catalog.add("more", unit(rng, 1))
        assert catalog.compact()
    Catalog.open(vector_catalog, readonly=True).close()
    problems = verify_catalog(vector_catalog).problems  # a vector-only catalog has no model.onnx to check
    assert [p for p in problems if "model.onnx" not in p] == []  # rebuilt from the database, not patched


def test_a_new_catalog_folder_is_made_durable_in_its_parent(tmp_path, monkeypatch):
    """What a power cut needs (issue 15, item 9): each folder create makes has its parent fsynced."""
    from snapmatch.sdk import fsutil

    synced = []
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda path: (synced.append(str(path)), real(path)))
    fsutil.make_dir_durably(tmp_path / "shops" / "north" / "catalog")
    assert (tmp_path / "shops" / "north" / "catalog").is_dir()
    assert synced == [str(tmp_path), str(tmp_path / "shops"), str(tmp_path / "shops" / "north")]
    fsutil.make_dir_durably(tmp_path / "shops")  # already there: nothing to sync
    assert len(synced) == 3


def test_an_unchanged_base_is_hashed_once(vector_catalog, monkeypatch):
    from snapmatch.sdk.catalog import base_index

    calls = []
    real = base_index.file_sha256
    monkeypatch.setattr(base_index, "file_sha256", lambda path: (calls.append(path), real(path))[1])
    for _ in range(3):
        Catalog.open(vector_catalog, readonly=True).close()
    assert calls == []  # the writer that wrote it remembered the check
    manifest = json.loads((vector_catalog / "manifest.json").read_text())
    (vector_catalog / (manifest["base"]["file"] + base_index.INTACT_SUFFIX)).unlink()
    Catalog.open(vector_catalog, readonly=True).close()
    Catalog.open(vector_catalog, readonly=True).close()
    assert len(calls) == 2  # a reader cannot remember: it hashes (a writer's open would remember)
