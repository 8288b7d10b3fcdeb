"""The Grocery Store Dataset's files: splits, product names, iconic images.

The layout (see ../shared/data/grocery/README.md): `train.txt` / `val.txt`
hold `path, fine_label, coarse_label` lines; `classes.csv` names each fine
label and its iconic image. The official test split is withheld on purpose.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Photo:
    path: Path
    label: int  # fine label: the product


@dataclass(frozen=True)
class GroceryData:
    root: Path
    names: dict[int, str]  # fine label -> product name, e.g. "Arla-Standard-Milk"
    iconic: dict[int, Path]  # fine label -> its catalog ("iconic") image

    @classmethod
    def load(cls, root: str | Path) -> "GroceryData":
        root = Path(root)
        names, iconic = {}, {}
        with open(root / "classes.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                label = int(row["Class ID (int)"])
                names[label] = row["Class Name (str)"]
                iconic[label] = root / row["Iconic Image Path (str)"].lstrip("/")
        return cls(root, names, iconic)

    def split(self, name: str) -> list[Photo]:
        """The photos of `train` or `val`."""
        photos = []
        for line in (self.root / f"{name}.txt").read_text().splitlines():
            if line.strip():
                path, fine, _coarse = (part.strip() for part in line.split(","))
                photos.append(Photo(self.root / path, int(fine)))
        return photos

    def iconic_photos(self) -> list[Photo]:
        return [Photo(path, label) for label, path in sorted(self.iconic.items())]

    def product_id(self, label: int) -> str:
        return self.names[label]


def fingerprint(photos: list[Photo], excluded: tuple[int, ...] = ()) -> str:
    """A short stable id of the training data: which files, which labels, what was left out."""
    digest = hashlib.sha256()
    for photo in sorted(photos, key=lambda p: str(p.path)):
        digest.update(f"{photo.path.name}:{photo.label};".encode())
    digest.update(f"excluded:{sorted(excluded)}".encode())
    return f"grocery-{len(photos)}-{digest.hexdigest()[:12]}"
