"""`snapmatch catalog ...` as a user sees it: exit codes, messages, and what is left on disk."""

from __future__ import annotations

import json
import sqlite3

import cv2
import pytest
from click.testing import CliRunner

from snapmatch.cli import EXIT_PARTIAL, cli
from snapmatch.sdk.catalog.manifest import read_manifest


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def catalog(tmp_path, model_path):
    folder = tmp_path / "cat"
    result = run("catalog", "create", folder, "--model", model_path)
    assert result.exit_code == 0, result.output
    return folder


def db_products(folder) -> dict[str, int]:
    with sqlite3.connect(folder / "catalog.sqlite") as conn:
        return dict(conn.execute("SELECT product_id, count(*) FROM images GROUP BY product_id").fetchall())


def test_create_writes_manifest_model_copy_and_database(catalog, model_path):
    manifest = read_manifest(catalog)
    assert manifest.model_id == "test-model-0-64" and manifest.dim == 64
    assert (catalog / "model.onnx").read_bytes() == model_path.read_bytes()
    assert db_products(catalog) == {}


def test_create_refuses_existing_catalog(catalog, model_path):
    result = run("catalog", "create", catalog, "--model", model_path)
    assert result.exit_code == 1
    assert result.output.strip() == f"error: a catalog already exists at {catalog}"


def test_create_refuses_non_snapmatch_model(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    result = run("catalog", "create", tmp_path / "cat", "--model", bogus)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "not a loadable ONNX model" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_add_new_then_existing_product(catalog, photo_dir):
    first = run("catalog", "add", catalog, "milk", photo_dir / "product_0" / "0.jpg", "--name", "Milk 1 l", "--json")
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout)
    assert payload["new_product"] is True and len(payload["image_keys"]) == 1
    second = run("catalog", "add", catalog, "milk", photo_dir / "product_0" / "1.jpg", photo_dir / "product_0" / "2.jpg")
    assert second.exit_code == 0
    assert second.output.strip() == "added 2 image(s) to existing product milk"
    assert db_products(catalog) == {"milk": 3}


