"""Does the int8 model still retrieve what the fp32 model retrieves? Measured through the runtime.

Both models are loaded with `snapmatch.sdk.model.embedder.Embedder` (the code path a
kiosk runs); each photo is decoded and resized once and fed to both. Retrieval
is exact cosine nearest neighbour (brute force, the reference any index is
checked against).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from snapmatch.evaluation.metrics import deepest_r, map_at_r, ranking, recall_at
from snapmatch.sdk.errors import InvalidArgumentError
from snapmatch.sdk.image.preprocess import preprocess
from snapmatch.sdk.model.embedder import Embedder

LabelledImage = tuple[str | os.PathLike, Hashable]
WARMUP_RUNS = 10


def parity_report(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    *,
    gallery: Sequence[LabelledImage],
    queries: Sequence[LabelledImage],
    threads: int = 1,
    latency_runs: int = 50,
) -> dict:
    """Retrieval quality, agreement, latency and size of an fp32 model and its int8 version.

    Recall@k and MAP@R are of `queries` searched against `gallery` by label;
    latency is the median inference time of one preprocessed image at `threads`
    threads, both models timed alternately in the same run.
    """
    if not gallery or not queries:
        raise InvalidArgumentError("parity_report needs a non-empty gallery and query set")
    models = {"fp32": Embedder(fp32_path, threads=threads), "int8": Embedder(int8_path, threads=threads)}
    if models["fp32"].spec.input != models["int8"].spec.input:
        raise InvalidArgumentError("the two models declare different input specs; they are not an fp32/int8 pair")
    spec = models["fp32"].spec.input
    gallery_inputs = np.stack([preprocess(path, spec) for path, _ in gallery])
    query_inputs = np.stack([preprocess(path, spec) for path, _ in queries])
    _, labels = np.unique(np.array([str(label) for _, label in [*gallery, *queries]]), return_inverse=True)
    gallery_labels, query_labels = labels[: len(gallery)], labels[len(gallery):]

    embeddings, neighbours, report = {}, {}, {}
    for name, embedder in models.items():
        g = _embed(embedder, gallery_inputs)
        q = _embed(embedder, query_inputs)
        embeddings[name] = np.concatenate([g, q])
        order = ranking(q, g, depth=max(5, deepest_r(gallery_labels)))
        neighbours[name] = order[:, 0]
        path = Path(embedder.path)
        report[name] = {
            "path": str(path),
            "model_id": embedder.model_id,
            "size_bytes": path.stat().st_size,
            "recall_at_1": recall_at(order, gallery_labels, query_labels, 1),
            "recall_at_5": recall_at(order, gallery_labels, query_labels, 5),
            "map_at_r": map_at_r(order, gallery_labels, query_labels),
        }
    cosines = np.sum(embeddings["fp32"] * embeddings["int8"], axis=1)
    latency = _latency(models, query_inputs, runs=latency_runs)
    for name in models:
        report[name]["latency_ms_median"] = float(np.median(latency[name]))
        report[name]["latency_ms_p95"] = float(np.percentile(latency[name], 95))
    report.update(
        top1_agreement=float(np.mean(neighbours["fp32"] == neighbours["int8"])),
        cosine_mean=float(np.mean(cosines)),
        cosine_min=float(np.min(cosines)),
        gallery_size=len(gallery),
        query_count=len(queries),
        threads=threads,
        latency_runs=latency_runs,
    )
    return report


def _embed(embedder: Embedder, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([embedder.embed_batch(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])


def _latency(models: dict[str, Embedder], inputs: np.ndarray, *, runs: int) -> dict[str, list[float]]:
    """Milliseconds per single-image inference; the models alternate so load drifts hit both alike."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(WARMUP_RUNS + runs):
        image = inputs[i % len(inputs)][None]
        for name, embedder in models.items():
            start = time.perf_counter()
            embedder.embed_batch(image)
            elapsed = (time.perf_counter() - start) * 1000.0
            if i >= WARMUP_RUNS:
                times[name].append(elapsed)
    return times


