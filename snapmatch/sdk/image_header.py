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

    @property
    def pixels(self) -> int | None:
        if self.width is None or self.height is None:
            return None
        return self.width * self.height


def read_header(data: bytes | memoryview) -> ImageHeader:
    """The format and size an encoded image declares; size None where the header does not say."""
    data = bytes(data[:1 << 16]) if len(data) > 1 << 16 else bytes(data)
    try:
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            width, height = struct.unpack("<HH", data[6:10])
            return ImageHeader("gif", width, height, may_have_alpha=True)
        if data.startswith(b"BM") and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return ImageHeader("bmp", abs(width), abs(height), may_have_alpha=True)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return ImageHeader("tiff", may_have_alpha=True)
    except struct.error:
        pass
    return ImageHeader("unknown", may_have_alpha=True)


def _png(data: bytes) -> ImageHeader:
    width, height, _depth, color_type = struct.unpack(">IIBB", data[16:26])
    # Colour types 4 and 6 carry alpha; a tRNS chunk adds transparency to the others.
    alpha = color_type in (4, 6) or b"tRNS" in data
    return ImageHeader("png", width, height, may_have_alpha=alpha)


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
            return ImageHeader("jpeg", width, height)
        i += 2 + length
    return ImageHeader("jpeg")


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        flags = data[20]
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return ImageHeader("webp", width, height, may_have_alpha=bool(flags & 0x10))
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, may_have_alpha=True)
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    return ImageHeader("webp", may_have_alpha=True)
