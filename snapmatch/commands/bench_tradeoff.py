"""`snapmatch benchmark tradeoff`: training recipes' accuracy on unseen products against their models' latency."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from snapmatch.commands.output import emit_report, json_option


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--label", "labels", multiple=True,
              help="A name per run, in order (default: the folder's name). Give it once per run or not at all.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="Inference threads (0: all cores); the issue's measure is 1.")
@click.option("--repeats", type=click.IntRange(min=1), default=100, show_default=True,
              help="Timed rounds (one inference of every model per round).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Photos to time on (default: the bundled demo photos).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the accuracy-per-millisecond chart here as a PNG (needs matplotlib).")
@json_option
def tradeoff(runs, labels, threads, repeats, images, plot_path, as_json) -> None:
    """Accuracy per millisecond: each run's figures on products it never trained on, beside its models' latency.

    RUNS are `snapmatch train --folds N` run folders (figures: the mean over
    their folds' evaluation.json; models: fold-1's model.onnx, and its
    model-int8.onnx once `snapmatch export --int8` wrote one), or ONNX models
    (figures from an evaluation.json beside them, if any). Every model is
    timed in this process, round-robin, on the same photos; the first one
    timed is the 1.00 of the latency ratios. Figures are given with the
    catalog's adaptation off / on.

    \b
    snapmatch benchmark tradeoff snapmatch/models/default.onnx runs/small-folds runs/large-folds --plot tradeoff.png
    snapmatch benchmark tradeoff runs/a runs/b --label baseline --label "new loss" --json
    """
    from snapmatch.benchmarks.plots import pyplot
    from snapmatch.benchmarks.tradeoff import format_table, plot, run

    if labels and len(labels) != len(runs):
        raise click.BadParameter(f"{len(labels)} labels for {len(runs)} runs: one per run, or none", param_hint="--label")
    if plot_path is not None:
        pyplot()  # no matplotlib: say so now, not after the timing
    result = run(runs, labels, threads=threads, repeats=repeats, images=images,
                 log=lambda message: click.echo(message, err=True) if sys.stderr.isatty() else None)
    emit_report(result, None if as_json else format_table(result), as_json=as_json, plot_path=plot_path, plot=plot)