def format_report(report: dict) -> str:
    """The parity report as a markdown table (fp32, int8 and their ratio or difference)."""
    fp32, int8 = report["fp32"], report["int8"]
    rows = [
        ("Recall@1", "recall_at_1", "{:.3f}", "diff"),
        ("Recall@5", "recall_at_5", "{:.3f}", "diff"),
        ("MAP@R", "map_at_r", "{:.3f}", "diff"),
        (f"latency median, {report['threads']} thread(s) (ms)", "latency_ms_median", "{:.2f}", "ratio"),
        ("latency p95 (ms)", "latency_ms_p95", "{:.2f}", "ratio"),
        ("file size (MB)", "size_bytes", "{:.2f}", "ratio"),
    ]
    lines = ["| metric | fp32 | int8 | int8 vs fp32 |", "| --- | --- | --- | --- |"]
    for title, key, fmt, compare in rows:
        a, b = fp32[key], int8[key]
        if key == "size_bytes":
            a, b = a / 1e6, b / 1e6
        change = f"{b - a:+.3f}" if compare == "diff" else (f"{b / a:.2f}x" if a else "-")
        lines.append(f"| {title} | {fmt.format(a)} | {fmt.format(b)} | {change} |")
    lines.append(f"| top-1 neighbour agreement | | | {report['top1_agreement']:.3f} |")
    lines.append(f"| cosine fp32·int8, mean (min) | | | {report['cosine_mean']:.4f} ({report['cosine_min']:.4f}) |")
    lines.append("")
    lines.append(
        f"{report['query_count']} queries against a gallery of {report['gallery_size']}; "
        f"latency: inference of one preprocessed image, median of {report['latency_runs']} runs after warm-up. "
        f"Models: `{fp32['model_id']}` (fp32), `{int8['model_id']}` (int8)."
    )
    gate = report.get("int8_gate")
    if gate is not None:
        verdict = "passed" if gate["passed"] else "failed: " + "; ".join(gate["reasons"])
        lines.append(f"\nint8 gate (Recall@1 within {MAX_RECALL_DROP:g}, MAP@R within {MAX_MAP_DROP:g}, at least "
                     f"{MIN_SPEEDUP:g}x faster): {verdict}" + (" (written anyway: --force-int8)" if gate["forced"] else ""))
    return "\n".join(lines)


# The int8 gate: "int8 where int8 is faster and as accurate". Accuracy is measured on the run's own
# query photos (exact search, so the index plays no part); speed in the same process, interleaved.
MAX_RECALL_DROP = 0.01  # Recall@1, absolute
MAX_MAP_DROP = 0.02  # MAP@R, absolute
MIN_SPEEDUP = 1.2  # fp32 latency / int8 latency at the report's thread count


def int8_verdict(report: dict) -> list[str]:
    """Why the int8 model fails the gate (empty: it passes)."""
    fp32, int8 = report["fp32"], report["int8"]
    reasons = []
    drop = fp32["recall_at_1"] - int8["recall_at_1"]
    if drop > MAX_RECALL_DROP + 1e-9:
        reasons.append(f"Recall@1 {int8['recall_at_1']:.3f} is {drop:.3f} below fp32's {fp32['recall_at_1']:.3f} "
                       f"(at most {MAX_RECALL_DROP:g})")
    map_drop = fp32["map_at_r"] - int8["map_at_r"]
    if map_drop > MAX_MAP_DROP + 1e-9:
        reasons.append(f"MAP@R {int8['map_at_r']:.3f} is {map_drop:.3f} below fp32's {fp32['map_at_r']:.3f} "
                       f"(at most {MAX_MAP_DROP:g})")
    speedup = fp32["latency_ms_median"] / int8["latency_ms_median"]
    if speedup < MIN_SPEEDUP:
        reasons.append(f"int8 is only {speedup:.2f}x as fast as fp32 ({int8['latency_ms_median']:.2f} vs "
                       f"{fp32['latency_ms_median']:.2f} ms; at least {MIN_SPEEDUP:g}x)")
    return reasons
