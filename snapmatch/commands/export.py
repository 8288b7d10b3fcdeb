"""`snapmatch export`: a training checkpoint -> snapmatch ONNX model (+ int8 and its parity report)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option

DEFAULT_DATA = "../shared/data/grocery"


def export_checkpoint(checkpoint: Path, out: Path, *, image_size: int | None = None) -> Path:
    """Rebuild the network a checkpoint describes and export it as OUT/model.onnx (fp32)."""
    import torch

    from snapmatch.export.onnx_export import ExportSpec, export_onnx
    from snapmatch.sdk.model_spec import InputSpec
    from snapmatch.training.model import ModelConfig, build_model

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = ModelConfig.from_dict(state["model_config"])
    model = build_model(config)
    model.load_state_dict(state["model"])
    size = image_size or state["config"]["image_size"]
    prefix = {"small": "mnv3s", "large_minimalistic": "mnv3lm"}[config.backbone]
    spec = ExportSpec(
        input=InputSpec(size, size, "center_crop", 0.875),
        data_fingerprint=state["data_fingerprint"],
        name=f"MobileNetV3-{config.backbone} {state['config']['loss']} ({config.head} head)",
        id_prefix=prefix,
    )
    return export_onnx(model, out / "model.onnx", spec=spec)


def set_default_threshold(paths: list[Path], threshold: float) -> None:
    """Record the recommended identify() threshold in each model's metadata (the model id is unchanged)."""
    import onnx

    from snapmatch.export.onnx_export import set_metadata
    from snapmatch.sdk.model_spec import PREFIX

    for path in paths:
        proto = onnx.load(str(path))
        props = {p.key: p.value for p in proto.metadata_props}
        props[PREFIX + "default_threshold"] = repr(round(threshold, 6))
        set_metadata(proto, props)
        onnx.save(proto, str(path))


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: the checkpoint's folder).")
@click.option("--int8", "int8", is_flag=True, help="Also quantize to int8 and write the parity report.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=DEFAULT_DATA,
              show_default=True, help="Photos for int8 calibration, parity and the default threshold.")
