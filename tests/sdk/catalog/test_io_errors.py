"""An I/O error is not damage (issue 15, item 9): a failing disk gives CatalogError with advice to retry, never
CatalogCorruptError (whose advice, restore from a backup, would throw a sound catalog away), and it leaves the
catalog as it was. The errors are injected where the catalog calls the file system; the catalogs are real."""

from __future__ import annotations

import errno
import os
import sqlite3

import numpy as np
import pytest

from snapmatch import CatalogCorruptError, CatalogError, ProductSearch
from snapmatch.sdk.catalog import base_index, store
from snapmatch.sdk.catalog.catalog import Catalog
from tests.model_factory import product_image
from tests.sdk.catalog.test_damage import unit

QUERIES = unit(np.random.default_rng(7), 5)


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "c"
    with Catalog.create(folder, model_id="m", dim=16) as catalog:
        for p in range(6):
            catalog.add(f"p{p}", unit(rng, 2))
        catalog.compact()
        catalog.add("delta", unit(rng, 1))
        catalog.remove("p1")
    return folder


def answers(folder):
    with Catalog.open(folder, readonly=True) as catalog:
        return [[(m.product_id, round(m.score, 5)) for m in r] for r in catalog.search(QUERIES, k=3)]


def failing(real, *, when, code=errno.EIO):
    """`real`, except that it raises OSError(code) for calls whose first argument's name satisfies `when`."""
    def call(*args, **kwargs):
        if when(os.fspath(args[0]) if args and isinstance(args[0], (str, os.PathLike)) else ""):
            raise OSError(code, os.strerror(code), os.fspath(args[0]))
        return real(*args, **kwargs)
    return call


@pytest.mark.parametrize("step, target", [
    ("rename of the new manifest", ("replace", lambda name: name.endswith("manifest.json.") or ".manifest.json" in name)),
    ("rename of the new base", ("replace", lambda name: ".base-" in name)),
    ("fsync of the folder", ("fsync_dir", lambda name: True)),
])
def test_an_io_error_during_compaction_is_an_io_error_and_changes_nothing(folder, monkeypatch, step, target):
    before = answers(folder)
    function, when = target
    from snapmatch.sdk import fsutil
    from snapmatch.sdk.catalog import base_index as base_module

    with Catalog.open(folder) as catalog:
        if function == "replace":
            monkeypatch.setattr(os, "replace", failing(os.replace, when=when))
        else:
            monkeypatch.setattr(fsutil, "fsync_dir", failing(fsutil.fsync_dir, when=when))
            monkeypatch.setattr(base_module, "fsync_dir", failing(fsutil.fsync_dir, when=when))
        with pytest.raises(CatalogError) as raised:
            catalog.compact(rebuild=True)
        assert not isinstance(raised.value, CatalogCorruptError), step
        monkeypatch.undo()
        assert [[(m.product_id, round(m.score, 5)) for m in r] for r in catalog.search(QUERIES, k=3)] == before
    assert not list(folder.glob(".*.tmp")), step
    assert answers(folder) == before  # reopened after the failed compaction: as before
    with Catalog.open(folder) as catalog:
        assert catalog.compact(rebuild=True)  # and it compacts once the disk works
    assert answers(folder) == before


def test_a_base_that_cannot_be_read_is_an_io_error_not_damage(folder, monkeypatch):
    for remembered in folder.glob("*" + base_index.INTACT_SUFFIX):
        remembered.unlink()  # so that open hashes the base
    monkeypatch.setattr(base_index, "file_sha256", failing(base_index.file_sha256, when=lambda name: True))
    with pytest.raises(CatalogError, match="I/O error") as raised:
        Catalog.open(folder, readonly=True).search(QUERIES, k=1)
    assert not isinstance(raised.value, CatalogCorruptError)


def test_removing_the_replaced_base_is_cleanup_a_failure_of_which_the_next_writer_finishes(folder, monkeypatch):
    before = answers(folder)
    (old,) = folder.glob("base-*.usearch")
    real_unlink = type(old).unlink

    def unlink(path, missing_ok=False):
        if path.name.startswith("base-"):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    with Catalog.open(folder) as catalog:
        monkeypatch.setattr(type(old), "unlink", unlink)
        assert catalog.compact(rebuild=True)  # done, although the old file could not be removed
        monkeypatch.undo()
    assert old.exists() and len(list(folder.glob("base-*.usearch"))) == 2
    Catalog.open(folder).close()  # the next writer removes the orphan
    assert not old.exists()
    assert answers(folder) == before


def test_sqlite_io_errors_are_io_errors_and_only_sqlite_damage_is_damage(tmp_path):
    def raised(code: int, cls=sqlite3.OperationalError) -> Exception:
        error = cls("some sqlite error")
        error.sqlite_errorcode = code
        try:
            with store.translate_errors(tmp_path):
                raise error
        except CatalogError as exc:
            return exc
        raise AssertionError("not translated")

    assert type(raised(10)) is CatalogError  # SQLITE_IOERR
    assert type(raised(10 | (4 << 8))) is CatalogError  # SQLITE_IOERR_READ
    assert type(raised(13)) is CatalogError  # SQLITE_FULL
    assert type(raised(11, sqlite3.DatabaseError)) is CatalogCorruptError  # SQLITE_CORRUPT
    assert type(raised(26, sqlite3.DatabaseError)) is CatalogCorruptError  # SQLITE_NOTADB


def test_sqlite_damage_on_a_disk_that_fails_to_read_is_an_io_error(folder, monkeypatch):
    """Reads that fail mid-page can make SQLite see a malformed page (found by test_powercut.py): the catalog
    reads its database once before it believes that, and a failing read makes it an I/O error."""
    import builtins

    malformed = sqlite3.DatabaseError("database disk image is malformed")
    malformed.sqlite_errorcode = 11  # SQLITE_CORRUPT
    monkeypatch.setattr(builtins, "open", failing(builtins.open, when=lambda name: name.endswith("catalog.sqlite")))
    with pytest.raises(CatalogError) as raised, store.translate_errors(folder):
        raise malformed
    assert type(raised.value) is CatalogError and "retry" in str(raised.value)
    monkeypatch.undo()
    with pytest.raises(CatalogCorruptError, match="restore it from a backup"), store.translate_errors(folder):
        raise malformed  # the same error on a disk that reads: damage


def test_a_full_disk_at_create_is_a_catalog_error(tmp_path, model_path, monkeypatch):
    from snapmatch.sdk import product_search

    monkeypatch.setattr(product_search.shutil, "copyfile",
                        failing(product_search.shutil.copyfile, when=lambda name: True, code=errno.ENOSPC))
    with pytest.raises(CatalogError, match="disk is full"):
        ProductSearch.create(tmp_path / "new", model=model_path)
    monkeypatch.undo()
    with ProductSearch.create(tmp_path / "new", model=model_path) as search:  # the interrupted create is finished
        search.add_product("a", [product_image(1)])
