"""A small shop's photos on disk, as a user has them: the demo's 6 real products plus synthetic ones."""

from __future__ import annotations

import json
from pathlib import Path

import cv2

from tests.model_factory import product_image


def make_shop(root: Path, *, synthetic: int = 4) -> Path:
    """ROOT/PRODUCT/*.jpg (+ PRODUCT/catalog/*.jpg): 6 real grocery products and `synthetic` made-up ones."""
    from snapmatch.commands.demo import DEMO_DIR, _write_photos

    _write_photos(json.loads((DEMO_DIR / "photos.json").read_text()), root)
    for product in range(synthetic):
        folder = root / f"synthetic-{product}"
        (folder / "catalog").mkdir(parents=True)
        cv2.imwrite(str(folder / "catalog" / "pack.jpg"), product_image(product, size=128))
        for variant in range(1, 5):
            cv2.imwrite(str(folder / f"{variant}.jpg"), product_image(product, variant=variant, size=128))
    return root
