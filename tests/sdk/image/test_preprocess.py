"""preprocess.decode / resize / preprocess with real OpenCV encodings and hand-built files (no mocks)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import zlib
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from snapmatch.sdk.errors import (
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidImageError,
    SnapmatchError,
)
from snapmatch.sdk.model.model_spec import InputSpec
from snapmatch.sdk.image.preprocess import MAX_PIXELS, decode, preprocess, resize
from tests.model_factory import product_image
from tests.sdk.image.test_image_header import (
    bmp_core_bytes,
    encode,
    exif_app1,
    noise,
    pad_jpeg_header,
    png_bomb,
    png_chunk,
    png_bytes,
    png_from_rows,
    set_jpeg_size,
    splice_after_soi,
    tiff_gray_bytes,
)

BLUE, GREEN, RED, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)  # BGR


@pytest.fixture()
def photo() -> np.ndarray:
    """A 60x80 BGR photo with sharp 4x4 blocks (no two corners alike)."""
    return cv2.resize(product_image(2), (80, 60), interpolation=cv2.INTER_NEAREST)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- one image, three kinds of input ---------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp"])
def test_path_bytes_and_array_decode_identically(tmp_path, photo, ext):
    path = tmp_path / f"photo{ext}"
    assert cv2.imwrite(str(path), photo)
    data = path.read_bytes()
    reference = cv2.imread(str(path), cv2.IMREAD_COLOR)  # OpenCV's own reading of the file
    results = {
        "str": decode(str(path)),
        "Path": decode(path),
        "bytes": decode(data),
        "bytearray": decode(bytearray(data)),
        "memoryview": decode(memoryview(data)),
        "array": decode(reference),
    }
    for kind, result in results.items():
        assert result.shape == (60, 80, 3) and result.dtype == np.uint8, kind
        assert result.flags.c_contiguous, kind
        np.testing.assert_array_equal(result, reference, err_msg=kind)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".webp"])
def test_lossless_formats_round_trip(photo, ext):
    np.testing.assert_array_equal(decode(encode(photo, ext)), photo)


def test_jpeg_decodes_close_to_the_original(photo):
    decoded = decode(encode(photo, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95)))
    assert decoded.shape == photo.shape
    assert np.abs(decoded.astype(int) - photo).mean() < 8  # sharp colour blocks: chroma subsampling costs ~5


def test_preprocess_is_resize_of_decode(tmp_path, photo):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), photo)
    spec = InputSpec(height=24, width=40, resize="letterbox")
    out = preprocess(path, spec)
    np.testing.assert_array_equal(out, resize(decode(path), spec))
    np.testing.assert_array_equal(out, preprocess(photo, spec))
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8


def test_unicode_path(tmp_path, photo):
    path = tmp_path / "bild-äöü-製品.png"
    path.write_bytes(encode(photo, ".png"))
    np.testing.assert_array_equal(decode(path), photo)


def test_array_input_is_not_modified(photo):
    original = photo.copy()
    bgra = np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)])
    original_bgra = bgra.copy()
    preprocess(photo, InputSpec(32, 32, "center_crop"))
    decode(bgra)
    np.testing.assert_array_equal(photo, original)
    np.testing.assert_array_equal(bgra, original_bgra)


# --- errors ---------------------------------------------------------------------------


def test_error_types_are_snapmatch_errors():
    for error in (ImageNotFoundError, InvalidImageError, ImageTooLargeError):
        assert issubclass(error, ImageError) and issubclass(error, SnapmatchError)


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(ImageNotFoundError, match="not found") as info:
        decode(path)
    assert str(path) in str(info.value)


def test_directory_path(tmp_path):
    with pytest.raises(ImageNotFoundError, match="directory") as info:
        decode(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.jpg", b"")
    with pytest.raises(InvalidImageError, match="empty") as info:
        decode(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("data", [b"", bytearray(), memoryview(b"")], ids=["bytes", "bytearray", "memoryview"])
def test_empty_bytes(data):
    with pytest.raises(InvalidImageError, match="empty"):
        decode(data)


def test_garbage_bytes():
    data = b"\x00" + np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidImageError, match="image bytes"):
        decode(data)


def test_garbage_file_names_the_file(tmp_path):
    path = write(tmp_path / "noise.png", np.random.default_rng(1).integers(0, 256, 999, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidImageError) as info:
        decode(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_jpeg(tmp_path, fraction):
    image = cv2.resize(product_image(3, variant=1), (320, 240))
    jpeg = encode(image, ".jpg")
    path = write(tmp_path / "truncated.jpg", jpeg[: int(len(jpeg) * fraction)])
    with pytest.raises(InvalidImageError) as info:
        decode(path)
    assert str(path) in str(info.value)
    with pytest.raises(InvalidImageError):
        decode(path.read_bytes())


@pytest.mark.parametrize("ext", [".png", ".webp", ".bmp"])
def test_truncated_other_formats(tmp_path, photo, ext):
    data = encode(photo, ext)
    path = write(tmp_path / f"cut{ext}", data[: len(data) // 2])
    with pytest.raises(InvalidImageError) as info:
        decode(path)
    assert str(path) in str(info.value)


def test_text_file_renamed_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, bread\n" * 20)
    with pytest.raises(InvalidImageError) as info:
        decode(path)
    assert str(path) in str(info.value)


def test_jpeg_header_with_garbage_body():
    jpeg = encode(noise(40, 60), ".jpg")
    data = jpeg[:200] + bytes(range(256)) * 4
    with pytest.raises(InvalidImageError):
        decode(data)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a POSIX user that file modes apply to")
def test_unreadable_file(tmp_path, photo):
    path = write(tmp_path / "secret.png", encode(photo, ".png"))
    path.chmod(0)
    try:
        with pytest.raises(InvalidImageError, match="cannot read") as info:
            decode(path)
        assert str(path) in str(info.value)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("value", [42, 3.5, [[0, 0, 0]], {"path": "a.jpg"}])
def test_unsupported_input_type(value):
    with pytest.raises(InvalidImageError, match=type(value).__name__):
        decode(value)


def test_none_says_what_gives_none():
    with pytest.raises(InvalidImageError, match="cv2.imread returns None"):
        decode(None)


def test_name_is_used_in_messages():
    with pytest.raises(InvalidImageError, match="camera frame 7"):
        decode(b"not an image", name="camera frame 7")
    with pytest.raises(InvalidImageError, match="camera frame 8"):
        decode(np.zeros((4, 4), np.int32), name="camera frame 8")


# --- decompression bombs --------------------------------------------------------------


@pytest.fixture(scope="module")
def png_bomb_bytes() -> bytes:
    return png_bomb(20000, 20000)  # 400 Mpixel: 1.2 GB as BGR, ~50 KB on disk


def test_png_bomb_is_refused_from_its_header(tmp_path, png_bomb_bytes, monkeypatch):
    assert len(png_bomb_bytes) < 100_000
    path = write(tmp_path / "bomb.png", png_bomb_bytes)

    def never(*args, **kwargs):
        raise AssertionError("the decoder ran: the header alone should have refused the image")

    monkeypatch.setattr(cv2, "imdecode", never)
    with pytest.raises(ImageTooLargeError) as info:
        decode(path)
    message = str(info.value)
    assert str(path) in message and "20000x20000" in message and "400,000,000" in message
    with pytest.raises(ImageTooLargeError):
        preprocess(png_bomb_bytes, InputSpec(32, 32))


def test_max_pixels_boundary(photo):
    data = encode(photo, ".png")  # 80 x 60 = 4800 pixels
    assert decode(data, max_pixels=4800).shape == (60, 80, 3)
    with pytest.raises(ImageTooLargeError, match="4,800"):
        decode(data, max_pixels=4799)
    with pytest.raises(ImageTooLargeError):
        preprocess(data, InputSpec(32, 32), max_pixels=4799)


# Run in a fresh interpreter: peak RSS there is not inflated by other tests, and
# the import order (an app that imported cv2 before snapmatch, or not) is exact.
_DECODE_IN_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys, time

    def peak_rss_kib():
        # VmHWM is this process's own peak; ru_maxrss would include the forking parent's (pytest's) peak.
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    if sys.argv[2] == "cv2-first":
        import cv2  # what an app that uses cv2.VideoCapture has done before importing snapmatch
    from snapmatch.sdk.image.preprocess import decode
    with open(sys.argv[1], "rb") as file:
        data = file.read()
    before = peak_rss_kib()
    start = time.perf_counter()
    try:
        decode(data)
        error, message = None, ""
    except Exception as exc:
        error, message = type(exc).__name__, str(exc)
    seconds = time.perf_counter() - start
    growth_mb = (peak_rss_kib() - before) / 1024
    print(json.dumps({"error": error, "message": message, "seconds": seconds, "rss_growth_mb": growth_mb}))
    """
)


