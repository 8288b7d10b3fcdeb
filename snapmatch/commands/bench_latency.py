"""`snapmatch benchmark latency`: per-stage latency of a lookup beside fp32 ONNX, int8 ONNX and PyTorch eager."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from snapmatch.commands.output import emit_report, json_option, positive_ints, thread_settings


existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.option("--model", type=existing_file, default=None, help="ONNX model (default: the shipped model).")
@click.option("--threads", "threads", default="1,all", show_default=True, callback=thread_settings,
              help="Thread settings to measure, comma-separated: counts or 'all' (every usable core).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Photo folder: photos.json, one sub-folder per product, or flat (default: the bundled demo photos).")
@click.option("--repeats", type=click.IntRange(min=1), default=100, show_default=True, help="Timed rounds per setting.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed rounds first.")
@click.option("--batch-sizes", default="1,2,4,8,16,32", show_default=True, callback=positive_ints,
              help="Batch sizes of the throughput sweep.")
@click.option("--catalog-size", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Vectors in the searched catalog (the photos, then synthetic vectors).")
@click.option("--int8", "int8", type=existing_file, default=None,
              help="The int8 model to compare (default: quantized here from the model; needs the onnx package).")
@click.option("--checkpoint", type=existing_file, default=None,
              help="Training checkpoint for the PyTorch baseline's weights (default: the model card's recipe, random weights).")
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch eager baseline.")
@click.option("--profile/--no-profile", default=True, show_default=True,
              help="Per-operator profile of the ONNX models (onnxruntime's profiler).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG chart of the latencies here (needs matplotlib).")
@json_option
def latency(model, threads, images, repeats, warmup, batch_sizes, catalog_size, int8, checkpoint, no_torch, profile,
            plot_path, as_json) -> None:
    """Per-stage latency of a lookup (decode, resize, inference, search, identify total), median/p95/p99,
    at 1 thread and all cores, beside ONNX fp32, ONNX int8 and PyTorch eager measured in the same run.

    Ratios are what to compare between machines; single times vary with load.

    \b
    snapmatch benchmark latency
    snapmatch benchmark latency --threads 1 --repeats 300 --plot latency.png
    snapmatch benchmark latency --images my-photos/ --int8 model-int8.onnx --json
    """
    from snapmatch.benchmarks.latency import LatencyConfig, run
    from snapmatch.benchmarks.latency_report import format_report, plot
    from snapmatch.benchmarks.plots import pyplot

    if plot_path is not None:
        pyplot()  # no matplotlib: say so now, not after minutes of measuring
    config = LatencyConfig(model=model, images=images, threads=threads, repeats=repeats, warmup=warmup,
                           batch_sizes=batch_sizes, catalog_size=catalog_size, int8=int8, checkpoint=checkpoint,
                           torch=not no_torch, profile=profile)
    result = run(config, log=lambda message: click.echo(message, err=True) if sys.stderr.isatty() else None)
    emit_report(result, None if as_json else format_report(result), as_json=as_json, plot_path=plot_path, plot=plot)
