"""usearch, imported the one safe way: after onnxruntime.

Loading usearch's extension before onnxruntime's segfaults inside
onnxruntime's module initialisation (usearch 2.26 + onnxruntime 1.32 wheels:
a libstdc++ symbol clash). Every snapmatch module takes usearch from here.
"""

import onnxruntime  # noqa: F401  (must precede usearch)
import usearch
from usearch.index import Index

__all__ = ["Index", "usearch"]
