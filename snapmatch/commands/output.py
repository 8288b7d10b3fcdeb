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


def progress(total: int | None, description: str):
    """A progress bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, disable=None, leave=False)
