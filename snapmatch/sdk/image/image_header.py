"""Read an encoded image's format and pixel size from its header, without decoding it.

This lets `preprocess` refuse a decompression bomb (a small file that decodes
to gigabytes) before OpenCV allocates anything.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# JPEG start-of-frame markers carry the frame size (DHT/JPG/DAC share the range).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg", "png", "gif", "bmp", "webp" or "unknown"
    width: int | None = None
    height: int | None = None
    may_have_alpha: bool = False
    # Bytes per pixel once decoded: the header's (PNG), else the most the format can hold
    # (16-bit RGBA for TIFF and unknown formats, 8-bit RGBA for the others).
    bytes_per_pixel: int = 8

    @property
    def pixels(self) -> int | None:
        if self.width is None or self.height is None:
            return None
        return self.width * self.height


def read_header(data: bytes | bytearray | memoryview) -> ImageHeader:
    """The format and size an encoded image declares; size None where the header does not say.

    Reads only what each format needs, but anywhere in the file: a JPEG's
    frame header can sit behind large EXIF/ICC segments, and a TIFF's
    directory is often written at the end.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    try:
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            width, height = struct.unpack("<HH", data[6:10])
            return ImageHeader("gif", width, height, may_have_alpha=True, bytes_per_pixel=4)
        if data.startswith(b"BM") and len(data) >= 26:
            (header_size,) = struct.unpack("<I", data[14:18])
            if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                width, height = struct.unpack("<HH", data[18:22])
            else:
                width, height = struct.unpack("<ii", data[18:26])
            return ImageHeader("bmp", abs(width), abs(height), may_have_alpha=True, bytes_per_pixel=4)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
    except struct.error:
        pass
    return ImageHeader("unknown", may_have_alpha=True)


def _png(data: bytes) -> ImageHeader:
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    # Colour types 4 and 6 carry alpha; a tRNS chunk (before the image data) adds transparency to the others.
    first_data = data.find(b"IDAT")
    alpha = color_type in (4, 6) or b"tRNS" in data[: first_data if first_data > 0 else len(data)]
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color_type, 4) + (1 if alpha and color_type in (0, 2, 3) else 0)
    return ImageHeader("png", width, height, may_have_alpha=alpha,
                       bytes_per_pixel=max(1, channels * (2 if depth == 16 else 1)))


def _jpeg(data: bytes) -> ImageHeader:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return ImageHeader("jpeg", width, height, bytes_per_pixel=3)
        i += 2 + length
    return ImageHeader("jpeg")


def _tiff(data: bytes) -> ImageHeader:
    """Width and height tags (256, 257) of the first image directory."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (entries,) = struct.unpack(order + "H", data[offset:offset + 2])
    size: dict[int, int] = {}
    for i in range(entries):
        start = offset + 2 + 12 * i
        tag, kind, _count = struct.unpack(order + "HHI", data[start:start + 8])
        if tag in (256, 257):
            fmt = order + ("H" if kind == 3 else "I")
            (size[tag],) = struct.unpack(fmt, data[start + 8:start + 8 + struct.calcsize(fmt)])
    return ImageHeader("tiff", size.get(256), size.get(257), may_have_alpha=True)


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        flags = data[20]
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return ImageHeader("webp", width, height, may_have_alpha=bool(flags & 0x10), bytes_per_pixel=4)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, may_have_alpha=True, bytes_per_pixel=4)
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF, bytes_per_pixel=4)
    return ImageHeader("webp", may_have_alpha=True, bytes_per_pixel=4)
