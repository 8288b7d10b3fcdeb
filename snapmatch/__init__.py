"""snapmatch: on-device visual product search.

>>> import snapmatch
>>> search = snapmatch.ProductSearch.open("my-catalog")
>>> search.identify("frame.jpg")
"""

from snapmatch.sdk.errors import (
    CalibrationError,
    CalibrationWarning,
    CatalogClosedError,
    CatalogCorruptError,
    CatalogError,
    CatalogExistsError,
    CatalogLockedError,
    CatalogNotFoundError,
    CheckpointError,
    DatasetError,
    DisplayError,
    EmbeddingError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    ImportSourceError,
    InvalidArgumentError,
    InvalidImageError,
    ModelContractError,
    ModelError,
    ModelMismatchError,
    NoUsableFramesError,
    ProductExistsError,
    ProductNotFoundError,
    ReadOnlyError,
    RegionError,
    SnapmatchError,
    VideoSourceError,
)

# The heavy classes load on first use, so `import snapmatch` (and the CLI's
# --help) stays fast and an app pays for onnxruntime only when it uses it.
_LAZY = {
    "Embedder": "snapmatch.sdk.model.embedder",
    "ProductSearch": "snapmatch.sdk.product_search",
    "Added": "snapmatch.sdk.types",
    "Identification": "snapmatch.sdk.types",
    "Match": "snapmatch.sdk.types",
    "Product": "snapmatch.sdk.types",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'snapmatch' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Added",
    "CalibrationError",
    "CalibrationWarning",
    "CatalogClosedError",
    "CatalogCorruptError",
    "CatalogError",
    "CatalogExistsError",
    "CatalogLockedError",
    "CatalogNotFoundError",
    "CheckpointError",
    "DatasetError",
    "DisplayError",
    "EmbeddingError",
    "Embedder",
    "Identification",
    "ImageError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "ImportSourceError",
    "InvalidArgumentError",
    "InvalidImageError",
    "Match",
    "ModelContractError",
    "ModelError",
    "ModelMismatchError",
    "NoUsableFramesError",
    "Product",
    "ProductExistsError",
    "ProductNotFoundError",
    "ProductSearch",
    "ReadOnlyError",
    "RegionError",
    "SnapmatchError",
    "VideoSourceError",
    "__version__",
]
