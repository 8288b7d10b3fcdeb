"""The snapmatch runtime: numpy, onnxruntime, usearch, OpenCV and sqlite3. Never imports torch."""

from snapmatch.sdk.catalog import Catalog
from snapmatch.sdk.embedder import Embedder
from snapmatch.sdk.errors import *  # noqa: F401,F403  (the error hierarchy is part of the API)
from snapmatch.sdk.errors import SnapmatchError
from snapmatch.sdk.model_spec import InputSpec, ModelSpec
from snapmatch.sdk.preprocess import decode, preprocess
from snapmatch.sdk.product_search import ProductSearch
from snapmatch.sdk.types import Match, Product

__all__ = [
    "Catalog",
    "Embedder",
    "InputSpec",
    "Match",
    "ModelSpec",
    "Product",
    "ProductSearch",
    "SnapmatchError",
    "decode",
    "preprocess",
]
