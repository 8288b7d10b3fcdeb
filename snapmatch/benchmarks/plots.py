"""PNG charts of benchmark results (matplotlib, from the `bench` extra, imported only when plotting)."""

from __future__ import annotations

import os
from pathlib import Path

from snapmatch.sdk.errors import SnapmatchError


class PlotUnavailableError(SnapmatchError):
    """matplotlib is not installed."""


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (works without a display)."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailableError('plots need matplotlib: pip install "snapmatch[bench]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: str | os.PathLike) -> Path:
    """Write `figure` as a PNG (folders created), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot().close(figure)
    return path
