"""Small result types of the public API."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Match:
    """One catalog product found for a query, with its best-matching image."""

    product_id: str
    name: str
    score: float  # cosine similarity of the best image of this product, in [-1, 1], under the catalog's metric
    image_key: int
    # score minus the best other product's score: positive for the best product, the gap the
    # decision rule weighs (None when the catalog offered no other product)
    margin: float | None = None

    def __repr__(self) -> str:
        margin = "" if self.margin is None else f", margin={self.margin:.3f}"
        return f"Match({self.product_id!r}, score={self.score:.3f}{margin}, image_key={self.image_key})"

    def to_dict(self) -> dict:
        return {"product_id": self.product_id, "name": self.name, "score": round(self.score, 6),
                "margin": None if self.margin is None else round(self.margin, 6), "image_key": self.image_key}


@dataclass(frozen=True)
class Product:
    """A catalog product and how many images represent it."""

    id: str
    name: str
    image_count: int

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "image_count": self.image_count}