@click.option("--calibration-photos", type=click.IntRange(min=8), default=128, show_default=True)
@click.option("--threshold-precision", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Store the identify() threshold that reaches this precision on val photos (a third of "
                   "the products unknown) as the model's default.")
@click.option("--ship", "ship_name", default=None,
              help="Also evaluate and install the result as snapmatch/models/NAME.onnx with its model card "
                   "(int8 when its P1 Recall@1 is within 1 point of fp32, else fp32).")
@click.option("--p2-model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --ship: the same recipe trained with --exclude-products p2, for protocol P2.")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --ship: the ImageNet-features model, evaluated beside for the model card.")
@json_option
def export(checkpoint: Path, out: Path | None, int8: bool, data: Path, calibration_photos: int,
           threshold_precision: float, ship_name: str | None, p2_model: Path | None, baseline: Path | None,
           as_json: bool) -> None:
    """Export a checkpoint to a snapmatch ONNX model (preprocessing inside, metadata, default threshold).

    With --int8 also writes model-int8.onnx (static QDQ U8S8, calibrated on
    training photos through the runtime's preprocess) and parity.json / parity.md:
    Recall@1, MAP@R, neighbour agreement, cosine, latency and size, fp32 vs int8.

    \b
    snapmatch export runs/ms/last.pt --int8
    """
    import numpy as np

    from snapmatch.benchmarks.accuracy import default_threshold
    from snapmatch.training.grocery import GroceryData

    out = out or checkpoint.parent
    fp32 = export_checkpoint(checkpoint, out)
    outputs = [fp32]
    result: dict = {"fp32": str(fp32)}
    grocery = GroceryData.load(data)
    if int8:
        from snapmatch.export.parity import format_report, parity_report
        from snapmatch.export.quantize import quantize_int8

        train = grocery.split("train")
        pick = np.random.default_rng(0).choice(len(train), size=min(calibration_photos, len(train)), replace=False)
        int8_path = quantize_int8(fp32, out / "model-int8.onnx", calibration_images=[train[i].path for i in sorted(pick)])
        outputs.append(int8_path)
        gallery = [(p.path, p.label) for p in grocery.iconic_photos() + train]
        queries = [(p.path, p.label) for p in grocery.split("val")]
        report = parity_report(fp32, int8_path, gallery=gallery, queries=queries, threads=1)
        (out / "parity.json").write_text(json.dumps(report, indent=2))
        (out / "parity.md").write_text(format_report(report) + "\n")
        result.update(int8=str(int8_path), parity=report)
    from snapmatch.sdk.errors import CalibrationError

    thresholds = {}
    for path in outputs:
        try:
            thresholds[path.name] = default_threshold(path, data, target_precision=threshold_precision)
        except CalibrationError as exc:
            click.echo(f"warning: {path.name} keeps no default threshold: {exc}", err=True)
            continue
        set_default_threshold([path], thresholds[path.name])
    result["default_threshold"] = thresholds
    if ship_name:
        result["model_card"] = str(_ship(checkpoint, ship_name, fp32, result, data=data, p2_model=p2_model,
                                         baseline=baseline, threshold_precision=threshold_precision))
    if as_json:
        emit_json(result)
    else:
        for path in outputs:
            threshold = thresholds.get(path.name)
            click.echo(f"wrote {path}" + (f" (default threshold {threshold:.4f})" if threshold is not None else ""))
        if int8:
            click.echo(f"parity report: {out / 'parity.md'}")
            click.echo((out / "parity.md").read_text())


def _ship(checkpoint: Path, name: str, fp32: Path, result: dict, *, data: Path, p2_model: Path | None,
          baseline: Path | None, threshold_precision: float) -> Path:
    """Evaluate, choose fp32 or int8, and install the model with its card into snapmatch/models/."""
    import torch

    from snapmatch.benchmarks.accuracy import evaluate
    from snapmatch.export.model_card import ship_model
    from snapmatch.sdk.product_search import MODELS_DIR

    parity = result.get("parity")
    chosen = fp32
    if parity and parity["fp32"]["recall_at_1"] - parity["int8"]["recall_at_1"] <= 0.01:
        chosen = Path(result["int8"])
    evaluation = {"model": evaluate(chosen, data, p2_model=p2_model, target_precision=threshold_precision, threads=1)}
    if baseline is not None:
        evaluation["imagenet_baseline"] = evaluate(baseline, data, protocols=("P1", "P3", "OPEN"),
                                                   target_precision=threshold_precision, threads=1)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    recipe = state["config"]
    train_args = f"--loss {recipe['loss']} --epochs {recipe['epochs']} --seed {recipe['seed']} --backbone {recipe['backbone']} --head {recipe['head']}"
    commands = [  # the recipe, end to end (runs/ is any scratch folder)
        f"snapmatch train --out runs/{name} {train_args}",
        f"snapmatch train --out runs/{name}-p2 {train_args} --exclude-products p2",
        "snapmatch train --out runs/imagenet --epochs 0",
        f"snapmatch export runs/{name}-p2/last.pt",
        "snapmatch export runs/imagenet/last.pt",
        f"snapmatch export runs/{name}/last.pt --int8 --ship {name} --p2-model runs/{name}-p2/model.onnx "
        "--baseline runs/imagenet/model.onnx",
    ]
    why = "int8" if chosen != fp32 else "fp32"
    notes = [f"shipped {why}: int8 P1 Recall@1 "
             + (f"{parity['int8']['recall_at_1']:.3f} vs fp32 {parity['fp32']['recall_at_1']:.3f} (ships int8 only within 1 point)"
                if parity else "not measured")]
    return ship_model(chosen, MODELS_DIR, name=name, recipe=recipe, commands=commands, evaluation=evaluation,
                      parity=parity, notes=notes)