def decode_in_fresh_process(path: Path, order: str) -> dict:
    # This process has imported snapmatch, which put OPENCV_IO_MAX_IMAGE_PIXELS in os.environ;
    # a child must start without it, like an app's process does.
    env = {key: value for key, value in os.environ.items() if key != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    proc = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_FRESH_PROCESS, str(path), order],
        capture_output=True, text=True, timeout=120, cwd=path.parent, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak RSS from /proc/self/status")
@pytest.mark.parametrize("order", ["cv2-first", "snapmatch-first"])
def test_png_bomb_allocates_nothing(tmp_path, png_bomb_bytes, order):
    result = decode_in_fresh_process(write(tmp_path / "bomb.png", png_bomb_bytes), order)
    assert result["error"] == "ImageTooLargeError", result
    assert result["rss_growth_mb"] < 50, result  # decoding would take 1.2 GB (400 MB even as gray)


def test_jpeg_bomb_behind_large_app_segments(tmp_path):
    jpeg = set_jpeg_size(encode(noise(16, 16), ".jpg"), 8000, 6300)  # 50.4 Mpixel
    path = write(tmp_path / "bomb.jpg", pad_jpeg_header(jpeg))
    result = decode_in_fresh_process(path, "snapmatch-first")
    assert result["error"] == "ImageTooLargeError", result


