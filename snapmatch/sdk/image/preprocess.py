"""Decode any supported image input and resize it the way the model declares.

`preprocess` is the one function that turns a user's image into model input;
training-time evaluation, int8 calibration and the runtime all call it, so
what the model sees cannot differ between them. Normalisation is not here: it
lives inside the ONNX graph.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from pathlib import Path
from typing import Union

import numpy as np

from snapmatch.sdk.errors import (
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidImageError,
)
from snapmatch.sdk.image.image_header import read_header
from snapmatch.sdk.model.model_spec import InputSpec

# A 50-megapixel photo decodes to 150 MB; anything larger is refused before
# decoding, from the size its header declares (JPEG, PNG, GIF, BMP, WebP,
# TIFF). For other formats OpenCV's own limit (2^30 pixels, 3 GB) applies; it
# is lowered to match here, which takes effect only when snapmatch is imported
# before anything else imports cv2 (OpenCV reads it once, at import).
MAX_PIXELS = 50_000_000
# Bytes a decoded image may take: what 50 Mpx of 8-bit BGR takes. A 16-bit RGBA image (8 bytes a
# pixel) may be 18.75 Mpx; its header says so before anything is decoded.
MAX_DECODED_BYTES = 3 * MAX_PIXELS
MAX_FILE_BYTES = 100_000_000  # an image file larger than this is not a photo
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402  (the pixel limit must be in the environment first)

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]
# One image: a path, encoded bytes, or one (H, W[, C]) array. A 4-D array is a batch of images, everywhere.
SingleImage = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]
_ONE = (str, os.PathLike, bytes, bytearray, memoryview)


def image_batch(images) -> tuple[list, bool]:
    """(the images as a list, whether one image was given): the one rule search, identify and embed share.

    A path, bytes or an (H, W[, C]) array is one image; a list, tuple or
    other iterable of them, or an (N, H, W, C) array, is a batch.
    """
    if isinstance(images, _ONE) or (isinstance(images, np.ndarray) and images.ndim != 4):
        return [images], True
    if images is None:
        raise InvalidImageError(_NONE_IMAGE)
    if isinstance(images, np.ndarray):
        return list(images), False
    try:
        return list(images), False
    except TypeError:
        raise InvalidImageError(_unsupported(images)) from None


def image_list(images, *, what: str = "images") -> list:
    """A non-empty list of images (one image, a sequence, or a 4-D array); InvalidArgumentError when empty."""
    listed, _ = image_batch(images)
    if not listed:
        raise InvalidArgumentError(f"no {what} given: give at least one image")
    return listed


def content_digest(image: ImageInput) -> str:
    """SHA-256 of an image's content: a file's bytes, encoded bytes, or an array's pixels (with its shape)."""
    if isinstance(image, (str, os.PathLike)):
        return hashlib.sha256(read_image_bytes(image)).hexdigest()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(image)).hexdigest()
    if isinstance(image, np.ndarray):
        digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
        digest.update(np.ascontiguousarray(image).data)
        return digest.hexdigest()
    raise InvalidImageError(_NONE_IMAGE if image is None else _unsupported(image))


_NONE_IMAGE = ("the image is None (cv2.imread returns None for a path it cannot read): give a path, "
               "encoded bytes or a BGR numpy array")


