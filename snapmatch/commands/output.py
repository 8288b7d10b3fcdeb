"""Shared printing helpers for the CLI commands."""

from __future__ import annotations

import json
import sys

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
threads_option = click.option(
    "--threads", type=click.IntRange(min=0), default=None, help="CPU threads for inference and search (0: all cores)."
)


def emit_json(payload) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=False))


def progress(total: int | None, description: str):
    """A progress bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, disable=None, leave=False)