@pytest.fixture(scope="module")
def tiff_bomb_bytes() -> bytes:
    return tiff_gray_bytes(8000, 6300)  # 50.4 Mpixel, 50 MB decoded, ~50 KB on disk


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak RSS from /proc/self/status")
def test_tiff_bomb_refused_before_decoding_when_cv2_imported_first(tmp_path, tiff_bomb_bytes):
    result = decode_in_fresh_process(write(tmp_path / "bomb.tiff", tiff_bomb_bytes), "cv2-first")
    assert result["error"] == "ImageTooLargeError", result
    assert result["rss_growth_mb"] < 25, result  # decoding takes 50 MB


def test_tiff_bomb_is_too_large_not_invalid_when_snapmatch_imported_first(tmp_path, tiff_bomb_bytes):
    result = decode_in_fresh_process(write(tmp_path / "bomb.tiff", tiff_bomb_bytes), "snapmatch-first")
    assert result["error"] == "ImageTooLargeError", result


def test_oversized_image_of_unparsed_format_is_refused_in_process():
    # max_pixels below OpenCV's own limit: only snapmatch's post-decode check can refuse this.
    data = tiff_gray_bytes(300, 200, value=9)
    with pytest.raises(ImageTooLargeError, match="300x200"):
        decode(data, max_pixels=59_999)
    assert decode(data, max_pixels=60_000).shape == (200, 300, 3)


# --- EXIF orientation -----------------------------------------------------------------


def _exif_expectation(plain: np.ndarray, orientation: int) -> np.ndarray:
    return {
        1: plain,
        2: plain[:, ::-1],  # mirrored left-right
        3: plain[::-1, ::-1],  # rotated 180
        4: plain[::-1],  # mirrored top-bottom
        5: plain.transpose(1, 0, 2),  # transposed
        6: np.rot90(plain, k=-1),  # rotated 90 clockwise
        7: plain[::-1, ::-1].transpose(1, 0, 2),  # transversed
        8: np.rot90(plain, k=1),  # rotated 90 counter-clockwise
    }[orientation]


@pytest.fixture(scope="module")
def marked_jpeg() -> bytes:
    image = np.full((40, 60, 3), 128, np.uint8)
    image[:10, :10] = RED  # top-left corner
    image[-10:, -10:] = BLUE  # bottom-right corner
    return encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95))


