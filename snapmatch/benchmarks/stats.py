"""Summary statistics of timings, one shape for every benchmark."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def summary(values_ms: Sequence[float]) -> dict:
    """median, p95, p99 (and mean, min, max, n) of timings in ms."""
    values = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"median": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(values.mean()),
            "min": float(values.min()), "max": float(values.max()), "n": int(len(values))}
