"""Bulk import: many photos of many products, skipping (and naming) the ones that cannot be read.

A source is either a list file of `path, product_id[, name]` lines (paths
relative to the list file; `#` starts a comment) or a folder with one
sub-folder of photos per product (the sub-folder's name is the product id).
Catalog-style images (pack shots, studio photos) may sit in a `catalog/`
folder inside a product's folder; in a list file, an image whose parent
folder is named `catalog` is one. A catalog takes them like any photo;
training and evaluation tell them apart (see snapmatch.training.data).
Each product is committed on its own, so a failure late in a long import
loses nothing that came before it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from snapmatch.sdk.errors import ImageError, ImportSourceError
from snapmatch.sdk.product_search import ProductSearch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
CATALOG_FOLDER = "catalog"  # a product's catalog-style images (pack shots) live in a folder of this name


@dataclass(frozen=True)
class ImportItem:
    path: Path
    product_id: str | None  # None: a photo of something not in the catalog (calibration only)
    name: str = ""
    catalog: bool = False  # a catalog-style image (pack shot), not a photo taken in the shop


@dataclass
class ImportReport:
    products_added: list[str] = field(default_factory=list)
    products_extended: list[str] = field(default_factory=list)
    images_added: int = 0
    duplicates: int = 0  # photos the catalog already held (same content): skipped
    products_done: int = 0  # products committed (added, extended or already complete)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def to_dict(self) -> dict:
        return {
            "products_added": len(self.products_added),
            "products_extended": len(self.products_extended),
            "images_added": self.images_added,
            "duplicates": self.duplicates,
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
        }


def read_source(source: str | os.PathLike, *, allow_unlabelled: bool = False) -> list[ImportItem]:
    """The photos a list file or a folder of product sub-folders names, in order.

    allow_unlabelled: an empty product id (or a `_unknown` sub-folder) means a
    photo of a product that is not in the catalog, as calibration needs.
    """
    source = Path(source)
    if source.is_dir():
        return _read_folder(source, allow_unlabelled)
    if source.is_file():
        return _read_list(source, allow_unlabelled)
    raise ImportSourceError(f"import source not found: {source}")


def _read_folder(root: Path, allow_unlabelled: bool) -> list[ImportItem]:
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        product_id: str | None = folder.name
        if folder.name == "_unknown":
            if not allow_unlabelled:
                continue
            product_id = None
        for path in _images(folder / CATALOG_FOLDER):
            items.append(ImportItem(path, product_id, catalog=True))
        for path in _images(folder):
            items.append(ImportItem(path, product_id))
    if not items:
        raise ImportSourceError(f"{root} holds no product sub-folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return items


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [path for path in sorted(folder.iterdir()) if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]


def _read_list(list_file: Path, allow_unlabelled: bool) -> list[ImportItem]:
    items: list[ImportItem] = []
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ImportSourceError(f"{list_file} is not a UTF-8 text list of `path, product_id[, name]` lines") from None
    for number, row in enumerate(csv.reader(text.splitlines(), skipinitialspace=True), start=1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if not items and _is_header(row):
            continue
        if len(row) < 2 and not allow_unlabelled:
            raise ImportSourceError(f"{list_file}:{number}: expected `path, product_id[, name]`, got {','.join(row)!r}")
        path = Path(row[0].strip())
        product_id = row[1].strip() if len(row) > 1 else ""
        if not product_id and not allow_unlabelled:
            raise ImportSourceError(f"{list_file}:{number}: empty product id")
        name = ",".join(row[2:]).strip() if len(row) > 2 else ""
        items.append(ImportItem(path if path.is_absolute() else list_file.parent / path, product_id or None, name,
                                catalog=path.parent.name == CATALOG_FOLDER))
    if not items:
        raise ImportSourceError(f"{list_file} lists no images")
    return items


def _is_header(row: list[str]) -> bool:
    """A first line `path, product_id[, name]` names the columns; it is not a photo."""
    return row[0].strip().lower() in {"path", "file", "image"} and (
        len(row) < 2 or row[1].strip().lower() in {"product_id", "product", "id", "label"})


def import_items(
    search: ProductSearch,
    items: Iterable[ImportItem],
    *,
    on_product: Callable[[str, int], None] | None = None,
    report: ImportReport | None = None,
) -> ImportReport:
    """Add every readable photo to its product (creating products as needed); name the ones skipped.

    Idempotent and resumable: a photo a product already holds (same content)
    is skipped and counted, so the same import twice, or again after an
    interruption, adds only what is missing. Each product is one commit;
    `report` (pass your own to read it after a Ctrl-C) holds what was committed.
    on_product(product_id, photos) is called after each product (progress).
    """
    report = report if report is not None else ImportReport()
    by_product: dict[str, list[ImportItem]] = {}
    for item in items:
        if item.product_id is None:
            raise ImportSourceError(f"{item.path}: an import needs a product id for every photo")
        by_product.setdefault(item.product_id, []).append(item)
    for product_id, product_items in by_product.items():
        name = next((item.name for item in product_items if item.name), None)
        try:
            added = search.add(product_id, [item.path for item in product_items], name=name, skip_unreadable=True)
        except ImageError as exc:  # not one readable photo of this product
            report.skipped.extend((str(item.path), str(exc)) for item in product_items)
        else:
            report.skipped.extend(added.skipped)
            if added.created:
                report.products_added.append(product_id)
            elif added.added:
                report.products_extended.append(product_id)
            report.images_added += added.added
            report.duplicates += added.duplicates
            report.products_done += 1
        if on_product is not None:
            on_product(product_id, len(product_items))
    return report