@pytest.mark.parametrize("byte_order", ["MM", "II"])
def test_exif_orientation_6_rotates_clockwise(tmp_path, marked_jpeg, byte_order):
    path = write(tmp_path / "portrait.jpg", splice_after_soi(marked_jpeg, exif_app1(6, byte_order)))
    for image in (path, path.read_bytes()):
        decoded = decode(image)
        assert decoded.shape == (60, 40, 3)  # was 40 x 60: height and width swapped
        # The red top-left corner is now top-right, the blue bottom-right corner bottom-left.
        assert tuple(int(v) for v in decoded[4, 35]) == pytest.approx(RED, abs=30)
        assert tuple(int(v) for v in decoded[55, 4]) == pytest.approx(BLUE, abs=30)


def test_exif_orientation_applies_to_a_jpeg_decoded_shrunk():
    image = np.full((600, 900, 3), 128, np.uint8)
    image[:150, :150] = RED  # top-left corner
    rotated = splice_after_soi(encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95)), exif_app1(6))
    decoded = decode(rotated, min_side=256)  # 900 x 600, shrunk twice: 450 x 300, then turned
    assert decoded.shape == (450, 300, 3)
    assert tuple(int(v) for v in decoded[20, 280]) == pytest.approx(RED, abs=30)  # now top-right


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation(marked_jpeg, orientation):
    plain = decode(marked_jpeg)
    decoded = decode(splice_after_soi(marked_jpeg, exif_app1(orientation)))
    np.testing.assert_array_equal(decoded, _exif_expectation(plain, orientation))


def test_exif_orientation_survives_preprocess(marked_jpeg):
    rotated = splice_after_soi(marked_jpeg, exif_app1(6))
    out = preprocess(rotated, InputSpec(60, 40, "stretch"))  # same size: no resampling
    np.testing.assert_array_equal(out, cv2.cvtColor(np.rot90(decode(marked_jpeg), k=-1), cv2.COLOR_BGR2RGB))


# --- colour types and depths of real files --------------------------------------------


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    gray = noise(30, 50, channels=1, seed=4)
    path = write(tmp_path / "gray.png", encode(gray, ".png"))
    decoded = decode(path)
    assert decoded.shape == (30, 50, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], gray)


def test_grayscale_jpeg_becomes_three_channels():
    decoded = decode(encode(noise(30, 50, channels=1), ".jpg"))
    assert decoded.shape == (30, 50, 3)
    assert (decoded[:, :, 0] == decoded[:, :, 2]).all()


def test_16_bit_grayscale_png_is_scaled_to_8_bits():
    values = np.array([[0, 255, 256, 32768, 65280, 65535]], np.uint16)
    decoded = decode(encode(values, ".png"))
    assert decoded.dtype == np.uint8 and decoded.shape == (1, 6, 3)
    np.testing.assert_array_equal(decoded[0, :, 1], [0, 0, 1, 128, 255, 255])


def test_16_bit_colour_png_is_scaled_per_channel():
    bgr16 = np.zeros((2, 3, 3), np.uint16)
    bgr16[..., 0], bgr16[..., 1], bgr16[..., 2] = 65535, 32768, 257 * 10
    decoded = decode(encode(bgr16, ".png"))
    assert decoded.dtype == np.uint8
    assert (decoded[..., 0] == 255).all() and (decoded[..., 1] == 128).all() and (decoded[..., 2] == 10).all()


def test_16_bit_bgra_png_composites_on_white():
    bgra16 = np.zeros((1, 2, 4), np.uint16)
    bgra16[0, 0] = (65535, 0, 0, 65535)  # opaque blue
    bgra16[0, 1] = (0, 0, 65535, 0)  # transparent red
    decoded = decode(encode(bgra16, ".png"))
    np.testing.assert_array_equal(decoded[0], [BLUE, WHITE])


def test_bgra_png_transparent_region_becomes_white(tmp_path, photo):
    bgra = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    bgra[:, :40, 3] = 0  # left half fully transparent (its colour channels still hold the photo)
    bgra[:, 40:60, 3] = 128  # a half-transparent band
    path = write(tmp_path / "cutout.png", encode(bgra, ".png"))
    decoded = decode(path)
    assert decoded.shape == (60, 80, 3)
    assert (decoded[:, :40] == 255).all()
    np.testing.assert_array_equal(decoded[:, 60:], photo[:, 60:])
    expected_band = photo[:, 40:60] * (128 / 255) + 255 * (1 - 128 / 255)
    assert np.abs(decoded[:, 40:60] - expected_band).max() <= 1


