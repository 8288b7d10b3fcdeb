"""snapmatch: on-device visual product search.

>>> import snapmatch
>>> search = snapmatch.ProductSearch.open("my-catalog")
>>> search.identify("frame.jpg")
"""

from snapmatch.sdk.embedder import Embedder
from snapmatch.sdk.errors import (
    CalibrationError,
    CatalogClosedError,
    CatalogCorruptError,
    CatalogError,
    CatalogExistsError,
    CatalogLockedError,
    CatalogNotFoundError,
    EmbeddingError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidImageError,
    ModelContractError,
    ModelError,
    ModelMismatchError,
    ProductExistsError,
    ProductNotFoundError,
    ReadOnlyError,
    SnapmatchError,
)
from snapmatch.sdk.product_search import ProductSearch
from snapmatch.sdk.types import Match, Product

__version__ = "0.1.0"

__all__ = [
    "CalibrationError",
    "CatalogClosedError",
    "CatalogCorruptError",
    "CatalogError",
    "CatalogExistsError",
    "CatalogLockedError",
    "CatalogNotFoundError",
    "EmbeddingError",
    "Embedder",
    "ImageError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "InvalidImageError",
    "Match",
    "ModelContractError",
    "ModelError",
    "ModelMismatchError",
    "Product",
    "ProductExistsError",
    "ProductNotFoundError",
    "ProductSearch",
    "ReadOnlyError",
    "SnapmatchError",
    "__version__",
]
