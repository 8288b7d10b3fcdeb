"""How an error reaches an HTTP client: one status code per snapmatch error, in one table, and one JSON body.

Every error body is {"error": {"status": 404, "type": "ProductNotFoundError", "message": "..."}}.
A client's mistake is a 4xx; only a fault of the server itself (a damaged
catalog or model) is a 5xx.
"""

from __future__ import annotations

from snapmatch.sdk import errors as sdk

# Every SnapmatchError class, by name of the class itself (tests/test_serve_errors.py checks none is missing):
# a new error must be placed here, not fall through to a parent's code by accident.
STATUS: dict[type[sdk.SnapmatchError], int] = {
    sdk.SnapmatchError: 500,
    sdk.InvalidArgumentError: 400,
    sdk.ImageError: 422,
    sdk.ImageNotFoundError: 400,  # an image named by path: the server never reads a client's path
    sdk.InvalidImageError: 422,  # not an image, truncated, corrupt, unsupported format
    sdk.ImageTooLargeError: 413,  # too many pixels: a decompression bomb is refused from its header
    sdk.ModelError: 500,
    sdk.ModelContractError: 500,
    sdk.ModelMismatchError: 500,
    sdk.EmbeddingError: 500,
    sdk.CatalogError: 500,
    sdk.CatalogNotFoundError: 500,
    sdk.CatalogExistsError: 409,
    sdk.CatalogCorruptError: 500,
    sdk.CatalogLockedError: 503,  # another writer holds the catalog: try again later
    sdk.ReadOnlyError: 403,  # the server was started --readonly
    sdk.CatalogClosedError: 503,  # shutting down
    sdk.ProductNotFoundError: 404,
    sdk.ProductExistsError: 409,
    sdk.ImportSourceError: 400,
    sdk.DatasetError: 400,
    sdk.CheckpointError: 400,
    sdk.CalibrationError: 422,
    sdk.VideoSourceError: 400,
    sdk.RegionError: 400,
    sdk.DisplayError: 500,
    sdk.NoUsableFramesError: 422,
}


def status_of(error: sdk.SnapmatchError) -> int:
    """The status code of a snapmatch error (its nearest class in STATUS)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


class HTTPProblem(Exception):
    """A request the server refuses for a reason of HTTP itself: size limits, auth, a full queue, bad multipart."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


def error_body(status: int, kind: str, message: str) -> dict:
    return {"error": {"status": status, "type": kind, "message": message}}
