"""`snapmatch benchmark accuracy`: DESIGN.md's protocols through the runtime, fp32 beside int8."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from snapmatch.commands.output import (
    DATA_ENV,
    data_or_env,
    emit_json,
    json_option,
    progress,
)


@click.command()
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="fp32 ONNX model (default: the shipped model).")
@click.option("--int8", "int8", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Its int8 model (default: quantized here from --model; needs the onnx package).")
@click.option("--no-int8", is_flag=True, help="Measure the fp32 model only.")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="The dataset: a folder of product sub-folders, a list file, or the Grocery Store Dataset "
                   f"(default: ${DATA_ENV}).")
@click.option("--protocols", default="P1,FEW,P3,OPEN", show_default=True,
              help="Comma-separated: P1 (in-store), P2 (new products; needs --p2-model), FEW (P1 with iconic + 3 "
                   "photos per product), P3 (catalog-only), OPEN (unknown products, per identify() rule).")
@click.option("--adapt/--no-adapt", default=True, show_default=True,
              help="Also measure every protocol with the catalog's adaptation on (its own metric).")
@click.option("--p2-model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A model trained with products held out (it records which), for P2.")
@click.option("--target-precision", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.95, show_default=True,
              help="OPEN: the precision the identify() threshold is calibrated for.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Inference threads (default: all cores).")
@json_option
def accuracy(model, int8, no_int8, data, protocols, adapt, p2_model, target_precision, threads, as_json) -> None:
    """Recall@1, Recall@5, MAP@R and open-set figures through the runtime (ONNX Runtime + usearch catalog).

    Runs DESIGN.md's protocols (snapmatch.evaluation) on a dataset for the
    fp32 model and its int8 model, side by side, and reports the difference.
    The int8 model is quantized here exactly as `snapmatch export --int8`
    quantizes. With --adapt (the default) the fp32 model is measured again
    with the catalog's own metric (fitted on catalog photos, never on queries).

    \b
    snapmatch benchmark accuracy --data GroceryStoreDataset/dataset
    snapmatch benchmark accuracy --data my-photos/ --p2-model runs/mine/model.onnx --protocols P1,P2,OPEN --json
    """
    from snapmatch.evaluation import PROTOCOLS, evaluate, format_report
    from snapmatch.sdk.product_search import default_model_path
    from snapmatch.training.data import load_dataset

    chosen = tuple(p.strip().upper() for p in protocols.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(PROTOCOLS)}", param_hint="--protocols")
    if "P2" in chosen and p2_model is None:
        raise click.BadParameter("P2 needs --p2-model (a model trained with products held out)",
                                 param_hint="--protocols")
    dataset = load_dataset(data_or_env(data))
    fp32 = Path(model) if model else default_model_path()
    with tempfile.TemporaryDirectory(prefix="snapmatch-accuracy-") as tmp:
        models = [("fp32", fp32)]
        if not no_int8:
            models.append(("int8", Path(int8) if int8 else _quantize(fp32, dataset, Path(tmp) / "int8.onnx")))
        reports = []
        for label, path in models:
            with progress(None, f"embedding ({label})") as bar:
                report = evaluate(path, dataset, protocols=chosen, p2_model=p2_model if label == "fp32" else None,
                                  target_precision=target_precision, threads=threads, on_batch=bar.update,
                                  adapt=adapt and label == "fp32")
            reports.append({"variant": label, **report})
    differences = _differences(reports)
    result = {"reports": reports, "int8_minus_fp32": differences}
    if as_json:
        emit_json(json.loads(json.dumps(result, default=float)))
        return
    for report in reports:
        report["model"] = f"{report['variant']} {Path(report['model']).name}"
    click.echo(format_report(reports))
    if differences:
        click.echo("\nint8 - fp32: " + ", ".join(f"{k} {v:+.3f}" for k, v in differences.items()))


def _quantize(fp32: Path, dataset, out: Path) -> Path:
    """int8 as export makes it: the same calibration photos (snapmatch.export.pipeline.int8_calibration_photos)."""
    from snapmatch.benchmarks.baselines import quantize_here
    from snapmatch.evaluation import split_for
    from snapmatch.export.pipeline import int8_calibration_photos
    from snapmatch.sdk.model.embedder import Embedder

    split, _ = split_for(Embedder(fp32, threads=1), dataset)
    photos = int8_calibration_photos(split.parts(dataset)[0])
    click.echo(f"quantizing {fp32.name} to int8 (calibrated on {len(photos)} training photos)", err=True)
    return quantize_here(fp32, out, photos)


def _differences(reports: list[dict]) -> dict:
    if len(reports) < 2:
        return {}
    fp32, int8 = reports
    found = {}
    for protocol in ("P1", "P3"):
        if protocol in fp32 and protocol in int8:
            for metric in ("recall@1", "recall@5", "map@r"):
                found[f"{protocol} {metric}"] = int8[protocol][metric] - fp32[protocol][metric]
    if "OPEN" in fp32 and "OPEN" in int8:
        for metric in ("precision", "known_named_right", "unknown_rejected"):
            found[f"OPEN {metric}"] = int8["OPEN"][metric] - fp32["OPEN"][metric]
    return found