def test_gray_alpha_png_composites_on_white():
    # Colour type 4 (gray + alpha), which OpenCV cannot write.
    rows = [bytes([100, 255, 100, 0, 30, 128])] * 2  # opaque 100, transparent, half-transparent 30
    decoded = decode(png_from_rows(3, 2, bit_depth=8, color_type=4, rows=rows))
    assert decoded.shape == (2, 3, 3)
    np.testing.assert_array_equal(decoded[:, 0], [[100] * 3] * 2)
    np.testing.assert_array_equal(decoded[:, 1], [[255] * 3] * 2)
    assert abs(int(decoded[0, 2, 0]) - round(30 * 128 / 255 + 255 * 127 / 255)) <= 1


def test_palette_png_with_transparency_chunk():
    palette = png_chunk(b"PLTE", bytes([255, 0, 0, 0, 0, 255]))  # RGB: red, blue
    transparency = png_chunk(b"tRNS", bytes([255, 0]))  # blue fully transparent
    data = png_from_rows(2, 1, bit_depth=8, color_type=3, rows=[bytes([0, 1])], extra=palette + transparency)
    np.testing.assert_array_equal(decode(data)[0], [RED, WHITE])


def test_lossy_webp_with_alpha_composites_on_white(photo):
    bgra = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    bgra[:, :40, 3] = 0
    decoded = decode(encode(bgra, ".webp", (cv2.IMWRITE_WEBP_QUALITY, 90)))
    assert (decoded[:, :36] >= 250).all()  # a margin for lossy edges
    assert np.abs(decoded[:, 44:].astype(int) - photo[:, 44:]).mean() < 10


def test_gif_decodes_to_bgr():
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :15] = RED
    image[:, 15:] = GREEN
    try:
        data = encode(image, ".gif")
    except (AssertionError, cv2.error):
        pytest.skip("this OpenCV build cannot write GIF")
    decoded = decode(data)
    assert decoded.shape == (20, 30, 3) and decoded.dtype == np.uint8
    # palette quantisation: colours are close, not exact
    assert np.abs(decoded[5, 5].astype(int) - RED).max() <= 8
    assert np.abs(decoded[5, 25].astype(int) - GREEN).max() <= 8


def test_top_down_and_32_bit_bmp(photo):
    bgra = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(decode(encode(bgra, ".bmp")), photo)


def test_os2_bmp_decodes():
    assert decode(bmp_core_bytes(noise(4, 5))).shape == (4, 5, 3)


# --- arrays ---------------------------------------------------------------------------


def test_bgr_array_passes_through(photo):
    np.testing.assert_array_equal(decode(photo), photo)


@pytest.mark.parametrize("shape", [(30, 50), (30, 50, 1)], ids=["HxW", "HxWx1"])
def test_gray_arrays(shape):
    gray = noise(30, 50, channels=1).reshape(shape)
    decoded = decode(gray)
    assert decoded.shape == (30, 50, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], gray.reshape(30, 50))


def test_bgra_array_composites_on_white():
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[0, 0] = (*BLUE, 255)
    bgra[0, 1] = (*RED, 0)
    bgra[1, 0] = (0, 0, 0, 51)  # 20 % black on white: 255 * 0.8 = 204
    bgra[1, 1] = (10, 20, 30, 255)
    decoded = decode(bgra)
    np.testing.assert_array_equal(decoded, [[BLUE, WHITE], [(204, 204, 204), (10, 20, 30)]])


def test_uint16_array_is_scaled():
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    np.testing.assert_array_equal(decode(values)[0, :, 0], [0, 1, 128, 255])
    bgr16 = np.full((2, 2, 3), 257 * 200, np.uint16)
    assert (decode(bgr16) == 200).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_in_unit_range(dtype):
    values = np.array([[0.0, 0.5, 1.0, 0.2]], dtype)
    decoded = decode(values)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 128, 255, 51])
    rgb_like = np.full((3, 3, 3), 0.25, dtype)
    assert (decode(rgb_like) == 64).all()


