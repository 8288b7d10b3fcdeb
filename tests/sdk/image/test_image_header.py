"""image_header.read_header against real encodings from OpenCV and hand-built headers.

The byte-level builders here (PNG chunks, EXIF segments, JPEG padding, BMP and
TIFF files) are also used by test_preprocess.py: they craft inputs that OpenCV
cannot write, such as a 20000x20000 PNG that is 50 KB on disk.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from snapmatch.sdk.image.image_header import ImageHeader, read_header

# --- byte builders -------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width: int, height: int, *, bit_depth: int, color_type: int, idat: bytes, extra: bytes = b"") -> bytes:
    """A PNG file from already compressed image data; `extra` chunks go between IHDR and IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def png_from_rows(
    width: int, height: int, *, bit_depth: int, color_type: int, rows: list[bytes], extra: bytes = b""
) -> bytes:
    """A PNG from raw scanlines (filter type 0 is prepended to each)."""
    raw = b"".join(b"\x00" + row for row in rows)
    assert len(rows) == height
    return png_bytes(width, height, bit_depth=bit_depth, color_type=color_type, idat=zlib.compress(raw), extra=extra)


def png_bomb(width: int, height: int) -> bytes:
    """A fully valid 1-bit grayscale PNG of width x height black pixels: tiny on disk, huge decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    block_rows = 1000
    parts = [compressor.compress(row * block_rows) for _ in range(height // block_rows)]
    parts.append(compressor.compress(row * (height % block_rows)))
    parts.append(compressor.flush())
    return png_bytes(width, height, bit_depth=1, color_type=0, idat=b"".join(parts))


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def exif_app1(orientation: int, byte_order: str = "MM") -> bytes:
    """An APP1 EXIF segment whose IFD0 holds only the Orientation tag (0x0112, SHORT)."""
    endian = ">" if byte_order == "MM" else "<"
    tiff = (b"MM\x00\x2a" if byte_order == "MM" else b"II\x2a\x00") + struct.pack(endian + "I", 8)
    tiff += struct.pack(endian + "H", 1)
    tiff += struct.pack(endian + "HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(endian + "I", 0)
    return jpeg_segment(0xE1, b"Exif\x00\x00" + tiff)


def splice_after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def pad_jpeg_header(jpeg: bytes, count: int = 2) -> bytes:
    """The JPEG with `count` maximal (64 KB) APP2 segments before its frame header.

    Phones write EXIF with thumbnails, ICC profiles and MPF data this way, so
    the start-of-frame marker of a real photo can lie past the first 64 KB.
    """
    filler = jpeg_segment(0xE2, b"FILLER\x00" + b"\x00" * (65533 - 7))
    return splice_after_soi(jpeg, *([filler] * count))


def set_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with the size in its (first) baseline start-of-frame header replaced."""
    at = jpeg.find(b"\xff\xc0")
    assert at > 0
    data = bytearray(jpeg)
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_bytes(pixels_bgr: np.ndarray, *, top_down: bool = False) -> bytes:
    """A 24-bit BITMAPINFOHEADER BMP; top_down writes a negative height (rows stored top first)."""
    height, width = pixels_bgr.shape[:2]
    stride = (width * 3 + 3) & ~3
    ordered = pixels_bgr if top_down else pixels_bgr[::-1]
    rows = b"".join(row.tobytes() + b"\x00" * (stride - width * 3) for row in ordered)
    dib = struct.pack("<IiiHHIIiiII", 40, width, -height if top_down else height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(rows), 0, 0, 14 + len(dib)) + dib + rows


def bmp_core_bytes(pixels_bgr: np.ndarray) -> bytes:
    """A 24-bit OS/2 BMP: BITMAPCOREHEADER (12 bytes) with 16-bit width and height."""
    height, width = pixels_bgr.shape[:2]
    stride = (width * 3 + 3) & ~3
    rows = b"".join(row.tobytes() + b"\x00" * (stride - width * 3) for row in pixels_bgr[::-1])
    dib = struct.pack("<IHHHH", 12, width, height, 1, 24)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(rows), 0, 0, 14 + len(dib)) + dib + rows


