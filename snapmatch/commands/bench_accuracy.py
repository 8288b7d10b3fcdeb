"""`snapmatch benchmark accuracy`: DESIGN.md's protocols through the runtime, fp32 beside int8."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, progress

DEFAULT_DATA = "../shared/data/grocery"
CALIBRATION_PHOTOS = 128  # train photos that calibrate an int8 model made here


@click.command()
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="fp32 ONNX model (default: the shipped model).")
@click.option("--int8", "int8", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Its int8 model (default: quantized here from --model; needs the onnx package).")
@click.option("--no-int8", is_flag=True, help="Measure the fp32 model only.")
@click.option("--data", type=click.Path(file_okay=False), default=DEFAULT_DATA, show_default=True,
              help="Grocery-format dataset root (train.txt, val.txt, classes.csv, iconic images).")
@click.option("--protocols", default="P1,FEW,P3,OPEN", show_default=True,
              help="Comma-separated: P1 (in-store), P2 (new products; needs --p2-model), FEW (P1 with iconic + 3 "
                   "photos per product), P3 (catalog-only), OPEN (unknown products, per identify() rule).")
@click.option("--adapt/--no-adapt", default=True, show_default=True,
              help="Also measure every protocol with the catalog's adaptation on (its own metric).")
@click.option("--p2-model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The model trained without P2's held-out products.")
@click.option("--target-precision", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.95, show_default=True,
              help="OPEN: the precision the identify() threshold is calibrated for.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Inference threads (default: all cores).")
@json_option
def accuracy(model, int8, no_int8, data, protocols, adapt, p2_model, target_precision, threads, as_json) -> None:
    """Recall@1, Recall@5, MAP@R and open-set figures through the runtime (ONNX Runtime + usearch catalog).

    Runs DESIGN.md's protocols on the development data for the fp32 model and
    its int8 model, side by side, and reports the difference. With --adapt
    (the default) the fp32 model is measured again with the catalog's own
    metric (fitted on the catalog's photos, never on the queries).

    \b
    snapmatch benchmark accuracy
    snapmatch benchmark accuracy --protocols P1,P2,P3,OPEN --p2-model runs/p2/model.onnx --json
    """
    from snapmatch.benchmarks.accuracy import PROTOCOLS, evaluate, format_report
    from snapmatch.sdk.product_search import default_model_path

    chosen = tuple(p.strip().upper() for p in protocols.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(PROTOCOLS)}", param_hint="--protocols")
    if "P2" in chosen and p2_model is None:
        raise click.BadParameter("P2 needs --p2-model (a model trained with --exclude-products p2)",
                                 param_hint="--protocols")
    if not (Path(data) / "train.txt").is_file():
        raise click.BadParameter(f"{data} is not a Grocery-format dataset (no train.txt)", param_hint="--data")
    fp32 = Path(model) if model else default_model_path()
    with tempfile.TemporaryDirectory(prefix="snapmatch-accuracy-") as tmp:
        models = [("fp32", fp32)]
        if not no_int8:
            models.append(("int8", Path(int8) if int8 else _quantize(fp32, data, Path(tmp) / "int8.onnx")))
        reports = []
        for label, path in models:
            with progress(None, f"embedding ({label})") as bar:
                report = evaluate(path, data, protocols=chosen, p2_model=p2_model if label == "fp32" else None,
                                  target_precision=target_precision, threads=threads, on_batch=bar.update,
                                  adapt=adapt and label == "fp32")
            reports.append({"variant": label, **report})
    result = {"reports": reports, "int8_minus_fp32": _differences(reports)}
    if as_json:
        emit_json(json.loads(json.dumps(result, default=float)))
        return
    for report in reports:
        report["model"] = f"{report['variant']} {Path(report['model']).name}"
    click.echo(format_report(reports))
    if result["int8_minus_fp32"]:
        click.echo("\nint8 - fp32: " + ", ".join(f"{k} {v:+.3f}" for k, v in result["int8_minus_fp32"].items()))


def _quantize(fp32: Path, data: str, out: Path) -> Path:
    from snapmatch.benchmarks.baselines import quantize_here
    from snapmatch.training.grocery import GroceryData

    photos = GroceryData.load(data).split("train")
    step = max(1, len(photos) // CALIBRATION_PHOTOS)
    click.echo(f"quantizing {fp32.name} to int8 (calibrated on {len(photos[::step])} train photos)", err=True)
    return quantize_here(fp32, out, [photo.path for photo in photos[::step]])


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