@pytest.mark.parametrize("values", [[[0.0, 128.0, 255.0]], [[-0.3, 0.5, 1.0]], [[0.0, 0.5, 1.7]]])
def test_float_arrays_outside_unit_range_are_refused_not_clipped(values):
    # A float32 BGR frame of 0-255 values would otherwise clip to white and find the wrong product.
    with pytest.raises(InvalidImageError, match=r"float pixels must be in \[0, 1\]"):
        decode(np.array(values, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_arrays_with_non_finite_values(bad):
    values = np.zeros((4, 4, 3), np.float32)
    values[1, 2, 0] = bad
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        decode(values)


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.int64, np.uint32, np.bool_, np.complex64])
def test_unsupported_dtypes(dtype):
    with pytest.raises(InvalidImageError, match=np.dtype(dtype).name):
        decode(np.zeros((8, 8, 3), dtype))


@pytest.mark.parametrize(
    "shape", [(8, 8, 2), (8, 8, 5), (64,), (2, 8, 8, 3), (0, 8, 3), (8, 0), (0, 0, 4)],
)
def test_unsupported_shapes(shape):
    with pytest.raises(InvalidImageError, match="shape"):
        decode(np.zeros(shape, np.uint8))


@pytest.mark.parametrize(
    "view",
    [lambda a: a[:, ::2], lambda a: a[::-1, ::-1], lambda a: a[..., ::-1], lambda a: a.transpose(1, 0, 2)],
    ids=["strided", "reversed", "channels-reversed", "transposed"],
)
def test_non_contiguous_arrays(photo, view):
    source = view(photo)
    decoded = decode(source)
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, source)
    # and the rest of the pipeline takes it too
    assert preprocess(source, InputSpec(16, 16, "letterbox")).shape == (16, 16, 3)


def test_non_contiguous_gray_and_bgra_views():
    gray = noise(10, 20, channels=1)
    np.testing.assert_array_equal(decode(gray[:, ::-1])[:, :, 0], gray[:, ::-1])
    bgra = np.dstack([noise(10, 20), np.full((10, 20), 255, np.uint8)])
    np.testing.assert_array_equal(decode(bgra[:, ::2]), bgra[:, ::2, :3])


# --- resize ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["center_crop", "stretch", "letterbox"])
@pytest.mark.parametrize("spec_size", [(32, 32), (24, 40), (40, 24)], ids=["32x32", "24x40", "40x24"])
@pytest.mark.parametrize(
    "image_size", [(60, 80), (80, 60), (32, 32), (7, 9), (1, 300), (300, 1), (1000, 800)],
    ids=lambda size: f"{size[0]}x{size[1]}",
)
def test_output_shape_for_every_policy(policy, spec_size, image_size):
    height, width = spec_size
    image = noise(*image_size, seed=image_size[0] * 7 + image_size[1])
    out = resize(image, InputSpec(height=height, width=width, resize=policy))
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8 and out.flags.c_contiguous


@pytest.mark.parametrize("policy", ["center_crop", "stretch", "letterbox"])
def test_output_is_rgb(policy):
    blue = np.zeros((50, 70, 3), np.uint8)
    blue[:] = BLUE  # BGR (255, 0, 0)
    out = resize(blue, InputSpec(32, 32, policy))
    centre = out[16, 16]
    assert (centre[0], centre[1], centre[2]) == (0, 0, 255)  # R = 0, G = 0, B = 255
    if policy != "letterbox":
        assert (out == (0, 0, 255)).all()


