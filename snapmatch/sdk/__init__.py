"""The snapmatch runtime: numpy, onnxruntime, usearch, OpenCV and sqlite3. Never imports torch.

Sub-modules load on first use, so `snapmatch.sdk.errors` stays cheap to import.
(The preprocess function is `snapmatch.sdk.image.preprocess.preprocess`: the module has its name.)
"""

import importlib

_LAZY = {
    "Catalog": "snapmatch.sdk.catalog.catalog",
    "Embedder": "snapmatch.sdk.model.embedder",
    "InputSpec": "snapmatch.sdk.model.model_spec",
    "ModelSpec": "snapmatch.sdk.model.model_spec",
    "decode": "snapmatch.sdk.image.preprocess",
    "ProductSearch": "snapmatch.sdk.product_search",
    "Match": "snapmatch.sdk.types",
    "Product": "snapmatch.sdk.types",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'snapmatch.sdk' has no attribute {name!r}")