def tiff_gray_bytes(width: int, height: int, *, value: int = 0) -> bytes:
    """A little-endian, deflate-compressed 8-bit grayscale TIFF of one colour (built without decoding anything)."""
    compressor = zlib.compressobj(1)
    row = bytes([value]) * width
    block_rows = max(1, (1 << 22) // width)
    parts, left = [], height
    while left:
        rows = min(block_rows, left)
        parts.append(compressor.compress(row * rows))
        left -= rows
    parts.append(compressor.flush())
    strip = b"".join(parts)
    entries = [  # (tag, type, value): type 3 = SHORT, 4 = LONG
        (256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1),
        (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip)),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    strip_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = strip_offset if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + strip


def encode(image: np.ndarray, ext: str, params: tuple[int, ...] = ()) -> bytes:
    ok, buffer = cv2.imencode(ext, image, list(params))
    assert ok, f"OpenCV could not encode {ext}"
    return buffer.tobytes()


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --- sizes of real encodings ----------------------------------------------------------

# Non-square, and wider than 255 so that a byte-order or field-width mistake shows.
HEIGHT, WIDTH = 37, 301


@pytest.mark.parametrize(
    "ext, params, channels, fmt, alpha",
    [
        (".png", (), 3, "png", False),
        (".png", (), 1, "png", False),
        (".png", (), 4, "png", True),
        (".jpg", (), 3, "jpeg", False),
        (".jpg", (), 1, "jpeg", False),
        (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), 3, "jpeg", False),
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80), 3, "webp", False),  # lossy: VP8
        (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80), 4, "webp", True),  # lossy with alpha: VP8X
        (".webp", (), 3, "webp", True),  # default (and quality > 100) is lossless: VP8L
        (".bmp", (), 3, "bmp", True),
        (".bmp", (), 4, "bmp", True),
    ],
    ids=lambda value: str(value) if not isinstance(value, tuple) else ("params" if value else "default"),
)
def test_size_and_format_of_opencv_encodings(ext, params, channels, fmt, alpha):
    data = encode(noise(HEIGHT, WIDTH, channels), ext, params)
    header = read_header(data)
    assert header.format == fmt
    assert (header.width, header.height) == (WIDTH, HEIGHT)
    assert header.pixels == WIDTH * HEIGHT
    # A format that may carry alpha must say so, or decode would drop the alpha channel.
    if alpha:
        assert header.may_have_alpha
    elif fmt in ("png", "jpeg"):
        assert header.may_have_alpha is False


def test_gif_size():
    try:
        data = encode(noise(HEIGHT, WIDTH), ".gif")
    except cv2.error:
        pytest.skip("this OpenCV build cannot write GIF")
    header = read_header(data)
    assert (header.format, header.width, header.height) == ("gif", WIDTH, HEIGHT)


@pytest.mark.parametrize("size", [(1, 1), (1, 65535), (65500, 3)], ids=["1x1", "1x65535", "65500x3"])
def test_png_size_is_read_from_ihdr_without_decoding(size):
    height, width = size
    data = png_bytes(width, height, bit_depth=8, color_type=2, idat=zlib.compress(b""))
    assert read_header(data) == ImageHeader("png", width, height, may_have_alpha=False, bytes_per_pixel=3)


@pytest.mark.parametrize("depth, color_type, expected", [(8, 0, 1), (8, 2, 3), (16, 2, 6), (8, 6, 4), (16, 6, 8),
                                                         (16, 4, 4)])
def test_png_bytes_per_pixel_come_from_depth_and_colour_type(depth, color_type, expected):
    data = png_bytes(10, 10, bit_depth=depth, color_type=color_type, idat=zlib.compress(b""))
    assert read_header(data).bytes_per_pixel == expected


def test_png_bomb_size():
    header = read_header(png_bomb(20000, 20000))
    assert (header.format, header.width, header.height) == ("png", 20000, 20000)
    assert header.pixels == 400_000_000


@pytest.mark.parametrize("color_type, alpha", [(0, False), (2, False), (3, False), (4, True), (6, True)])
def test_png_alpha_follows_colour_type(color_type, alpha):
    data = png_bytes(4, 4, bit_depth=8, color_type=color_type, idat=zlib.compress(b""))
    assert read_header(data).may_have_alpha is alpha


