"""The one error hierarchy of snapmatch: every failure a user can cause is a SnapmatchError."""

from __future__ import annotations


class SnapmatchError(Exception):
    """Base class of every error snapmatch raises on purpose."""


# --- images -------------------------------------------------------------------


class InvalidArgumentError(SnapmatchError, ValueError):
    """An argument out of its range or of the wrong kind (k=0, an empty product id, no images, ...).

    Also a ValueError, which code written against the earlier API catches.
    """


class ImageError(SnapmatchError):
    """An image could not be used."""


class ImageNotFoundError(ImageError):
    """An image path does not exist or is not a file."""


class InvalidImageError(ImageError):
    """An image is empty, truncated, corrupt, not an image, or of an unsupported array type."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the decoder is allowed to allocate (decompression bomb guard)."""


# --- models -------------------------------------------------------------------


class ModelError(SnapmatchError):
    """A model file cannot be loaded."""


class ModelContractError(ModelError):
    """An ONNX file is not a snapmatch model: wrong input/output types, shapes or metadata."""


class ModelMismatchError(ModelError):
    """A catalog was built with a different model than the one it is being opened with."""


class EmbeddingError(ModelError):
    """A model produced an embedding that is not finite and L2-normalised."""


# --- catalogs -----------------------------------------------------------------


class CatalogError(SnapmatchError):
    """A catalog cannot be created, opened or changed."""


class CatalogNotFoundError(CatalogError):
    """A catalog folder does not exist or holds no manifest."""


class CatalogExistsError(CatalogError):
    """A catalog already exists where a new one was to be created."""


class CatalogCorruptError(CatalogError):
    """A catalog's manifest, base index or database is damaged or inconsistent."""


class CatalogLockedError(CatalogError):
    """Another process holds the catalog's writer lock."""


class ReadOnlyError(CatalogError):
    """A change was asked of a catalog opened read-only."""


class CatalogClosedError(CatalogError):
    """The catalog was used after close()."""


class ProductNotFoundError(CatalogError):
    """No product with this id is in the catalog."""


class ProductExistsError(CatalogError):
    """A product with this id is already in the catalog."""


class ImportSourceError(SnapmatchError):
    """An import list file or folder is missing or malformed."""


class DatasetError(ImportSourceError):
    """A training or evaluation dataset is missing, malformed, empty or too small."""


class CheckpointError(SnapmatchError):
    """A training checkpoint is missing, corrupt, or not one snapmatch wrote."""


class CalibrationError(SnapmatchError):
    """No threshold reaches the target precision on the labelled photos given."""


# --- video: cameras, files, streams, preview windows ---------------------------------------


class VideoSourceError(SnapmatchError):
    """A camera, video file or stream cannot be opened, or was lost and could not be reconnected."""


class RegionError(SnapmatchError, ValueError):
    """A region of interest is malformed or does not fit inside the video's frames."""


class DisplayError(SnapmatchError):
    """A preview window was asked for, but this process has no display (or OpenCV has no GUI)."""


class NoUsableFramesError(SnapmatchError):
    """A video holds no frame sharp and readable enough to add to the catalog."""


class CalibrationWarning(UserWarning):
    """A calibration that was stored but rests on doubtful photos (few, no unknown products, ...)."""
