"""Datasets as users have them (folder, list file, Grocery) and the splits that hold products out."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from snapmatch.export.pipeline import int8_calibration_photos
from snapmatch.sdk.errors import DatasetError
from snapmatch.training.data import load_dataset
from snapmatch.training.splits import Split, holdout_split, product_folds
from tests.model_factory import product_image
from tests.training.shop_photos import make_shop

PACKAGE = Path(__file__).resolve().parents[2] / "snapmatch"


@pytest.fixture()
def shop(tmp_path) -> Path:
    return make_shop(tmp_path / "shop")


def test_a_folder_of_product_folders_reads_with_catalog_images_marked(shop):
    dataset = load_dataset(shop)
    assert dataset.format == "folder" and len(dataset.products) == 10
    assert "banana" in dataset.products and "synthetic-3" in dataset.products
    catalog = dataset.catalog_images()
    assert len(catalog) == 10 and all(photo.path.parent.name == "catalog" for photo in catalog)
    assert len(dataset.store_photos()) == 6 * 3 + 4 * 4
    assert dataset.given_queries is None


def test_a_list_file_reads_names_and_catalog_images(shop, tmp_path):
    listing = tmp_path / "photos.txt"
    listing.write_text("# path, product, name\n"
                       f"{shop}/banana/catalog/Banana-0.jpg, banana, Banana (loose)\n"
                       f"{shop}/banana/Banana-1.jpg, banana\n"
                       "shop/oatly-oat-milk/Oatly-Oat-Milk-1.jpg, oatly, Oatly Oat Milk 1 l\n")
    dataset = load_dataset(listing)
    assert dataset.format == "list" and dataset.products == ["banana", "oatly"]
    assert [photo.catalog for photo in dataset.photos] == [True, False, False]
    assert dataset.names == {"banana": "Banana (loose)", "oatly": "Oatly Oat Milk 1 l"}
    assert all(photo.path.is_file() for photo in dataset.photos)  # relative paths resolve against the list file


def test_the_grocery_layout_reads_its_own_query_split(tmp_path):
    root = tmp_path / "grocery"
    lines = {"train": [], "val": []}
    rows = ["Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int),"
            "Iconic Image Path (str),Product Description Path (str)"]
    for label, name in enumerate(["Apple", "Milk", "Juice"]):
        (root / "iconic").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "iconic" / f"{name}.jpg"), product_image(label))
        rows.append(f"{name},{label},{name},{label},/iconic/{name}.jpg,/iconic/{name}.txt")
        for split, count in (("train", 4), ("val", 2)):
            (root / split).mkdir(exist_ok=True)
            for i in range(count):
                path = f"{split}/{name}_{i}.jpg"
                cv2.imwrite(str(root / path), product_image(label, variant=i + 1))
                lines[split].append(f"{path}, {label}, {label}")
    (root / "classes.csv").write_text("\n".join(rows) + "\n")
    for split, entries in lines.items():
        (root / f"{split}.txt").write_text("\n".join(entries) + "\n")
    dataset = load_dataset(root)
    assert dataset.format == "grocery" and dataset.products == ["Apple", "Juice", "Milk"]
    assert len(dataset.catalog_images()) == 3 and len(dataset.given_queries) == 6
    split = holdout_split(dataset, holdout=0)
    training, catalog, queries = split.parts(dataset)
    assert split.query_share is None and {p.path for p in queries} == set(dataset.given_queries)
    assert len(training) == len(catalog) == 3 + 12


def test_missing_or_empty_sources_fail_with_a_message(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no product sub-folders"):
        load_dataset(tmp_path / "empty")


def test_a_holdout_split_keeps_unseen_products_and_query_photos_out_of_training(shop):
    dataset = load_dataset(shop)
    split = holdout_split(dataset, holdout=0.3, seed=0)
    assert len(split.unseen) == 3 and split == holdout_split(dataset, holdout=0.3, seed=0)
    assert split.unseen != holdout_split(dataset, holdout=0.3, seed=1).unseen or \
        split.is_query(dataset) != holdout_split(dataset, holdout=0.3, seed=1).is_query(dataset)
    training, catalog, queries = split.parts(dataset)
    assert not {p.product for p in training} & set(split.unseen)
    assert set(split.unseen) <= {p.product for p in catalog}  # added to the catalog as a device would
    query_paths = {p.path for p in queries}
    assert not query_paths & {p.path for p in catalog}
    assert all(not p.catalog for p in queries)
    # Every product keeps at least one query and two images to train on (its catalog image counts).
    for product in dataset.products:
        assert sum(p.product == product for p in queries) >= 1
        assert sum(p.product == product for p in catalog) >= 2
    assert Split.from_dict(split.to_dict()) == split


def test_named_unseen_products_must_exist(shop):
    dataset = load_dataset(shop)
    assert holdout_split(dataset, unseen=["banana"]).unseen == ("banana",)
    with pytest.raises(DatasetError, match="not in"):
        holdout_split(dataset, unseen=["no-such-product"])


def test_product_folds_hold_each_product_out_exactly_once(shop):
    dataset = load_dataset(shop)
    folds = product_folds(dataset, 3, seed=0)
    held = [set(split.unseen) for split in folds]
    assert sorted(p for h in held for p in h) == dataset.products
    assert all(len(h) in (3, 4) for h in held) and [s.fold for s in folds] == [1, 2, 3]
    with pytest.raises(DatasetError):
        product_folds(dataset, 11)


def test_the_fingerprint_covers_files_products_and_kinds(shop, tmp_path):
    dataset = load_dataset(shop)
    assert dataset.fingerprint().startswith("folder-44-") and dataset.fingerprint() == load_dataset(shop).fingerprint()
    (shop / "banana" / "Banana-1.jpg").rename(shop / "oatly-oat-milk" / "Banana-1.jpg")
    assert load_dataset(shop).fingerprint() != dataset.fingerprint()
    split = holdout_split(dataset)
    training, _, _ = split.parts(dataset)
    assert dataset.fingerprint(training) != dataset.fingerprint()


def test_int8_calibration_photos_are_spread_over_products_and_the_same_every_time(shop):
    dataset = load_dataset(shop)
    training, _, _ = holdout_split(dataset).parts(dataset)
    chosen = int8_calibration_photos(training, count=8)
    assert chosen == int8_calibration_photos(list(reversed(training)), count=8)
    assert len(chosen) == 8 and len({path.parent for path in chosen}) >= 6
    assert not any(path.parent.name == "catalog" for path in chosen)


def test_the_package_has_no_default_that_points_into_a_development_folder():
    offenders = []
    for path in PACKAGE.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".json", ".md", ".txt", ".toml"}:
            if "../shared" in path.read_text(errors="ignore"):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []
