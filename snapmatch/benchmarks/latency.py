"""Per-stage latency of a lookup, beside fp32 ONNX, int8 ONNX and PyTorch eager measured in the same run.

Stages, each timed on its own through the runtime's functions:

- decode: `preprocess.decode` of the JPEG bytes (cv2.imdecode plus header checks);
- resize: `preprocess.resize` of the decoded frame to the model's input;
- inference: `Embedder.embed_batch` of one preprocessed frame (ORT session run);
- search: `Catalog.search(vector, k=1)` in a catalog of the photos plus
  synthetic vectors (compacted into a usearch base, as on a device);
- total: `ProductSearch.identify(jpeg_bytes)` end to end.

The stages and the batch-1 baselines are timed round-robin (one of each per
round) after warm-up rounds, so machine noise hits them alike and their
ratios hold even where single times do not. Every thread setting gets fresh
ORT sessions (their own intra-op thread pool) and OpenCV is held to the same
thread count. A throughput sweep over batch sizes gives each baseline's best
images/s. The int8 model's Recall@1 beside fp32's is leave-one-out over the
labelled photos, and onnxruntime's profiler shows the slow operators.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from snapmatch.benchmarks import baselines, cpu_info, ort_profile
from snapmatch.benchmarks.bench_photos import Photos, load_photos
from snapmatch.benchmarks.stats import summary
from snapmatch.benchmarks.synthetic_catalog import SyntheticSpec, clustered_chunks
from snapmatch.sdk.errors import InvalidArgumentError
from snapmatch.sdk.image.preprocess import cv2, decode, min_decoded_side, preprocess, resize
from snapmatch.sdk.model.embedder import Embedder
from snapmatch.sdk.product_search import ProductSearch, default_model_path

STAGES = ("decode", "resize", "inference", "search", "total")
# (name, value key, target, how it is met); measured at 1 thread.
TARGETS = (
    ("ONNX (shipped model) vs PyTorch eager, speed-up", "model_speedup_vs_torch", 4.0, ">="),
    ("inference + search of identify vs PyTorch eager inference", "inference_search_vs_torch", 0.10, "<="),
    ("whole frame path (JPEG) vs its inference", "frame_path_vs_inference", 1.2, "<="),
    ("whole frame path (640x480 camera frame) vs its inference", "camera_path_vs_inference", 1.2, "<="),
    ("int8 vs fp32 inference, speed-up", "int8_speedup_vs_fp32", 1.5, ">="),
)
CAMERA_FRAME = (640, 480)  # a webcam's BGR frame: no decode, only resize


@dataclass(frozen=True)
class LatencyConfig:
    """What to measure; the defaults take about a minute on two cores."""

    model: Path | None = None  # None: the shipped default model
    images: Path | None = None  # None: the bundled demo photos
    threads: tuple[int, ...] = (1, 0)  # thread settings; 0 means all usable cores
    repeats: int = 100  # timed rounds per thread setting (after warm-up)
    warmup: int = 10  # untimed rounds first: allocations, ORT's first-run work, caches
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # throughput sweep
    catalog_size: int = 2000  # vectors in the searched catalog: the photos, then synthetic ones
    int8: Path | None = None  # the int8 model; None: quantized here when the onnx package is installed
    checkpoint: Path | None = None  # PyTorch weights (only numbers change, not time)
    torch: bool = True  # measure PyTorch eager when torch is installed
    profile: bool = True  # per-operator profile of the ONNX models at 1 thread
    profile_runs: int = 20
    max_images: int = 200  # photos read from `images` (sorted; the first ones)

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.warmup < 0:
            raise InvalidArgumentError("repeats must be >= 1 and warmup >= 0")
        if not self.threads or any(t < 0 for t in self.threads):
            raise InvalidArgumentError("threads must be a non-empty list of counts >= 0 (0: all cores)")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise InvalidArgumentError("batch sizes must be >= 1")


def run(config: LatencyConfig = LatencyConfig(), log: Callable[[str], None] | None = None) -> dict:
    """Measure everything `config` asks for; a JSON-able dict (see module docstring)."""
    log = log or (lambda message: None)
    model = Path(config.model) if config.model is not None else default_model_path()
    spec = Embedder(model, threads=1).spec  # also proves the model loads and keeps the contract
    photos = load_photos(config.images, max_images=config.max_images)
    inputs = [preprocess(data, spec.input) for data in photos.data]
    frames = [inputs[i][None] for i in photos.frames]
    result: dict = {
        "cpu": cpu_info.describe(),
        "model": {"path": str(model), "model_id": spec.model_id, "quantization": spec.quantization,
                  "input": f"{spec.input.height}x{spec.input.width} {spec.input.resize}", "dim": spec.embedding_dim},
        "images": photos.describe(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "runs": [],
        "unavailable": {},
        "load_average": {"start": _load_average()},
    }
    with tempfile.TemporaryDirectory(prefix="snapmatch-latency-") as tmp:
        folder = Path(tmp) / "catalog"
        log(f"building a catalog of {config.catalog_size} vectors")
        result["catalog"] = build_catalog(folder, model, photos, size=config.catalog_size)
        variants = _variants(model, spec.quantization, config, photos, Path(tmp), result, log)
        for threads in config.threads:
            count = threads or cpu_info.usable_cores()
            label = "1 thread" if threads == 1 else (f"all cores ({count})" if threads == 0 else f"{count} threads")
            log(f"measuring at {label}")
            with _opencv_threads(count):
                measured = {"threads": count, "label": label, "opencv_threads": count}
                measured["stages"] = time_stages(folder, photos, spec.input, threads=count, config=config)
                measured["baselines"] = time_baselines(variants, spec.input, frames, inputs, threads=count,
                                                       config=config, unavailable=result["unavailable"])
            measured["ratios"] = ratios(measured, spec.quantization)
            result["runs"].append(measured)
        if "onnx_int8" in variants and "onnx_fp32" in variants:
            log("comparing int8 with fp32 retrieval")
            result["int8"]["retrieval"] = int8_retrieval(variants["onnx_fp32"], variants["onnx_int8"], inputs, photos)
        if config.profile:
            log("profiling operators")
            result["profile"] = {
                name: ort_profile.profile(path, frames[0], threads=1, runs=config.profile_runs)
                for name, path in variants.items() if name.startswith("onnx_")
            }
    result["targets"] = targets(result)
    result["load_average"]["end"] = _load_average()
    return result


def build_catalog(folder: Path, model: Path, photos: Photos, *, size: int) -> dict:
    """The searched catalog: every gallery photo under its product, then synthetic vectors up to `size`, compacted."""
    with ProductSearch.create(folder, model=model, threads=1) as search:
        by_product: dict[str, list[bytes]] = {}
        for index in photos.gallery:
            product = photos.labels[index] or f"photo-{index}"
            by_product.setdefault(product, []).append(photos.data[index])
        for product, images in by_product.items():
            search.add_product(product, images)
        synthetic = max(0, size - len(photos.gallery))
        if synthetic:
            per = 4
            for ids, owner, vectors in clustered_chunks(SyntheticSpec(size=synthetic, dim=search.catalog.dim,
                                                                      images_per_product=per)):
                for local, pid in enumerate(ids):
                    search.catalog.add(f"synthetic-{pid}", vectors[local * per:(local + 1) * per])
        search.compact()  # searches then go through the memory-mapped usearch base, as on a device
        stats = search.catalog.stats()
    return {"photos": len(photos.gallery), "synthetic": synthetic, "products": len(by_product),
            "base_vectors": stats.get("base_vectors")}


def _variants(model: Path, quantization: str, config: LatencyConfig, photos: Photos, tmp: Path,
              result: dict, log) -> dict[str, Path]:
    """The ONNX files compared: fp32 and int8 (given, the model itself, or quantized here)."""
    variants = {f"onnx_{quantization}": model}
    int8 = {"source": None}
    if config.int8 is not None:
        Embedder(config.int8, threads=1)  # the same contract check as the model's
        variants["onnx_int8"] = Path(config.int8)
        int8 = {"source": "given", "path": str(config.int8)}
    elif quantization == "int8":
        int8 = {"source": "the model itself", "path": str(model)}
    else:
        try:
            log("quantizing the model to int8 (snapmatch.export.quantize)")
            images = [photos.data[i] for i in photos.gallery] or photos.data
            variants["onnx_int8"] = baselines.quantize_here(model, tmp / "model-int8.onnx", images)
            int8 = {"source": f"quantized here on {len(images)} photos", "path": None}
        except baselines.BaselineUnavailable as exc:
            result["unavailable"]["onnx_int8"] = str(exc)
    if "onnx_int8" in variants:
        int8["model_id"] = Embedder(variants["onnx_int8"], threads=1).model_id
    result["int8"] = int8
    return variants


def time_stages(folder: Path, photos: Photos, spec, *, threads: int, config: LatencyConfig) -> dict:
    """Each stage of a lookup and the whole identify, round-robin over the frames; stats in ms."""
    times = {stage: [] for stage in STAGES}
    times["adaptation"], times["camera_resize"], times["camera_total"] = [], [], []
    camera_frames = [cv2.resize(decode(photos.data[i]), CAMERA_FRAME, interpolation=cv2.INTER_LINEAR)
                     for i in photos.frames]
    min_side = min_decoded_side(spec)
    with ProductSearch.open(folder, readonly=True, threads=threads) as search:
        embedder, catalog = search.embedder, search.catalog
        transform = catalog.adaptation  # part of `search`: the catalog's metric applied to the query
        for round_ in range(config.warmup + config.repeats):
            data = photos.data[photos.frames[round_ % len(photos.frames)]]
            t0 = time.perf_counter()
            bgr = decode(data, min_side=min_side)
            t1 = time.perf_counter()
            x = resize(bgr, spec)[None]
            t2 = time.perf_counter()
            vector = embedder.embed_batch(x)
            t3 = time.perf_counter()
            catalog.search(vector, 1)
            t4 = time.perf_counter()
            search.identify(data)
            t5 = time.perf_counter()
            if transform is not None:
                transform.apply(vector)
            t6 = time.perf_counter()
            frame = camera_frames[round_ % len(camera_frames)]
            resize(frame, spec)
            t7 = time.perf_counter()
            search.identify(frame)
            t8 = time.perf_counter()
            if round_ >= config.warmup:
                times["camera_resize"].append((t7 - t6) * 1000)
                times["camera_total"].append((t8 - t7) * 1000)
                for stage, start, end in zip(STAGES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
                    times[stage].append((end - start) * 1000)
                if transform is not None:
                    times["adaptation"].append((t6 - t5) * 1000)
    stats = {stage: summary(values) for stage, values in times.items() if values}
    # What identify spends besides the four stages (Python, copies, checks, SQLite): its own line.
    stats["other"] = {"median": stats["total"]["median"] - sum(stats[s]["median"] for s in STAGES[:-1])}
    return stats


def time_baselines(variants: dict[str, Path], spec, frames: list[np.ndarray], inputs: list[np.ndarray], *,
                   threads: int, config: LatencyConfig, unavailable: dict) -> dict:
    """Batch-1 inference of every baseline, then each one's throughput sweep (medians in ms, images/s)."""
    factories = {name: (lambda p=path, n=name: baselines.onnx_baseline(n, p, threads=threads))
                 for name, path in variants.items()}
    if config.torch:
        factories["torch_eager"] = lambda: baselines.torch_baseline(spec, threads=threads, checkpoint=config.checkpoint)
    if threads == 1:
        times, sweeps, sources = _interleaved(factories, frames, inputs, config, unavailable)
    else:
        times, sweeps, sources = _one_at_a_time(factories, frames, inputs, config, unavailable)
    return {name: {"source": sources[name], "batch1": summary(times[name]), "throughput": sweeps[name],
                   "best": max(sweeps[name], key=lambda row: row["images_per_s"])} for name in times}


def _interleaved(factories, frames, inputs, config, unavailable):
    """All baselines open at once, timed round-robin: noise hits them alike (single-threaded only)."""
    opened: dict[str, baselines.Baseline] = {}
    try:
        for name, factory in factories.items():
            try:
                opened[name] = factory()
            except baselines.BaselineUnavailable as exc:
                unavailable[name] = str(exc)
        times = {name: [] for name in opened}
        for round_ in range(config.warmup + config.repeats):
            frame = frames[round_ % len(frames)]
            for name, baseline in opened.items():
                start = time.perf_counter()
                baseline.run(frame)
                if round_ >= config.warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
        sweeps = {name: throughput(b.run, inputs, config.batch_sizes, images=config.repeats) for name, b in opened.items()}
        return times, sweeps, {name: b.source for name, b in opened.items()}
    finally:
        for baseline in opened.values():
            baseline.close()


def _one_at_a_time(factories, frames, inputs, config, unavailable):
    """Each baseline alone, its thread pool gone before the next starts.

    Open side by side, ORT's intra-op threads (which spin after a run) and
    torch's OpenMP threads fight over the cores: measured on 2 cores, that
    made PyTorch eager 100x slower, an artefact no app would see.
    """
    times, sweeps, sources = {}, {}, {}
    for name, factory in factories.items():
        try:
            baseline = factory()
        except baselines.BaselineUnavailable as exc:
            unavailable[name] = str(exc)
            continue
        try:
            measured = []
            for round_ in range(config.warmup + config.repeats):
                start = time.perf_counter()
                baseline.run(frames[round_ % len(frames)])
                if round_ >= config.warmup:
                    measured.append((time.perf_counter() - start) * 1000)
            times[name], sources[name] = measured, baseline.source
            sweeps[name] = throughput(baseline.run, inputs, config.batch_sizes, images=config.repeats)
        finally:
            baseline.close()
    return times, sweeps, sources


def throughput(run_batch, inputs: list[np.ndarray], batch_sizes, *, images: int) -> list[dict]:
    """Per batch size: median ms per batch and images/s, over about `images` images (at least 3 batches)."""
    rows = []
    for size in batch_sizes:
        batch = np.stack([inputs[i % len(inputs)] for i in range(size)])
        run_batch(batch)  # warm-up: ORT plans its buffers for a new shape
        runs = max(3, math.ceil(images / size))
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run_batch(batch)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        rows.append({"batch": size, "ms_median": median * 1000, "images_per_s": size / median})
    return rows


def int8_retrieval(fp32: Path, int8: Path, inputs: list[np.ndarray], photos: Photos) -> dict:
    """Leave-one-out Recall@1 of fp32 and int8 over the labelled photos, and how close their embeddings are."""
    embeddings = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        run_batch = baselines.onnx_baseline(name, path, threads=0).run
        embeddings[name] = np.concatenate([run_batch(np.stack(inputs[i:i + 16])) for i in range(0, len(inputs), 16)])
    cosine = np.sum(embeddings["fp32"] * embeddings["int8"], axis=1)
    labelled = [i for i, label in enumerate(photos.labels) if label is not None]
    labels = np.array([photos.labels[i] for i in labelled], dtype=object)
    recall, top1 = {}, {}
    for name, vectors in embeddings.items():
        if len(set(labels)) < 2:
            break
        similarity = vectors[labelled] @ vectors[labelled].T
        np.fill_diagonal(similarity, -np.inf)  # leave the query itself out
        top1[name] = np.argmax(similarity, axis=1)
        recall[name] = float(np.mean(labels[top1[name]] == labels))
    return {
        "protocol": "leave-one-out Recall@1 over the labelled photos",
        "queries": len(labelled),
        "recall_at_1": recall or None,
        "recall_at_1_difference": recall["int8"] - recall["fp32"] if recall else None,
        "top1_agreement": float(np.mean(top1["fp32"] == top1["int8"])) if top1 else None,
        "cosine_mean": float(np.mean(cosine)),
        "cosine_min": float(np.min(cosine)),
    }


def ratios(measured: dict, quantization: str) -> dict:
    """Ratios of medians measured in the same run (None where a baseline is missing)."""
    stages, base = measured["stages"], measured["baselines"]

    def median(name: str) -> float | None:
        return base[name]["batch1"]["median"] if name in base else None

    def best(name: str) -> float | None:
        return base[name]["best"]["images_per_s"] if name in base else None

    def divide(a, b):
        return a / b if a is not None and b else None

    torch_ms, fp32_ms, int8_ms = median("torch_eager"), median("onnx_fp32"), median("onnx_int8")
    model_ms = median(f"onnx_{quantization}")
    return {
        "model_speedup_vs_torch": divide(torch_ms, model_ms),
        "fp32_speedup_vs_torch": divide(torch_ms, fp32_ms),
        "int8_speedup_vs_torch": divide(torch_ms, int8_ms),
        "int8_vs_fp32_latency": divide(int8_ms, fp32_ms),
        "inference_search_vs_torch": divide(stages["inference"]["median"] + stages["search"]["median"], torch_ms),
        "identify_vs_torch": divide(stages["total"]["median"], torch_ms),
        # The whole path (decode or a camera's frame, resize, inference, search, decision) over inference alone.
        "frame_path_vs_inference": divide(stages["total"]["median"], stages["inference"]["median"]),
        "camera_path_vs_inference": divide(stages["camera_total"]["median"], stages["inference"]["median"])
        if "camera_total" in stages else None,
        "int8_speedup_vs_fp32": divide(fp32_ms, int8_ms),
        "fp32_vs_torch_throughput": divide(best("onnx_fp32"), best("torch_eager")),
        "int8_vs_fp32_throughput": divide(best("onnx_int8"), best("onnx_fp32")),
    }


def targets(result: dict) -> list[dict]:
    """The issue's targets at 1 thread: value, target, met, and by how much a miss misses."""
    single = next((r for r in result["runs"] if r["threads"] == 1), None)
    rows = []
    for name, key, target, how in TARGETS:
        value = single["ratios"].get(key) if single else None
        met = None if value is None else (value >= target if how == ">=" else value <= target)
        factor = None if value is None or met else (target / value if how == ">=" else value / target)
        rows.append({"target": name, "key": key, "value": value, "goal": f"{how} {target:g}", "met": met,
                     "missed_by_factor": factor})
    return rows


def _load_average() -> float | None:
    """The 1-minute load average: on a shared machine, what the multi-thread figures were measured against."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def _opencv_threads(count: int):
    """Hold OpenCV's thread pool to `count` threads for a block: decode and resize then match the setting."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
