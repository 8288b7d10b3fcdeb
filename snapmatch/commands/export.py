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
@json_option
def export(checkpoint: Path, out: Path | None, int8: bool, data: Path, calibration_photos: int,
           threshold_precision: float, as_json: bool) -> None:
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
    if as_json:
        emit_json(result)
    else:
        for path in outputs:
            threshold = thresholds.get(path.name)
            click.echo(f"wrote {path}" + (f" (default threshold {threshold:.4f})" if threshold is not None else ""))
        if int8:
            click.echo(f"parity report: {out / 'parity.md'}")
            click.echo((out / "parity.md").read_text())
