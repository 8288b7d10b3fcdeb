"""The photos a latency benchmark times and builds its catalog from, with their products where known.

Three layouts of a folder:

- the bundled demo (photos.json): catalog photos make the catalog, the query
  photos are the timed frames;
- one sub-folder per product (as `snapmatch catalog import` takes, nested
  folders allowed): every photo is in the catalog and is a timed frame,
  labelled by its folder;
- a flat folder: the same, unlabelled (no Recall@1 then).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snapmatch.sdk.errors import SnapmatchError
from snapmatch.sdk.image.preprocess import decode

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class BenchmarkInputError(SnapmatchError):
    """The benchmark's photo folder is missing, empty or holds an unreadable photo."""


@dataclass
class Photos:
    """Encoded photos (as a camera app would pass them) and what they are used for."""

    folder: Path
    layout: str  # "photos.json", "sub-folders" or "flat"
    names: list[str] = field(default_factory=list)  # relative to folder
    data: list[bytes] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)  # product, None when unknown
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) decoded
    gallery: list[int] = field(default_factory=list)  # indices that go into the catalog
    frames: list[int] = field(default_factory=list)  # indices that are timed

    def add(self, name: str, label: str | None) -> int:
        path = self.folder / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BenchmarkInputError(f"cannot read photo {path}: {exc.strerror or exc}") from None
        try:
            height, width = decode(data, name=str(path)).shape[:2]
        except SnapmatchError as exc:
            raise BenchmarkInputError(str(exc)) from None
        self.names.append(name)
        self.data.append(data)
        self.labels.append(label)
        self.sizes.append((width, height))
        return len(self.names) - 1

    def describe(self) -> dict:
        widths, heights = zip(*(self.sizes[i] for i in self.frames))
        return {
            "folder": str(self.folder),
            "layout": self.layout,
            "photos": len(self.names),
            "catalog_photos": len(self.gallery),
            "timed_frames": len(self.frames),
            "labelled": sum(label is not None for label in self.labels),
            "frame_size_median": f"{int(np.median(widths))}x{int(np.median(heights))}",
            "frame_bytes_median": int(np.median([len(self.data[i]) for i in self.frames])),
        }


def load_photos(folder: str | os.PathLike | None = None, *, max_images: int = 200) -> Photos:
    """Read the photos of `folder` (default: the bundled demo photos); BenchmarkInputError when unusable."""
    folder = Path(folder) if folder is not None else DEMO_DIR
    if not folder.is_dir():
        raise BenchmarkInputError(f"image folder not found: {folder}")
    if (folder / "photos.json").is_file():
        photos = _from_manifest(folder, max_images)
    else:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())[:max_images]
        if not files:
            raise BenchmarkInputError(f"no photos ({', '.join(sorted(SUFFIXES))}) in {folder}")
        nested = any(p.parent != folder for p in files)
        photos = Photos(folder, "sub-folders" if nested else "flat")
        for path in files:
            label = str(path.parent.relative_to(folder)) if path.parent != folder else None
            index = photos.add(str(path.relative_to(folder)), label)
            photos.gallery.append(index)
            photos.frames.append(index)
    return photos


def _from_manifest(folder: Path, max_images: int) -> Photos:
    try:
        manifest = json.loads((folder / "photos.json").read_text())
        catalog = [(photo, product["id"]) for product in manifest["products"] for photo in product["photos"]]
        queries = [(query["photo"], query.get("product")) for query in manifest["queries"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchmarkInputError(f"{folder / 'photos.json'} is not a photo manifest: {exc}") from None
    if not queries:
        raise BenchmarkInputError(f"{folder / 'photos.json'} lists no query photos to time")
    photos = Photos(folder, "photos.json")
    for name, label in catalog[: max(0, max_images - len(queries))]:
        photos.gallery.append(photos.add(name, label))
    for name, label in queries[:max_images]:
        photos.frames.append(photos.add(name, label))
    return photos