def test_png_transparency_chunk_means_alpha():
    palette = png_chunk(b"PLTE", bytes([255, 0, 0, 0, 0, 255]))
    transparency = png_chunk(b"tRNS", bytes([255, 0]))
    data = png_from_rows(2, 1, bit_depth=8, color_type=3, rows=[bytes([0, 1])], extra=palette + transparency)
    assert read_header(data).may_have_alpha is True


def test_jpeg_with_exif_segment_before_frame():
    data = splice_after_soi(encode(noise(HEIGHT, WIDTH), ".jpg"), exif_app1(6))
    header = read_header(data)
    assert (header.format, header.width, header.height) == ("jpeg", WIDTH, HEIGHT)


def test_jpeg_with_fill_bytes_before_marker():
    # Any marker may be preceded by 0xFF fill bytes (ITU T.81 B.1.1.2).
    jpeg = encode(noise(HEIGHT, WIDTH), ".jpg")
    data = jpeg[:2] + b"\xff\xff\xff" + jpeg[2:]
    assert (read_header(data).width, read_header(data).height) == (WIDTH, HEIGHT)


def test_jpeg_patched_frame_size_is_what_the_header_says():
    data = set_jpeg_size(encode(noise(HEIGHT, WIDTH), ".jpg"), 20000, 20000)
    assert (read_header(data).width, read_header(data).height) == (20000, 20000)


def test_jpeg_without_frame_header_has_no_size():
    header = read_header(b"\xff\xd8" + jpeg_segment(0xE0, b"JFIF\x00" + b"\x00" * 9))
    assert header.format == "jpeg"
    assert header.width is None and header.pixels is None


def test_jpeg_frame_header_after_64_kb_of_app_segments():
    data = pad_jpeg_header(encode(noise(HEIGHT, WIDTH), ".jpg"))
    assert data.find(b"\xff\xc0") > 1 << 16
    header = read_header(data)
    assert (header.format, header.width, header.height) == ("jpeg", WIDTH, HEIGHT)


def test_bmp_top_down_height_is_positive():
    pixels = noise(7, 300)
    data = bmp_bytes(pixels, top_down=True)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), pixels)
    header = read_header(data)
    assert (header.format, header.width, header.height) == ("bmp", 300, 7)


def test_bmp_os2_core_header_size():
    data = bmp_core_bytes(noise(4, 5))
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None  # OpenCV reads it
    header = read_header(data)
    assert (header.format, header.width, header.height) == ("bmp", 5, 4)


def test_tiff_is_recognised():
    header = read_header(encode(noise(HEIGHT, WIDTH), ".tiff"))
    assert header.format == "tiff"
    assert header.may_have_alpha is True


def test_handmade_tiff_is_a_real_tiff():
    data = tiff_gray_bytes(9, 5, value=77)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (5, 9) and (decoded == 77).all()
    assert read_header(data).format == "tiff"


def test_tiff_size():
    header = read_header(tiff_gray_bytes(9, 5))
    assert (header.width, header.height) == (9, 5)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, world: not an image", b"GIF89a", bytes(range(256)), b"P6\n3 2\n255\n" + bytes(18)],
    ids=["empty", "text", "gif-signature-only", "binary", "ppm"],
)
def test_unknown_formats(data):
    header = read_header(data)
    assert header.format == "unknown"
    assert header.width is None and header.height is None and header.pixels is None
    assert header.may_have_alpha is True  # unknown: decode must keep every channel


def test_random_bytes_are_unknown():
    data = np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    data = b"\x00" + data[1:]  # no accidental signature
    assert read_header(data).format == "unknown"


def test_accepts_memoryview_and_large_input():
    data = encode(noise(300, 400), ".png")  # random pixels: well over 64 KB
    assert len(data) > 1 << 16
    assert read_header(memoryview(data)) == read_header(data)
    assert (read_header(data).width, read_header(data).height) == (400, 300)


def test_pixels_is_none_without_both_sides():
    assert ImageHeader("jpeg", width=10).pixels is None
    assert ImageHeader("png", 3, 5).pixels == 15
