"""Shared printing helpers for the CLI commands."""

from __future__ import annotations

import json
import sys

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
threads_option = click.option(
    "--threads", type=click.IntRange(min=0), default=None, help="CPU threads for inference and search (0: all cores)."
)


def thread_settings(ctx, param, value: str) -> tuple[int, ...]:
    """Click callback: '1,all' -> (1, 0), where 0 means every usable core."""
    counts = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        if part == "all":
            counts.append(0)
        elif part.isdigit() and int(part) > 0:
            counts.append(int(part))
        else:
            raise click.BadParameter(f"{part!r}: give thread counts >= 1 or 'all', comma-separated (e.g. 1,all)")
    if not counts:
        raise click.BadParameter("give at least one thread count (e.g. 1,all)")
    return tuple(dict.fromkeys(counts))


def positive_ints(ctx, param, value: str | None) -> tuple[int, ...] | None:
    """Click callback: '64,128' -> (64, 128); None stays None."""
    if value is None:
        return None
    try:
        found = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        found = ()
    if not found or min(found) < 1:
        raise click.BadParameter(f"give positive integers separated by commas, not {value!r}")
    return found


def emit_json(payload) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=False))


def emit_report(result: dict, text: str | None, *, as_json: bool, plot_path, plot) -> None:
    """A benchmark's ending: its chart written (when asked), then JSON or its table, and where the chart is.

    text: the table, or None to format nothing (under --json); plot(result, path) writes the chart.
    """
    if plot_path is not None:
        result["plot"] = str(plot(result, plot_path))
    if as_json:
        emit_json(result)
        return
    click.echo(text)
    if plot_path is not None:
        click.echo(f"\nplot: {result['plot']}")


def progress(total: int | None, description: str, *, quiet: bool = False):
    """A progress bar on stderr; hidden when stderr is not a terminal, or `quiet` (under --json)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, disable=True if quiet else None,
                leave=False)


def status(message: str) -> None:
    """One line of what is happening, on stderr, only on a terminal (a pipe or a log stays clean)."""
    if sys.stderr.isatty():
        click.echo(message, err=True)


def table(rows: list[list], header: list[str] | None = None, *, indent: str = "") -> str:
    """Rows as left-aligned columns, each as wide as its widest cell."""
    cells = [[str(cell) for cell in row] for row in ([header] if header else []) + rows]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(map(len, cells)))]
    return "\n".join(indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in cells)


TRAIN_EXTRA = ("torch", "onnx", "pytorch_metric_learning")
DATA_ENV = "SNAPMATCH_DATA"  # a development dataset for commands whose --data is not given (tests and CI set it)


def require_train_extra(command: str) -> None:
    """One line naming what to install, instead of a ModuleNotFoundError traceback, when torch & co. are missing."""
    import importlib.util

    from snapmatch.sdk.errors import SnapmatchError

    missing = []
    for module in TRAIN_EXTRA:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise SnapmatchError(f"snapmatch {command} needs the train extra ({', '.join(missing)} not installed): "
                             "pip install torch --index-url https://download.pytorch.org/whl/cpu && "
                             "pip install 'snapmatch[train]' (the first keeps PyTorch's CPU build)")


def data_or_env(data: str | None, option: str = "--data") -> str:
    """`data`, else $SNAPMATCH_DATA, else a usage error saying how to give one."""
    import os

    if data:
        return data
    if os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV]
    raise click.UsageError(f"no dataset: give {option} DIR (a folder of product sub-folders, a list file, or the "
                           f"Grocery Store Dataset) or set {DATA_ENV}")
