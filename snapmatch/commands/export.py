"""`snapmatch export`: a training checkpoint -> snapmatch ONNX model (+ int8 and its parity report)."""

from __future__ import annotations

from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, require_train_extra


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: the checkpoint's folder).")
@click.option("--int8", "int8", is_flag=True, help="Also quantize to int8 and write the parity report.")
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="Photos for int8 calibration, parity and the default threshold (default: the run's own dataset).")
@click.option("--calibration-photos", type=click.IntRange(min=8), default=128, show_default=True,
              help="Training photos the int8 activation ranges are calibrated on.")
@click.option("--threshold-precision", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Store the identify() threshold that reaches this precision on the run's query photos (a third "
                   "of the products unknown) as the model's default.")
@click.option("--image-size", type=click.IntRange(min=32), default=None,
              help="Export at this input size instead of the one the run trained at (the network is "
                   "convolutional; measure the result with `snapmatch evaluate`).")
@click.option("--force-int8", is_flag=True,
              help="Write model-int8.onnx even when it fails the int8 gate (Recall@1 within 1 point of fp32, "
                   "MAP@R within 2, at least 1.2x faster).")
@click.option("--ship", "ship_name", default=None,
              help="Also evaluate and install the result as snapmatch/models/NAME.onnx with its model card "
                   "(int8 when it passes the int8 gate, else fp32).")
@click.option("--p2-model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --ship: the same recipe trained with products held out, for protocol P2.")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --ship: the ImageNet-features model, evaluated beside for the model card.")
@click.option("--previous", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --ship: the model this one replaces, evaluated beside for the model card.")
@json_option
def export(checkpoint: Path, out: Path | None, int8: bool, data: Path | None, calibration_photos: int,
           threshold_precision: float, image_size: int | None, force_int8: bool, ship_name: str | None,
           p2_model: Path | None, baseline: Path | None, previous: Path | None, as_json: bool) -> None:
    """Export a checkpoint to a snapmatch ONNX model (preprocessing inside, metadata, default threshold).

    Writes OUT/model.onnx; with --int8 also model-int8.onnx (static QDQ U8S8,
    calibrated on training photos through the runtime's preprocess) and
    parity.json / parity.md: Recall@1, MAP@R, neighbour agreement, cosine,
    latency and size, fp32 vs int8. The int8 model is written only when it
    passes the gate (as accurate, and faster: see --force-int8); otherwise the
    report says why and the exit code is 3. Files appear only once complete:
    a failed or killed export leaves no model behind.

    \b
    snapmatch export runs/mine/last.pt --int8
    """
    require_train_extra("export")
    from snapmatch.export.pipeline import export_checkpoint, ship

    out = out or checkpoint.parent
    steps = (lambda step: click.echo(step, err=True)) if not as_json else (lambda step: None)
    result = export_checkpoint(checkpoint, out, data=data, int8=int8, calibration_photos=calibration_photos,
                               threshold_precision=threshold_precision, image_size=image_size,
                               force_int8=force_int8, on_step=steps)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    payload = result.to_dict()
    if ship_name:
        payload["model_card"] = str(ship(checkpoint, ship_name, result, data=data, p2_model=p2_model,
                                         baseline=baseline, previous=previous,
                                         threshold_precision=threshold_precision))
    if as_json:
        emit_json(payload)
    else:
        for path in (result.fp32, result.int8):
            if path is not None:
                threshold = result.default_threshold.get(path.name)
                click.echo(f"wrote {path}" + (f" (default threshold {threshold:.4f})" if threshold is not None else ""))
        if result.parity:
            click.echo(f"parity report: {out / 'parity.md'}")
            click.echo((out / "parity.md").read_text())
        if ship_name:
            click.echo(f"shipped: {payload['model_card']}")
    if result.int8_refused:
        from snapmatch.cli import PartialSuccess

        kept = "written anyway (--force-int8)" if force_int8 else "not written"
        raise PartialSuccess(f"int8 model {kept}: it fails the gate: {'; '.join(result.int8_refused)}")
