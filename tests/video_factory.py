"""Real encoded test videos (MJPG in .avi, written with cv2.VideoWriter) made of real product photos.

A video is a list of segments: an empty counter, a photo held in front of
the camera (sliding in and out, with hand jitter and sensor noise), or a
blurred photo. `write_video` returns what is in view in every frame, so
tests can check events against the truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEMO_DIR = Path(__file__).resolve().parent.parent / "snapmatch" / "demo"
SIZE = (320, 240)  # width, height
FPS = 15.0


def demo_photos() -> dict[str, list[Path]]:
    """product id -> its bundled catalog photos; the unknown product is "aubergine" (a query photo)."""
    manifest = json.loads((DEMO_DIR / "photos.json").read_text())
    photos = {p["id"]: [DEMO_DIR / path for path in p["photos"]] for p in manifest["products"]}
    photos["aubergine"] = [DEMO_DIR / "queries" / "Aubergine.jpg"]
    return photos


def demo_names() -> dict[str, str]:
    manifest = json.loads((DEMO_DIR / "photos.json").read_text())
    return {p["id"]: p["name"] for p in manifest["products"]}


@dataclass(frozen=True)
class Segment:
    """`frames` frames of one thing in view: a photo (path) or None for the empty counter."""

    photo: Path | None
    frames: int
    label: str | None = None  # what the truth list says for these frames (the product id)
    slide: int = 0  # frames spent sliding in (and out again) at the segment's ends
    blur: int = 0  # length in pixels of a horizontal motion blur over the whole frame; 0: sharp


def empty(frames: int) -> Segment:
    return Segment(None, frames)


def held(photo: Path, label: str | None, frames: int, *, slide: int = 0, blur: int = 0) -> Segment:
    return Segment(photo, frames, label, slide, blur)


def counter(size: tuple[int, int] = SIZE, seed: int = 0) -> np.ndarray:
    """An empty counter: a smooth, low-contrast wood-like texture."""
    width, height = size
    rng = np.random.default_rng(seed)
    grain = cv2.resize(rng.normal(0, 1, (height // 16, width // 4)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    base = np.array([92, 128, 160], np.float32)  # BGR: light brown
    return np.clip(base + 10 * grain[:, :, None], 0, 255).astype(np.uint8)


def _place(background: np.ndarray, photo: np.ndarray, offset_x: int, offset_y: int) -> np.ndarray:
    frame = background.copy()
    height, width = frame.shape[:2]
    ph, pw = photo.shape[:2]
    left, top = (width - pw) // 2 + offset_x, (height - ph) // 2 + offset_y
    x0, y0, x1, y1 = max(0, left), max(0, top), min(width, left + pw), min(height, top + ph)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = photo[y0 - top:y1 - top, x0 - left:x1 - left]
    return frame


def render(segments: list[Segment], *, size: tuple[int, int] = SIZE, seed: int = 0):
    """Yield (frame BGR, label) for every frame of the segments."""
    rng = np.random.default_rng(seed)
    background = counter(size, seed)
    width, height = size
    for segment in segments:
        photo = None
        if segment.photo is not None:
            image = cv2.imread(str(segment.photo))
            side = int(height * 0.9)
            photo = cv2.resize(image, (side * image.shape[1] // image.shape[0], side), interpolation=cv2.INTER_AREA)
        for i in range(segment.frames):
            if photo is None:
                frame, label = background, None
            else:
                # Slide in from the right over `slide` frames and out to the left at the end.
                travel = width
                if segment.slide and i < segment.slide:
                    dx = int(travel * (segment.slide - i) / (segment.slide + 1))
                elif segment.slide and i >= segment.frames - segment.slide:
                    dx = -int(travel * (i - (segment.frames - segment.slide) + 1) / (segment.slide + 1))
                else:
                    dx = 0
                jitter = rng.integers(-2, 3, size=2)
                frame = _place(background, photo, dx + int(jitter[0]), int(jitter[1]))
                frame = np.clip(frame * rng.uniform(0.97, 1.03), 0, 255).astype(np.uint8)
                if segment.blur:  # the hand moved during the exposure
                    kernel = np.full((1, segment.blur), 1.0 / segment.blur, np.float32)
                    frame = cv2.filter2D(frame, -1, kernel)
                label = segment.label
            noise = rng.normal(0, 1.5, frame.shape)
            yield np.clip(frame + noise, 0, 255).astype(np.uint8), label


def write_video(path: Path, segments: list[Segment], *, size: tuple[int, int] = SIZE, fps: float = FPS,
                seed: int = 0) -> list[str | None]:
    """Encode the segments as an MJPG .avi; returns the label of every frame (None: nothing known in view)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    labels = []
    for frame, label in render(segments, size=size, seed=seed):
        writer.write(frame)
        labels.append(label)
    writer.release()
    return labels


def build_demo_catalog(folder: Path, *, products: list[str] | None = None) -> Path:
    """A catalog of the bundled demo products (all three photos each) with the shipped default model."""
    from snapmatch.sdk.product_search import ProductSearch

    photos, names = demo_photos(), demo_names()
    with ProductSearch.create(folder, threads=1) as search:
        for product_id in products or list(names):
            search.add_product(product_id, photos[product_id], name=names[product_id])
    return folder


def counter_sequence(frames: int = 14) -> tuple[list[Segment], list[str]]:
    """The standard scene: empty counter, banana, empty, an unknown product, pepper, then milk straight after.

    Returns the segments and the known products in the order they appear.
    """
    photos = demo_photos()
    segments = [
        empty(8),
        held(photos["banana"][1], "banana", frames, slide=3),
        empty(6),
        held(photos["aubergine"][0], None, frames, slide=3),
        empty(6),
        held(photos["red-bell-pepper"][1], "red-bell-pepper", frames, slide=3),
        held(photos["arla-standard-milk"][1], "arla-standard-milk", frames, slide=3),
        empty(8),
    ]
    return segments, ["banana", "red-bell-pepper", "arla-standard-milk"]


def corrupt_frames(path: Path, frames: list[int], *, out: Path | None = None) -> Path:
    """Overwrite the middle of the JPEG data of some MJPG frames with zeros (a damaged file)."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i] == 0xFF and data[i + 1] == 0xD8 and data[i + 2] == 0xFF]
    for frame in frames:
        start = starts[frame]
        end = starts[frame + 1] if frame + 1 < len(starts) else len(data)
        middle = (start + end) // 2
        data[middle:middle + (end - start) // 4] = bytes((end - start) // 4)
    target = out or path
    target.write_bytes(bytes(data))
    return target
