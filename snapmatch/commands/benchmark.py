"""`snapmatch benchmark`: how a user decides whether snapmatch fits their device.

Each profiler lives in snapmatch/benchmarks/ (callable from Python, returns a
JSON-able dict); the commands here parse options, print tables and plots.
"""

from __future__ import annotations

import click

from snapmatch.cli import LazyGroup

BENCHMARKS = {
    "latency": ("snapmatch.commands.bench_latency:latency", "Per-stage latency of a lookup, beside fp32 ONNX and PyTorch eager."),
    "accuracy": ("snapmatch.commands.bench_accuracy:accuracy", "Recall@1/5, MAP@R and open-set figures through the runtime, fp32 beside int8."),
    "scale": ("snapmatch.commands.bench_scale:scale", "Build, open, search, add and compact synthetic catalogs of growing size."),
    "memory": ("snapmatch.commands.bench_scale:memory", "Peak resident memory of a process serving a large catalog."),
    "open-time": ("snapmatch.commands.bench_scale:open_time", "Time to open catalogs of growing size, each in a fresh process."),
    "search-shape": ("snapmatch.commands.bench_scale:search_shape", "Search cost of one photo per product vs many photos per product."),
    "watch": ("snapmatch.commands.bench_watch:watch", "Sustained lookups/s of `watch` and the delay before a product is named."),
    "tradeoff": ("snapmatch.commands.bench_tradeoff:tradeoff", "Training runs' accuracy on unseen products against their models' latency."),
    "serve": ("snapmatch.commands.bench_serve:serve", "Requests/s and p50/p99 of `snapmatch serve`, micro-batching on vs off; kill -9."),
}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def benchmark() -> None:
    """Profile snapmatch on this machine's CPU: latency, accuracy, scale, memory.

    Every figure is measured beside a baseline in the same run (ratios hold on
    a noisy machine; single times do not). Add --json for scripts, --plot
    FILE.png for a chart (needs matplotlib: pip install "snapmatch[bench]").

    \b
    snapmatch benchmark latency --threads 1,all --plot latency.png
    snapmatch benchmark accuracy --protocols P1,P3
    snapmatch benchmark scale --sizes 10k,100k,1M
    snapmatch benchmark memory --size 1M
    """