def test_stretch_matches_opencv_reference(photo):
    out = resize(photo, InputSpec(height=30, width=20, resize="stretch"))
    reference = cv2.cvtColor(cv2.resize(photo, (20, 30), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out, reference)


def test_same_size_is_identity_up_to_channel_order(photo):
    for policy in ("stretch", "letterbox"):
        np.testing.assert_array_equal(resize(photo, InputSpec(60, 80, policy)), photo[..., ::-1])
    np.testing.assert_array_equal(
        resize(photo, InputSpec(60, 80, "center_crop", crop_fraction=1.0)), photo[..., ::-1]
    )


def test_upscaling_a_small_image(photo):
    small = photo[:6, :8]
    out = resize(small, InputSpec(height=48, width=64, resize="stretch"))
    reference = cv2.resize(small, (64, 48), interpolation=cv2.INTER_LINEAR)[..., ::-1]
    np.testing.assert_array_equal(out, reference)


def test_letterbox_pads_wide_image_with_white_above_and_below():
    image = np.zeros((50, 100, 3), np.uint8)
    image[:] = GREEN
    out = resize(image, InputSpec(32, 32, "letterbox"))  # scaled to 32 x 16, placed at rows 8..23
    assert (out[:8] == 255).all() and (out[24:] == 255).all()
    assert (out[8:24] == (0, 255, 0)).all()


def test_letterbox_pads_tall_image_left_and_right(photo):
    tall = cv2.resize(photo, (30, 90), interpolation=cv2.INTER_NEAREST)  # 90 high, 30 wide
    out = resize(tall, InputSpec(height=30, width=30, resize="letterbox"))  # 10 x 30, columns 10..19
    assert (out[:, :10] == 255).all() and (out[:, 20:] == 255).all()
    reference = cv2.resize(tall, (10, 30), interpolation=cv2.INTER_AREA)[..., ::-1]
    np.testing.assert_array_equal(out[:, 10:20], reference)


def test_letterbox_keeps_the_whole_image(photo):
    # 60x80 into 24x40: scale min(40/80, 24/60) = 0.4 -> 24 x 32, columns 4..35
    out = resize(photo, InputSpec(height=24, width=40, resize="letterbox"))
    assert (out[:, :4] == 255).all() and (out[:, 36:] == 255).all()
    reference = cv2.resize(photo, (32, 24), interpolation=cv2.INTER_AREA)[..., ::-1]
    assert np.abs(out[:, 4:36].astype(int) - reference).mean() < 6  # sharp 4x4 blocks at 0.4x: a staged area average


def test_center_crop_keeps_the_centre():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:] = GREEN
    image[25:75, 25:75] = RED  # the middle half
    out = resize(image, InputSpec(32, 32, "center_crop", crop_fraction=0.4))  # sees rows/cols 30..70
    assert (out == (255, 0, 0)).all()  # all red, in RGB


def test_center_crop_of_wide_image_drops_the_sides():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :50] = BLUE
    image[:, 50:150] = RED
    image[:, 150:] = GREEN
    out = resize(image, InputSpec(32, 32, "center_crop"))  # sees columns 56..144 (87.5 wide)
    assert (out == (255, 0, 0)).all()


def test_center_crop_whole_image_when_fraction_is_one():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = BLUE
    image[:, 50:] = RED
    out = resize(image, InputSpec(32, 32, "center_crop", crop_fraction=1.0))
    # the two halves, give or take the column on the edge between them (a staged area average)
    assert (out[:, :15] == (0, 0, 255)).all() and (out[:, 17:] == (255, 0, 0)).all()


def smooth_image(height: int, width: int) -> np.ndarray:
    """Ramps and a slow wave: resampling differences of a fraction of a pixel stay small."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = 127 + 100 * np.sin(2 * np.pi * (x - y) / 400)
    bgr = np.stack([255 * x / (width - 1), 255 * y / (height - 1), wave], axis=2)
    return np.clip(bgr + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("image_size", [(120, 90), (90, 120), (100, 100), (67, 201)])
def test_center_crop_matches_crop_then_resize_reference(image_size):
    # Independent reference: cut the central crop_fraction of the shorter side, then resize.
    height, width = image_size
    image = smooth_image(height, width)
    side = round(min(height, width) * 0.75)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top:top + side, left:left + side]
    reference = cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA)[..., ::-1]
    out = resize(image, InputSpec(32, 32, "center_crop", crop_fraction=0.75))
    assert np.abs(out.astype(int) - reference).mean() < 3
    # and it is not just any 32x32 view: the top-left crop would be far off
    corner = cv2.resize(image[:side, :side], (32, 32), interpolation=cv2.INTER_AREA)[..., ::-1]
    assert np.abs(out.astype(int) - corner).mean() > 10


@pytest.mark.parametrize("source, target", [((348, 348), (224, 224)), ((480, 640), (224, 224)),
                                            ((1500, 2000), (224, 224)), ((100, 70), (32, 40)), ((61, 90), (60, 32))])
def test_shrinking_is_close_to_one_area_average(source, target):
    """The staged shrink (whole-factor box, then bilinear 2x and a 2x box) stays within a level or two of
    OpenCV's one-step INTER_AREA, on every axis split (a factor below 2, above 2, one axis unchanged)."""
    image = smooth_image(*source)
    out = resize(image, InputSpec(*target, "stretch"))
    reference = cv2.resize(image, target[::-1], interpolation=cv2.INTER_AREA)[..., ::-1]
    difference = np.abs(out.astype(int) - reference)
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 3


