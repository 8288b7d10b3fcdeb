"""How fast `watch` looks up, and how long a product takes to be named after it enters the frame.

A catalog is built from the bundled demo photos with the shipped model, and a
camera-like video is written (640x480, 30 fps, MJPG): for every demo product,
an empty counter, then the product put down in view at a known frame (a hard
cut), held with hand jitter and sensor noise. Per thread setting:

- throughput: the file read losslessly with the motion gate off, every frame
  embedded and searched: the sustained lookup rate (lookups per second);
- live: the file played like a camera at `pace` x real time (stale frames
  dropped, motion gate on, default voting): achieved fps, dropped frames, and
  for each product the delay from the frame it entered to its `appeared`
  event, in frames and in milliseconds of wall time (from when that frame was
  released by the paced reader to when the event reached the caller).

    snapmatch benchmark watch --threads 1,all --json
    python -m snapmatch.benchmarks.watch
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from snapmatch.sdk.image.preprocess import cv2
from snapmatch.sdk.product_search import ProductSearch

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
SIZE = (640, 480)
FPS = 30.0


def write_scene(path: Path, *, empty_s: float = 1.0, product_s: float = 2.0, seed: int = 0) -> list[dict]:
    """Write the benchmark video; returns, per product, its id and the frames where it enters and leaves."""
    manifest = json.loads((DEMO_DIR / "photos.json").read_text())
    rng = np.random.default_rng(seed)
    width, height = SIZE
    grain = cv2.resize(rng.normal(0, 1, (height // 16, width // 4)).astype(np.float32), SIZE,
                       interpolation=cv2.INTER_CUBIC)
    background = np.clip(np.array([92, 128, 160], np.float32) + 10 * grain[:, :, None], 0, 255)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG video here")
    schedule, index = [], 0

    def emit(frame: np.ndarray) -> None:
        nonlocal index
        writer.write(np.clip(frame + rng.normal(0, 1.5, frame.shape), 0, 255).astype(np.uint8))
        index += 1

    for product in manifest["products"]:
        for _ in range(round(empty_s * FPS)):
            emit(background)
        photo = cv2.imread(str(DEMO_DIR / product["photos"][1]))
        side = int(height * 0.8)
        photo = cv2.resize(photo, (side * photo.shape[1] // photo.shape[0], side), interpolation=cv2.INTER_LINEAR)
        entered = index
        for _ in range(round(product_s * FPS)):
            frame = background.copy()
            dx, dy = rng.integers(-3, 4, size=2)
            top, left = (height - photo.shape[0]) // 2 + dy, (width - photo.shape[1]) // 2 + dx
            frame[top:top + photo.shape[0], left:left + photo.shape[1]] = photo
            emit(frame * rng.uniform(0.97, 1.03))
        schedule.append({"product_id": product["id"], "enters": entered, "leaves": index})
    for _ in range(round(empty_s * FPS)):
        emit(background)
    writer.release()
    return schedule


def build_catalog(folder: Path) -> Path:
    manifest = json.loads((DEMO_DIR / "photos.json").read_text())
    with ProductSearch.create(folder, threads=1) as search:
        for product in manifest["products"]:
            search.add_product(product["id"], [DEMO_DIR / p for p in product["photos"]], name=product["name"])
    return folder


def measure(catalog: Path, video: Path, schedule: list[dict], *, threads: int, pace: float) -> dict:
    """Throughput and live figures at one thread setting (0: all cores)."""
    previous_cv2 = cv2.getNumThreads()
    cv2.setNumThreads(threads if threads else -1)
    try:
        with ProductSearch.open(catalog, readonly=True, threads=threads) as search:
            search.search(np.zeros((480, 640, 3), np.uint8), k=1)  # warm-up: first run allocates
            full = search.watch(video, motion_threshold=None)
            list(full)
            throughput = full.stats.to_dict()
            live = search.watch(video, pace=pace)
            appeared = []
            for event in live:
                if event.kind == "appeared":
                    appeared.append((event, time.monotonic()))
            stats = live.stats.to_dict()
            started, fps = live.started_at, live.fps or FPS
    finally:
        cv2.setNumThreads(previous_cv2)
    delays_frames, delays_ms, missed, wrong = [], [], [], []
    for item in schedule:
        hits = [(e, t) for e, t in appeared if item["enters"] <= e.frame_index < item["leaves"]]
        if not hits:
            missed.append(item["product_id"])
            continue
        event, received = hits[0]
        if event.product_id != item["product_id"]:
            wrong.append(item["product_id"])
            continue
        delays_frames.append(event.frame_index - item["enters"])
        released = started + item["enters"] / (fps * pace)
        delays_ms.append((received - released) * 1000.0)
    return {
        "threads": threads or os.cpu_count(),
        "threads_setting": "all" if threads == 0 else str(threads),
        "lookup_fps": throughput["lookup_fps"],
        "lookup_ms": throughput["lookup_ms"],
        "live": {
            "pace": pace,
            "fps": stats["fps"],
            "lookup_fps": stats["lookup_fps"],
            "frames_read": stats["frames_read"],
            "frames_dropped": stats["frames_dropped"],
            "looked_up": stats["looked_up"],
            "skipped_motion": stats["skipped_motion"],
            "appear_delay_frames": _summary(delays_frames),
            "appear_delay_ms": _summary(delays_ms),
            "missed": missed,
            "wrong": wrong,
        },
    }


def _summary(values: list[float]) -> dict:
    if not values:
        return {"median": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1), "n": len(values)}


def run(*, threads: list[int] = (1, 0), pace: float = 1.0, empty_s: float = 1.0, product_s: float = 2.0) -> dict:
    """The whole benchmark; returns a JSON-able dict."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        catalog = build_catalog(folder / "catalog")
        video = folder / "counter.avi"
        schedule = write_scene(video, empty_s=empty_s, product_s=product_s)
        runs = [measure(catalog, video, schedule, threads=t, pace=pace) for t in threads]
    frames = schedule[-1]["leaves"] + round(empty_s * FPS)
    return {
        "video": {"size": f"{SIZE[0]}x{SIZE[1]}", "fps": FPS, "frames": frames, "products": len(schedule),
                  "codec": "MJPG"},
        "cpu_count": os.cpu_count(),
        "runs": runs,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
