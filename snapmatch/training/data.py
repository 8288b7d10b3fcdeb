"""Datasets as users have them: every reader produces one `Dataset` of labelled photos.

Three layouts, told apart by `load_dataset`:

- **folder**: one sub-folder of photos per product (the sub-folder's name is
  the product id), the layout `snapmatch catalog import` takes. A product's
  catalog-style images (pack shots, studio photos) go in a `catalog/` folder
  inside its folder.
- **list**: a text file of `path, product_id[, name]` lines (paths relative to
  the file), also as `catalog import` takes it. An image whose parent folder
  is named `catalog` is a catalog-style image.
- **grocery**: the Grocery Store Dataset's own files (`classes.csv`,
  `train.txt`, `val.txt`): its iconic images are the catalog images and its
  val photos are the dataset's own query split.

No torch here: evaluation (runtime dependencies only) reads datasets too.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from snapmatch.sdk.errors import DatasetError, ImportSourceError


@dataclass(frozen=True)
class Photo:
    path: Path
    product: str  # product id
    catalog: bool = False  # a catalog-style image (pack shot), not a photo taken in a shop


@dataclass(frozen=True)
class Dataset:
    """Labelled photos of products, whatever layout they came in."""

    source: Path  # the folder, list file or dataset root that was read
    format: str  # "folder", "list" or "grocery"
    photos: tuple[Photo, ...]
    names: dict[str, str] = field(default_factory=dict)  # product id -> display name (where one was given)
    # The dataset's own query photos (Grocery's val split); None: splits draw them (seeded).
    given_queries: frozenset[Path] | None = None

    @property
    def products(self) -> list[str]:
        return sorted({photo.product for photo in self.photos})

    def catalog_images(self) -> list[Photo]:
        return [photo for photo in self.photos if photo.catalog]

    def store_photos(self) -> list[Photo]:
        return [photo for photo in self.photos if not photo.catalog]

    def fingerprint(self, photos: list[Photo] | tuple[Photo, ...] | None = None) -> str:
        """A short stable id of these photos (all of the dataset's by default): files, products, kinds."""
        return fingerprint(self, self.photos if photos is None else photos)


def fingerprint(dataset: Dataset, photos: list[Photo] | tuple[Photo, ...]) -> str:
    """`FORMAT-COUNT-HASH`: the hash covers each photo's path (relative to the dataset), product and kind."""
    root = dataset.source if dataset.source.is_dir() else dataset.source.parent
    digest = hashlib.sha256()
    for photo in sorted(photos, key=lambda p: (str(p.path), p.product)):
        try:
            name = photo.path.relative_to(root).as_posix()
        except ValueError:
            name = photo.path.as_posix()
        digest.update(f"{name}\0{photo.product}\0{int(photo.catalog)};".encode())
    return f"{dataset.format}-{len(photos)}-{digest.hexdigest()[:12]}"


def load_dataset(source: str | os.PathLike) -> Dataset:
    """Read a folder of product sub-folders, a list file, or a Grocery Store Dataset root."""
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"dataset not found: {source}")
    if source.is_dir() and (source / "classes.csv").is_file() and (source / "train.txt").is_file():
        return read_grocery(source)
    return read_photos(source)


def read_photos(source: Path) -> Dataset:
    """A folder of product sub-folders or a `path, product_id[, name]` list file (as `catalog import` reads them)."""
    from snapmatch.sdk.catalog.bulk_import import read_source

    try:
        items = read_source(source)
    except ImportSourceError as exc:
        raise DatasetError(str(exc)) from None
    photos = tuple(Photo(item.path.resolve(), item.product_id or "", item.catalog) for item in items)
    names = {item.product_id: item.name for item in items if item.name and item.product_id}
    return Dataset(source.resolve(), "folder" if source.is_dir() else "list", photos, names)


def read_grocery(root: Path) -> Dataset:
    """The Grocery Store Dataset: train + val photos, one iconic image per product, val as its query split."""
    root = root.resolve()
    names, photos = {}, []
    labels: dict[int, str] = {}
    try:
        with open(root / "classes.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                label, name = int(row["Class ID (int)"]), row["Class Name (str)"]
                labels[label], names[name] = name, name
                photos.append(Photo(root / row["Iconic Image Path (str)"].lstrip("/"), name, catalog=True))
        queries = set()
        for split in ("train", "val"):
            split_file = root / f"{split}.txt"
            if not split_file.is_file():
                continue
            for line in split_file.read_text().splitlines():
                if line.strip():
                    path, fine, _coarse = (part.strip() for part in line.split(","))
                    photos.append(Photo(root / path, labels[int(fine)]))
                    if split == "val":
                        queries.add(root / path)
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{root} is not a readable Grocery Store Dataset: {exc}") from None
    return Dataset(root, "grocery", tuple(photos), names, frozenset(queries) if queries else None)