def test_add_with_bad_image_changes_nothing(catalog, photo_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((photo_dir / "product_0" / "0.jpg").read_bytes()[:200])
    result = run("catalog", "add", catalog, "milk", photo_dir / "product_0" / "0.jpg", broken)
    assert result.exit_code == 1
    assert str(broken) in result.output
    assert db_products(catalog) == {}


def test_import_folder_skips_unreadable_images_and_commits_the_rest(catalog, photo_dir):
    (photo_dir / "product_1" / "notes.jpg").write_text("not an image")
    (photo_dir / "product_2" / "empty.png").write_bytes(b"")
    result = run("catalog", "import", catalog, photo_dir)
    assert result.exit_code == EXIT_PARTIAL
    assert "imported 15 image(s): 5 new product(s), 0 extended" in result.output
    assert f"skipped {photo_dir / 'product_1' / 'notes.jpg'}" in result.output
    assert f"skipped {photo_dir / 'product_2' / 'empty.png'}" in result.output
    assert "warning: 2 of 17 image(s) skipped" in result.output
    assert db_products(catalog) == {f"product_{i}": 3 for i in range(5)}


def test_import_list_file_with_names_and_relative_paths(catalog, photo_dir):
    listing = photo_dir / "list.csv"
    listing.write_text(
        "# path, product, name\n"
        "product_0/0.jpg, milk, \"Milk, 1 l\"\n"
        "product_0/1.jpg, milk\n"
        "\n"
        "product_3/0.jpg, beans, Beans\n"
    )
    result = run("catalog", "import", catalog, listing, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"products_added": 2, "products_extended": 0, "images_added": 3, "duplicates": 0,
                                         "skipped": []}
    info = json.loads(run("catalog", "info", catalog, "--products", "--json").stdout)
    assert info["product_list"] == [
        {"id": "beans", "name": "Beans", "image_count": 1},
        {"id": "milk", "name": "Milk, 1 l", "image_count": 2},
    ]


def test_import_list_file_malformed_line_names_the_line(catalog, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg, milk\njust-a-path.jpg\n")
    result = run("catalog", "import", catalog, listing)
    assert result.exit_code == 1
    assert f"{listing}:2: expected `path, product_id[, name]`" in result.output


def test_remove_compact_and_info(catalog, photo_dir):
    assert run("catalog", "import", catalog, photo_dir).exit_code == 0
    removed = run("catalog", "remove", catalog, "product_1", "--json")
    assert json.loads(removed.stdout) == {"removed": {"product_1": 3}}
    compacted = json.loads(run("catalog", "compact", catalog, "--json").stdout)
    assert compacted["compacted"] is True and compacted["base_vectors"] == 12 and compacted["tombstones"] == 0
    again = run("catalog", "compact", catalog)
    assert again.output.startswith("nothing to compact")
    assert sorted(db_products(catalog)) == ["product_0", "product_2", "product_3", "product_4"]
    assert sorted(p.name for p in catalog.glob("base-*.usearch")) == ["base-000001.usearch"]


def test_remove_unknown_product(catalog):
    result = run("catalog", "remove", catalog, "nope")
    assert result.exit_code == 1
    assert result.output.strip() == "error: no product 'nope' in the catalog"


def test_missing_catalog_is_one_line_error(tmp_path):
    for args in (("catalog", "info"), ("catalog", "compact"), ("catalog", "verify")):
        result = run(*args, tmp_path / "missing")
        assert result.exit_code == 1
        assert result.output.strip() == f"error: no catalog at {tmp_path / 'missing'}: the folder does not exist"


def test_calibrate_stores_threshold(catalog, photo_dir, image_of):
    assert run("catalog", "import", catalog, photo_dir).exit_code == 0
    labelled = photo_dir.parent / "labelled"
    for product in range(5):
        folder = labelled / f"product_{product}"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "q.jpg"), image_of(product, variant=7))
    unknown = labelled / "_unknown"
    unknown.mkdir()
    for product in range(10, 14):
        cv2.imwrite(str(unknown / f"{product}.jpg"), image_of(product, variant=1))
    refused = run("catalog", "calibrate", catalog, labelled, "--target-precision", "1.0")
    assert refused.exit_code == 1 and "9 photo(s) are too few" in refused.output  # nothing stored
    assert read_manifest(catalog).threshold_source != "calibrated"
    result = run("catalog", "calibrate", catalog, labelled, "--target-precision", "1.0", "--force", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["photos"] == 9 and payload["unknown_photos"] == 4
    manifest = read_manifest(catalog)
    assert manifest.threshold == pytest.approx(payload["threshold"]) and manifest.threshold_source == "calibrated"
    # At precision 1.0 every known photo is accepted and every unknown one rejected.
    identified = json.loads(run("identify", catalog, *sorted(labelled.rglob("*.jpg")), "--json").stdout)
    names = {r["image"].split("/")[-2]: r["product"] for r in identified["results"]}
    assert names["_unknown"] is None


def test_verify_detects_and_repairs_a_damaged_base(catalog, photo_dir, image_of, tmp_path):
    assert run("catalog", "import", catalog, photo_dir).exit_code == 0
    assert run("catalog", "compact", catalog).exit_code == 0
    base = next(catalog.glob("base-*.usearch"))
    data = bytearray(base.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit inside the graph: size and header still fine
    base.write_bytes(bytes(data))
    found = run("catalog", "verify", catalog, "--json")
    assert found.exit_code == 1
    assert any("checksum" in problem for problem in json.loads(found.stdout)["problems"])
    repaired = run("catalog", "verify", catalog, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "repaired:" in repaired.output and repaired.output.strip().endswith(": ok")
    query = tmp_path / "q.jpg"
    cv2.imwrite(str(query), image_of(3, variant=8))
    top = json.loads(run("search", catalog, query, "-k", "1", "--json").stdout)["results"][0]["matches"][0]
    assert top["product_id"] == "product_3"


def test_help_of_every_command_has_an_example():
    for args in (["catalog", name] for name in ("create", "add", "import", "remove", "compact", "info", "calibrate", "verify")):
        result = run(*args, "--help")
        assert result.exit_code == 0
        assert "snapmatch catalog" in result.output


def test_tune_changes_search_and_rebuild_settings_durably(tmp_path, model_path):
    folder = tmp_path / "cat"
    assert run("catalog", "create", folder, "--model", model_path).exit_code == 0
    result = run("catalog", "tune", folder, "--expansion-search", "150", "--connectivity", "24", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["expansion_search"] == 150
    info = json.loads(run("catalog", "info", folder, "--json").output)
    assert (info["expansion_search"], info["connectivity"]) == (150, 24)
    nothing = run("catalog", "tune", folder)
    assert nothing.exit_code == 2 and "at least one setting" in nothing.output


def test_the_same_import_twice_adds_nothing_the_second_time(catalog, photo_dir):
    first = run("catalog", "import", catalog, photo_dir)
    assert first.exit_code == 0 and first.output.startswith("imported 15 image(s): 5 new product(s)")
    again = run("catalog", "import", catalog, photo_dir, "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"products_added": 0, "products_extended": 0, "images_added": 0,
                                        "duplicates": 15, "skipped": []}
    assert db_products(catalog) == {f"product_{p}": 3 for p in range(5)}
    added = run("catalog", "add", catalog, "product_0", photo_dir / "product_0" / "0.jpg")
    assert added.output.strip() == "added 0 image(s) to existing product product_0; 1 already in it, skipped"


def test_an_interrupted_import_says_what_it_committed_and_resumes(catalog, photo_dir, monkeypatch):
    from snapmatch.sdk.product_search import ProductSearch

    original, calls = ProductSearch.add, []

    def add_then_ctrl_c(self, product_id, images, **options):
        calls.append(product_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, product_id, images, **options)

    monkeypatch.setattr(ProductSearch, "add", add_then_ctrl_c)
    result = run("catalog", "import", catalog, photo_dir)
    assert result.exit_code == 130
    assert result.output.strip() == ("error: interrupted (Ctrl-C) after 2 of 5 products: 6 image(s) committed "
                                     "(2 new product(s)); run the same import again to finish it (photos already "
                                     "in are skipped)")
    assert db_products(catalog) == {"product_0": 3, "product_1": 3}
    monkeypatch.setattr(ProductSearch, "add", original)
    resumed = run("catalog", "import", catalog, photo_dir)
    assert resumed.output.startswith("imported 9 image(s): 3 new product(s), 0 extended; 6 already in the catalog")
    assert db_products(catalog) == {f"product_{p}": 3 for p in range(5)}


def test_a_list_files_header_line_is_not_a_photo(catalog, photo_dir):
    listing = photo_dir / "list.csv"
    listing.write_text("path, product_id, name\nproduct_0/0.jpg, milk, Milk\n")
    result = run("catalog", "import", catalog, listing)
    assert result.exit_code == 0, result.output
    assert db_products(catalog) == {"milk": 1}


def test_create_refuses_a_folder_of_photos(photo_dir, model_path):
    result = run("catalog", "create", photo_dir, "--model", model_path)
    assert result.exit_code == 1 and "is not empty" in result.output and "not a catalog" in result.output
    assert not (photo_dir / "manifest.json").exists() and not (photo_dir / "catalog.sqlite").exists()


def test_calibrate_on_the_catalogs_own_photos_is_refused(catalog, photo_dir):
    assert run("catalog", "import", catalog, photo_dir).exit_code == 0
    result = run("catalog", "calibrate", catalog, photo_dir)
    assert result.exit_code == 1 and "catalog's own photos" in result.output
    assert read_manifest(catalog).threshold_source != "calibrated"


def test_info_lists_products_in_aligned_columns(catalog, photo_dir):
    assert run("catalog", "import", catalog, photo_dir).exit_code == 0
    assert run("catalog", "add", catalog, "product_0", "--name", "A longer name",
               photo_dir / "product_1" / "0.jpg").exit_code == 0
    lines = run("catalog", "info", catalog, "--products").output.splitlines()
    rows = lines[lines.index(next(line for line in lines if line.strip().startswith("product "))):]
    assert len(rows) == 6
    column = rows[0].index("images")
    assert all(row[column - 2:column] == "  " and row[column] != " " for row in rows)


def test_a_second_writer_is_told_how_to_wait(catalog, photo_dir):
    from snapmatch.sdk.product_search import ProductSearch

    with ProductSearch.open(catalog):
        result = run("catalog", "import", catalog, photo_dir)
    assert result.exit_code == 1 and "--wait SECONDS" in result.output and "readonly=True" not in result.output
