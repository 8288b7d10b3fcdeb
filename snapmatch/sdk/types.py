"""Small result types of the public API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snapmatch.sdk.catalog.calibration import DecisionRule


@dataclass(frozen=True)
class Match:
    """One catalog product found for a query, with its best-matching image."""

    product_id: str
    name: str
    # cosine similarity in [-1, 1], under the catalog's metric, of the product's best image or, in an exactly
    # searched catalog, of its prototype (the normalised mean of its photos) when that is higher
    score: float
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
class Identification:
    """identify()'s whole answer for one image: what it named, its best guess, and the rule's verdict."""

    match: Match | None  # the product named; None when the best candidate fails the rule (or the catalog is empty)
    best: Match | None  # the best candidate, named or not
    rule_value: float | None  # score + w x margin, compared with the threshold
    threshold: float

    @property
    def known(self) -> bool:
        return self.match is not None

    @classmethod
    def judge(cls, best: Match | None, rule: "DecisionRule") -> "Identification":
        if best is None:
            return cls(None, None, None, rule.threshold)
        return cls(best if rule.accepts(best.score, best.margin) else None, best,
                   rule.value(best.score, best.margin), rule.threshold)

    def to_dict(self) -> dict:
        return {"product": self.match.to_dict() if self.match else None,
                "best": self.best.to_dict() if self.best else None,
                "rule_value": None if self.rule_value is None else round(self.rule_value, 6)}


@dataclass(frozen=True)
class Product:
    """A catalog product and how many images represent it."""

    id: str
    name: str
    image_count: int

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "image_count": self.image_count}


@dataclass(frozen=True)
class Added:
    """What adding photos to one product did (`ProductSearch.add`, `catalog add`, `catalog import`)."""

    product_id: str
    created: bool  # the product was new
    keys: list[int]  # per photo given, in order (photos skipped as unreadable have none); a photo already in
    # the product gives the key it has
    duplicates: int = 0  # photos already in the product (same content): skipped, not stored twice
    renamed: bool = False  # a name was given and differed from the stored one
    new_keys: list[int] = field(default_factory=list)  # the images this call stored
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why) of photos that could not be read

    @property
    def added(self) -> int:
        return len(self.new_keys)

    def to_dict(self) -> dict:
        return {"product_id": self.product_id, "new_product": self.created, "added": self.added,
                "duplicates": self.duplicates, "renamed": self.renamed, "image_keys": self.keys,
                "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped]}
