"""Accuracy per millisecond: training recipes judged on products they never saw, beside their models' latency.

A run of `snapmatch train --folds N` holds fold-*/evaluation.json and
fold-*/model.onnx (and model-int8.onnx after `snapmatch export --int8`). Its
accuracy is the mean over its folds, so every product counts once as unseen.
Its latency is one fold's models: folds share the architecture, and the
weights do not change the time. A model file with an evaluation.json beside it
(from `snapmatch evaluate MODEL PHOTOS --out evaluation.json`) counts as a run of one fold; a model
without one (the shipped model, say) is timed and shown without accuracy.

All models are timed in one process, round-robin after warm-up, on the same
photos, each through `Embedder.embed_batch` of one photo already resized to
its own input: ratios between them hold on a noisy machine.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from snapmatch.benchmarks.bench_photos import load_photos
from snapmatch.benchmarks.stats import summary
from snapmatch.sdk.errors import InvalidArgumentError
from snapmatch.sdk.image.preprocess import decode, resize
from snapmatch.sdk.model.embedder import Embedder

# (name, path in an evaluation.json); each is read with the catalog's adaptation off and on.
FIGURES = (
    ("seen R@1", "P1.seen.recall@1"),
    ("unseen R@1", "P1.unseen.recall@1"),
    ("unseen MAP@R", "P1.unseen.map@r"),
    ("P3", "P3.recall@1"),
    ("OPEN named", "OPEN.known_named_right"),
    ("OPEN rejected", "OPEN.unknown_rejected"),
)
PLOTTED = "unseen R@1"  # the issue's measure: products added on the device, adaptation on
MODEL_FILES = ("model.onnx", "model-int8.onnx")  # what `snapmatch export [--int8]` writes


@dataclass
class Recipe:
    """One run (or model): where its figures come from, its mean figures, the models that time it."""

    label: str
    source: str
    folds: int
    figures: dict[str, dict[str, float | None]]  # figure -> {"off": x, "on": y}
    models: list[Path] = field(default_factory=list)  # ONNX files (their quantization names them when timed)


def load_recipe(path: str | os.PathLike, label: str | None = None) -> Recipe:
    """A run folder (folds), a folder with model.onnx + evaluation.json, or a model file."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".onnx":
            raise InvalidArgumentError(f"{path}: give a run folder or an .onnx model")
        evaluations = [path.parent / "evaluation.json"] if (path.parent / "evaluation.json").is_file() else []
        models = [path]
    elif path.is_dir():
        folds = sorted(p for p in path.glob("fold-*") if p.is_dir()) or [path]
        evaluations = [fold / "evaluation.json" for fold in folds if (fold / "evaluation.json").is_file()]
        with_model = [fold for fold in folds if (fold / "model.onnx").is_file()]
        if not with_model:
            raise InvalidArgumentError(f"{path}: no model.onnx (in it or in its fold-* folders); "
                                       "export the run first (snapmatch export)")
        models = [with_model[0] / name for name in MODEL_FILES if (with_model[0] / name).is_file()]
    else:
        raise InvalidArgumentError(f"{path}: no such run folder or model")
    figures = _mean_figures([_read(e) for e in evaluations])
    return Recipe(label or _default_label(path), str(path), len(evaluations), figures, models)


def _default_label(path: Path) -> str:
    return path.parent.name if path.is_file() and path.name in MODEL_FILES else path.stem


def _read(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"cannot read {path}: {exc}") from None
    return report.get("evaluation", report) if isinstance(report, dict) else {}


def _mean_figures(evaluations: list[dict]) -> dict[str, dict[str, float | None]]:
    figures: dict[str, dict[str, float | None]] = {}
    for name, where in FIGURES:
        figures[name] = {}
        for mode, prefix in (("off", ""), ("on", "adapted.")):
            values = [_dig(e, prefix + where) for e in evaluations]
            found = [v for v in values if v is not None]
            # A mean over some folds only would mix products: all folds or nothing.
            figures[name][mode] = float(np.mean(found)) if found and len(found) == len(values) else None
    return figures


def _dig(report: dict, where: str) -> float | None:
    value: object = report
    for part in where.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) else None