def _unsupported(image) -> str:
    return (f"unsupported image input of type {type(image).__name__}: give a path, encoded bytes or a BGR "
            "numpy array")


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, or ImageNotFoundError / InvalidImageError naming the path."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageNotFoundError(f"image not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise InvalidImageError(f"cannot read image {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageNotFoundError(f"image path is a directory: {path}")
    if not stat.S_ISREG(info.st_mode):  # /dev/zero would be read until memory runs out, a FIFO forever
        raise InvalidImageError(f"{path} is not a regular file (a device, pipe or socket): give an image file")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageTooLargeError(f"{path} is {info.st_size:,} bytes, above the limit of {MAX_FILE_BYTES:,} for a photo")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageNotFoundError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise ImageNotFoundError(f"image path is a directory: {path}") from None
    except OSError as exc:
        raise InvalidImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not data:
        raise InvalidImageError(f"image file is empty: {path}")
    return data


def decode(image: ImageInput, *, max_pixels: int = MAX_PIXELS, name: str | None = None,
           min_side: int = 0) -> np.ndarray:
    """Any image input as an (H, W, 3) uint8 BGR array.

    Paths and encoded bytes are decoded with EXIF orientation applied;
    grayscale, alpha (composited on white) and 16-bit inputs are converted.
    min_side > 0: a JPEG may come back shrunk 2, 4 or 8 times, as long as its
    shorter side stays at least min_side (libjpeg scales in the DCT: a 12 MP
    phone photo decodes 8 times smaller for a fraction of the work).
    """
    if isinstance(image, np.ndarray):
        return _from_array(image, name or "array")
    if isinstance(image, (str, os.PathLike)):
        name = name or str(image)
        data = read_image_bytes(image)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        name = name or "image bytes"
        data = bytes(image)
    else:
        raise InvalidImageError(_NONE_IMAGE if image is None else _unsupported(image))
    return _decode_bytes(data, name, max_pixels, min_side)


_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def _decode_bytes(data: bytes, name: str, max_pixels: int, min_side: int = 0) -> np.ndarray:
    if not data:
        raise InvalidImageError(f"{name} is empty")
    header = read_header(data)
    if header.pixels is not None and header.pixels > max_pixels:
        raise ImageTooLargeError(
            f"{name} is {header.width}x{header.height} = {header.pixels:,} pixels, above the limit of {max_pixels:,}"
        )
    decoded_bytes = header.pixels * header.bytes_per_pixel if header.pixels is not None else None
    byte_limit = max(MAX_DECODED_BYTES, 3 * max_pixels)  # a larger pixel limit allows its 8-bit BGR image
    if decoded_bytes is not None and decoded_bytes > byte_limit:
        raise ImageTooLargeError(
            f"{name} is {header.width}x{header.height} at {header.bytes_per_pixel} bytes a pixel: it would decode to "
            f"{decoded_bytes / 1e6:,.0f} MB, above the limit of {byte_limit / 1e6:,.0f} MB"
        )
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        if header.may_have_alpha:
            # IMREAD_UNCHANGED keeps alpha and 16-bit depth (and skips EXIF
            # orientation, which these formats rarely carry).
            decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        else:
            # IMREAD_COLOR (and its REDUCED forms) apply EXIF orientation and give 8-bit BGR.
            decoded = cv2.imdecode(buffer, _decode_flag(header, min_side))
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ImageTooLargeError(f"{name} has more pixels than OpenCV's decoding limit") from None
        raise InvalidImageError(f"{name} cannot be decoded: {str(exc).strip().splitlines()[-1]}") from None
    if decoded is None or decoded.size == 0:
        raise InvalidImageError(f"{name} is not a readable image (corrupt, truncated or an unsupported format)")
    if decoded.shape[0] * decoded.shape[1] > max_pixels:
        raise ImageTooLargeError(f"{name} decodes to {decoded.shape[1]}x{decoded.shape[0]} pixels, above the limit")
    return _from_array(decoded, name)


def _decode_flag(header, min_side: int) -> int:
    """IMREAD_COLOR, or the largest JPEG DCT reduction that keeps the shorter side >= min_side."""
    if min_side > 0 and header.format == "jpeg" and header.width and header.height:
        shorter = min(header.width, header.height)
        for factor, flag in _REDUCED:
            if shorter // factor >= min_side:
                return flag
    return cv2.IMREAD_COLOR


def _from_array(array: np.ndarray, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Normalise a decoded array to contiguous (H, W, 3) uint8 BGR."""
    if array.ndim >= 2 and array.shape[0] * array.shape[1] > max_pixels:
        # By its shape, not its memory: a zero-stride view of 20000 x 20000 takes no memory until copied.
        raise ImageTooLargeError(f"{name} is {array.shape[1]}x{array.shape[0]} pixels, above the limit of "
                                 f"{max_pixels:,}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageError(f"{name} has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidImageError(f"{name} has no pixels (shape {array.shape})")
    array = _to_uint8(array, name)
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return _composite_on_white(array)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if array.dtype in (np.float16, np.float32, np.float64):
        # Float pixels are in [0, 1] (OpenCV's and scikit-image's convention). Values above 1 are
        # refused, not clipped: a float array of 0-255 values would otherwise turn white, silently.
        if not np.isfinite(array).all():
            raise InvalidImageError(f"{name} contains NaN or infinite pixel values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise InvalidImageError(
                f"{name} is a float image with values in [{low:g}, {high:g}]; float pixels must be in [0, 1] "
                "(for 0-255 values convert with array.astype(np.uint8))"
            )
        return (array.astype(np.float32) * 255.0 + 0.5).astype(np.uint8)
    raise InvalidImageError(f"{name} has pixel type {array.dtype}; expected uint8, uint16 or float in [0, 1]")


def _composite_on_white(bgra: np.ndarray) -> np.ndarray:
    # Transparent areas would otherwise turn black, which product photos on a
    # transparent background never mean. Integer arithmetic, a band of rows at a
    # time: a large image never has more than one full-size copy beside it.
    out = np.empty(bgra.shape[:2] + (3,), dtype=np.uint8)
    for top in range(0, bgra.shape[0], 256):
        band = bgra[top:top + 256]
        alpha = band[:, :, 3:4].astype(np.uint32)
        out[top:top + 256] = ((band[:, :, :3].astype(np.uint32) * alpha + 255 * (255 - alpha) + 127) // 255)
    return out


def resize(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize a BGR image to the model's input size by its resize policy; returns RGB uint8 (H, W, 3)."""
    height, width = bgr.shape[:2]
    if spec.resize == "stretch":
        out = _resize_to(bgr, spec.width, spec.height)
    elif spec.resize == "letterbox":
        scale = min(spec.width / width, spec.height / height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        scaled = _resize_to(bgr, new_w, new_h)
        out = np.full((spec.height, spec.width, 3), 255, dtype=np.uint8)
        top, left = (spec.height - new_h) // 2, (spec.width - new_w) // 2
        out[top:top + new_h, left:left + new_w] = scaled
    else:  # center_crop: the crop covers crop_fraction of the shorter side
        # Crop in the source first, then resize only the crop: resizing a very
        # long strip whole would allocate far more than the image itself.
        scale = max(spec.width / (width * spec.crop_fraction), spec.height / (height * spec.crop_fraction))
        crop_w = min(width, max(1, round(spec.width / scale)))
        crop_h = min(height, max(1, round(spec.height / scale)))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        out = _resize_to(bgr[top:top + crop_h, left:left + crop_w], spec.width, spec.height)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def _resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize at the cost of the pixels it touches: an area average, in the steps OpenCV does fast.

    OpenCV's INTER_AREA is fast only at whole-number factors (a box average). A shrink
    by f on an axis is done as a box average by floor(f), then what is left (a factor
    between 1 and 2) as a bilinear enlargement to twice the target and a 2x box
    average: within a few levels of one INTER_AREA step (Recall@1 unchanged:
    docs/BENCHMARKS.md, "Resize and decode"), in a third to a half of its time.
    """
    h, w = image.shape[:2]
    if w == width and h == height:
        return image
    if width > w or height > h:  # enlarging, on either axis
        shrinking = width < w or height < h
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if w % width == 0 and h % height == 0:  # whole factors: one exact box average
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    kx, ky = w // width, h // height
    if kx >= 2 or ky >= 2:
        crop_w, crop_h = w - w % kx, h - h % ky  # drop a few edge pixels so the boxes fit exactly
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        image = cv2.resize(image[top:top + crop_h, left:left + crop_w], (crop_w // kx, crop_h // ky),
                           interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        if w == width and h == height:
            return image
    double = (2 * width if w != width else w, 2 * height if h != height else h)
    enlarged = cv2.resize(image, double, interpolation=cv2.INTER_LINEAR)
    return cv2.resize(enlarged, (width, height), interpolation=cv2.INTER_AREA)


def min_decoded_side(spec: InputSpec) -> int:
    """The shorter side a decoded image needs for `spec` to shrink it, never enlarge it."""
    side = max(spec.width, spec.height)
    return math.ceil(side / spec.crop_fraction) if spec.resize == "center_crop" else side


def preprocess(image: ImageInput, spec: InputSpec, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any image input as the model's input: RGB uint8, shape (spec.height, spec.width, 3)."""
    return resize(decode(image, max_pixels=max_pixels, min_side=min_decoded_side(spec)), spec)