def test_whole_factors_are_exactly_opencvs_area_average():
    image = noise(96, 128, seed=3)
    out = resize(image, InputSpec(24, 32, "stretch"))
    np.testing.assert_array_equal(out, cv2.resize(image, (32, 24), interpolation=cv2.INTER_AREA)[..., ::-1])


def test_a_large_jpeg_is_decoded_shrunk_when_the_model_needs_fewer_pixels(tmp_path):
    """preprocess lets libjpeg shrink a large JPEG in the DCT (2, 4 or 8 times) while the crop still shrinks."""
    image = smooth_image(1536, 2048)
    data = encode(image, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95))
    spec = InputSpec(224, 224, "center_crop")  # needs a shorter side of 256: 1536 / 4 = 384, / 8 = 192
    from snapmatch.sdk.image.preprocess import min_decoded_side

    assert min_decoded_side(spec) == 256
    assert decode(data).shape == (1536, 2048, 3)  # decode alone gives every pixel
    assert decode(data, min_side=256).shape == (384, 512, 3)
    assert decode(encode(image[:300, :300], ".jpg"), min_side=256).shape == (300, 300, 3)  # too small to shrink
    assert decode(encode(image, ".png"), min_side=256).shape == (1536, 2048, 3)  # only JPEG scales in the DCT
    full = resize(decode(data), spec)
    out = preprocess(data, spec)
    assert np.abs(out.astype(int) - full).mean() < 2


def test_center_crop_of_extreme_aspect_ratio_stays_small():
    strip = np.full((1, 12000, 3), 90, np.uint8)
    tracemalloc.start()
    try:
        out = resize(strip, InputSpec(32, 32, "center_crop"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (32, 32, 3) and (out == 90).all()
    assert peak < 10_000_000, f"peak {peak / 1e6:.0f} MB"


# --- module layout --------------------------------------------------------------------


def test_every_name_snapmatch_sdk_exports_is_what_it_advertises():
    # In a fresh process, as an app would: `from snapmatch.sdk import X` for each X in __all__.
    code = textwrap.dedent(
        """
        import importlib, inspect, json
        sdk = importlib.import_module("snapmatch.sdk")
        namespace = {}
        for name in sdk.__all__:
            exec(f"from snapmatch.sdk import {name}", namespace)
        modules = [name for name in sdk.__all__ if inspect.ismodule(namespace[name])]
        modules += [name for name in sdk.__all__ if inspect.ismodule(getattr(sdk, name))]
        print(json.dumps(sorted(set(modules))))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []  # classes and functions, never a module


def test_preprocess_module_is_importable():
    module = importlib.import_module("snapmatch.sdk.image.preprocess")
    assert module.decode is decode and module.MAX_PIXELS == MAX_PIXELS


def test_a_16_bit_rgba_png_is_bounded_by_the_bytes_it_decodes_to(tmp_path):
    from snapmatch.sdk.image.preprocess import MAX_DECODED_BYTES

    side = 7000  # 49 Mpx: under the pixel limit, but 392 MB as 16-bit RGBA
    data = png_bytes(side, side, bit_depth=16, color_type=6, idat=zlib.compress(b""))
    with pytest.raises(ImageTooLargeError, match="8 bytes a pixel"):
        decode(data)
    assert side * side * 8 > MAX_DECODED_BYTES >= side * side * 3


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InvalidImageError, match="not a regular file"):
        decode(fifo)  # would block forever
    with pytest.raises(InvalidImageError, match="not a regular file"):
        decode("/dev/zero")  # would be read until memory runs out


def test_a_zero_stride_view_is_bounded_by_its_shape():
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # no memory until copied
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        decode(huge)


def test_alpha_compositing_matches_the_float_formula():
    rng = np.random.default_rng(3)
    bgra = rng.integers(0, 256, (300, 7, 4), dtype=np.uint8)  # more rows than one band
    alpha = bgra[:, :, 3:4] / 255.0
    expected = np.floor(bgra[:, :, :3] * alpha + 255 * (1 - alpha) + 0.5)
    assert np.abs(decode(bgra).astype(int) - expected).max() <= 1
