"""A training run as a user runs it: split, train, export, and measure on products it never saw.

One run (`--folds 1`) holds out a seeded share of the products; K folds
train K models, each product unseen in exactly one, for a tighter estimate
on a small dataset. Each run folder ends with `model.onnx` (fp32, default
threshold calibrated) and `evaluation.json` (seen / unseen, through the
runtime); a K-fold run adds `folds.json`, the mean and spread over folds.
A fold whose `evaluation.json` exists is done and is skipped on --resume.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from snapmatch.sdk.errors import CatalogExistsError
from snapmatch.training.data import Dataset
from snapmatch.training.splits import Split, holdout_split, product_folds
from snapmatch.training.train import TrainConfig, train

SUMMARY_KEYS = ("recall@1", "recall@5", "map@r")


def plan_splits(dataset: Dataset, *, holdout: float, folds: int, seed: int, unseen: list[str] | None) -> list[Split]:
    if folds > 1:
        return product_folds(dataset, folds, seed=seed)
    return [holdout_split(dataset, holdout=holdout, seed=seed, unseen=unseen)]


def run(config: TrainConfig, dataset: Dataset, splits: list[Split], *, resume: bool = False, evaluate: bool = True,
        progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Train (and measure) one model per split; returns the summary that is also written to the run folder."""
    out = Path(config.out)
    if not resume and out.exists() and any(out.iterdir()):
        raise CatalogExistsError(f"run folder {out} already exists and is not empty: --resume continues it, "
                                 "or choose a new --out")
    results = []
    for split in splits:
        folder = out / f"fold-{split.fold}" if split.fold else out
        fold_config = dataclasses.replace(config, out=str(folder))
        if split.fold:
            echo(f"fold {split.fold}/{split.folds}: {len(split.unseen)} products unseen")
        done = folder / "evaluation.json"
        if resume and done.exists():
            results.append(json.loads(done.read_text()))
            continue
        trained = train(fold_config, dataset, split, resume=resume and (folder / "last.pt").exists(),
                        progress=progress, echo=echo)
        result = {"run": str(folder), "checkpoint": str(trained.checkpoint), "products_trained": trained.products,
                  "images_trained": trained.images, "batch_size": trained.batch_size, "notes": trained.notes,
                  "split": split.to_dict(), "skipped": [{"what": w, "reason": r} for w, r in trained.skipped]}
        if evaluate:
            result.update(_export_and_measure(trained.checkpoint, folder, dataset, split, echo, progress))
        done.write_text(json.dumps(result, indent=2, default=float))
        results.append(result)
    summary = {"runs": results}
    if len(results) > 1 and all("evaluation" in r for r in results):
        summary["folds"] = fold_summary([r["evaluation"] for r in results])
        (out / "folds.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _export_and_measure(checkpoint: Path, folder: Path, dataset: Dataset, split: Split,
                        echo: Callable[[str], None], progress: bool) -> dict:
    from snapmatch.evaluation import evaluate
    from snapmatch.export.pipeline import export_checkpoint

    exported = export_checkpoint(checkpoint, folder, data=dataset.source,
                                 on_step=lambda step: echo(step) if progress else None)
    for warning in exported.warnings:
        echo(f"warning: {warning}")
    if progress:
        echo("measuring through the runtime (seen / unseen products)")
    report = evaluate(exported.fp32, dataset, split=split, adapt=True)
    return {"model": str(exported.fp32), "default_threshold": exported.default_threshold.get("model.onnx"),
            "evaluation": report}


def fold_summary(reports: list[dict]) -> dict:
    """Mean and standard error over folds of each protocol's seen / unseen figures, adaptation off and on."""
    summary: dict = {}
    for adapt in ("off", "on"):
        parts = [r if adapt == "off" else r.get("adapted") for r in reports]
        if any(p is None for p in parts):
            continue
        for protocol in ("P1", "FEW", "P3"):
            for group in ("all", "seen", "unseen"):
                rows = [p[protocol] if group == "all" else p[protocol].get(group) for p in parts if protocol in p]
                if len(rows) != len(parts) or any(r is None for r in rows):
                    continue
                entry = {"queries": int(sum(r["queries"] for r in rows))}
                for key in SUMMARY_KEYS:
                    values = np.array([r[key] for r in rows], dtype=float)
                    entry[key] = float(np.nanmean(values))
                    entry[key + "_se"] = float(np.nanstd(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 \
                        else float("nan")
                summary.setdefault(adapt, {}).setdefault(protocol, {})[group] = entry
    return summary


def format_summary(summary: dict) -> str:
    """The run's seen / unseen table (one fold), or the mean ± standard error over folds."""
    from snapmatch.evaluation import format_report

    runs = [r for r in summary["runs"] if "evaluation" in r]
    if not runs:
        return "trained: " + ", ".join(r["checkpoint"] for r in summary["runs"])
    if "folds" not in summary:
        report = runs[0]["evaluation"]
        return format_report([report]) + f"\n\nmodel: {runs[0]['model']}"
    lines = [f"mean over {len(runs)} folds (± standard error across folds)", "",
             "| adapt | protocol | products | lookups (all folds) | Recall@1 | Recall@5 | MAP@R |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for adapt, protocols in summary["folds"].items():
        for protocol, groups in protocols.items():
            for group, e in groups.items():
                lines.append(f"| {adapt} | {protocol} | {group} | {e['queries']} | {e['recall@1']:.3f} ± "
                             f"{e['recall@1_se']:.3f} | {e['recall@5']:.3f} | {e['map@r']:.3f} ± {e['map@r_se']:.3f} |")
    lines += ["", "models: " + ", ".join(r["model"] for r in runs)]
    return "\n".join(lines)