def time_models(models: dict[str, Path], *, threads: int = 1, repeats: int = 100, warmup: int = 10,
                images: str | os.PathLike | None = None) -> dict[str, dict]:
    """Median (and spread) ms of one photo's inference per model, timed round-robin, with its quantization."""
    if repeats < 1 or warmup < 0:
        raise InvalidArgumentError("repeats must be >= 1 and warmup >= 0")
    photos = load_photos(images, max_images=20)
    frames = [decode(photos.data[i]) for i in photos.frames]
    embedders = {name: Embedder(path, threads=threads) for name, path in models.items()}
    inputs = {name: [resize(frame, e.spec.input)[None] for frame in frames] for name, e in embedders.items()}
    times: dict[str, list[float]] = {name: [] for name in embedders}
    for round_ in range(warmup + repeats):
        for name, embedder in embedders.items():
            x = inputs[name][round_ % len(frames)]
            start = time.perf_counter()
            embedder.embed_batch(x)
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: {**summary(values), "quantization": embedders[name].spec.quantization}
            for name, values in times.items()}


def run(paths: Sequence[str | os.PathLike], labels: Sequence[str] = (), *, threads: int = 1, repeats: int = 100,
        images: str | os.PathLike | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Each recipe's figures and its models' latency; latency ratios are to the first model timed."""
    if labels and len(labels) != len(paths):
        raise InvalidArgumentError(f"{len(labels)} labels for {len(paths)} runs")
    recipes = [load_recipe(path, labels[i] if labels else None) for i, path in enumerate(paths)]
    timed = {f"{i}:{j}": path for i, recipe in enumerate(recipes) for j, path in enumerate(recipe.models)}
    if log:
        log(f"timing {len(timed)} models at {threads or 'all'} thread(s), {repeats} rounds")
    latency = time_models(timed, threads=threads, repeats=repeats, images=images)
    first = next(iter(latency.values()))["median"] if latency else None
    rows = []
    for i, recipe in enumerate(recipes):
        for j in range(len(recipe.models)):
            ms = latency[f"{i}:{j}"]
            variant = ms.pop("quantization")
            rows.append({"label": recipe.label, "variant": variant, "source": recipe.source, "folds": recipe.folds,
                         "latency_ms": ms, "latency_vs_first": ms["median"] / first if first else None,
                         "figures": recipe.figures})
    return {"threads": threads, "repeats": repeats, "rows": rows}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(result: dict) -> str:
    """A markdown table: one row per (recipe, model), figures as adaptation off / on."""
    names = [name for name, _ in FIGURES]
    head = ["recipe", "model", "folds", "ms (1st = 1.00)", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in result["rows"]:
        cells = [row["label"], row["variant"], str(row["folds"]),
                 f"{row['latency_ms']['median']:.2f} ({row['latency_vs_first']:.2f})"]
        cells += [f"{_cell(row['figures'][n]['off'])} / {_cell(row['figures'][n]['on'])}" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: str | os.PathLike, figure: str = PLOTTED) -> Path:
    """Accuracy (figure, adaptation on; off where on is missing) against latency, one point per model."""
    from snapmatch.benchmarks.plots import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    placed: list[tuple[float, float]] = []  # points labelled so far: a label near another goes below it
    for row in result["rows"]:
        value = row["figures"][figure]["on"]
        if value is None:
            value = row["figures"][figure]["off"]
        if value is None:
            ax.axvline(row["latency_ms"]["median"], color="0.7", linestyle=":", linewidth=1)
            ax.annotate(f"{row['label']} ({row['variant']})", (row["latency_ms"]["median"], 0.02),
                        xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color="0.4")
            continue
        marker = "s" if row["variant"] == "int8" else "o"
        ms = row["latency_ms"]["median"]
        ax.plot(ms, value, marker, markersize=7)
        near = sum(abs(ms - x) < 0.5 and abs(value - y) < 0.004 for x, y in placed)
        placed.append((ms, value))
        ax.annotate(f"{row['label']} ({row['variant']})", (ms, value), textcoords="offset points",
                    xytext=(5, 4 - 10 * near), fontsize=7)
    ax.set_xlabel(f"inference of one photo, ms (median, {result['threads'] or 'all'} thread(s))")
    ax.set_ylabel(f"{figure} (catalog adaptation on)")
    ax.set_title("Accuracy per millisecond (products the model never trained on)")
    ax.grid(alpha=0.3)
    return save(fig, path)
