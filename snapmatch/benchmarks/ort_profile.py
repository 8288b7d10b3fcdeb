"""Per-operator time of an ONNX model, from onnxruntime's own profiler (`enable_profiling`).

ORT writes a Chrome trace (JSON list of events); every node's kernel is one
event `<node>_kernel_time` with the op type in args.op_name. Summed per op
type and per node and divided by the runs, it shows where an inference's time
goes, which a wall-clock total cannot (e.g. int8 QDQ models paying for their
QuantizeLinear/DequantizeLinear pairs).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile(model: str | os.PathLike, batch: np.ndarray, *, threads: int = 1, runs: int = 20, warmup: int = 3,
            top: int = 10) -> dict:
    """Run `model` on `batch` `runs` times under ORT's profiler; time per op type and per node (ms per run)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="snapmatch-ortprof-") as tmp:
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(os.fspath(model), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: batch}
        for _ in range(warmup):
            session.run(None, feed)
        # Warm-up runs are in the trace too; the first `warmup` model_run events are dropped below.
        for _ in range(runs):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    return summarise(trace, warmup=warmup, top=top)


def session_options(threads: int):
    """Session options as the runtime's Embedder sets them, for `threads` intra-op threads (0: ORT's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def summarise(trace: list[dict], *, warmup: int = 0, top: int = 10) -> dict:
    """Aggregate an ORT trace: kernel time per op type and per node, after the first `warmup` runs."""
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    kept = runs[warmup:] or runs
    start = kept[0]["ts"] if kept else float("-inf")
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, list] = {}
    nodes_of_type: dict[str, set] = defaultdict(set)
    for event in trace:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event["ts"] < start:
            continue
        node = event["name"][: -len("_kernel_time")]
        op_type = event.get("args", {}).get("op_name", "?")
        by_type[op_type] += event["dur"]
        nodes_of_type[op_type].add(node)
        by_node.setdefault(node, [op_type, 0.0])[1] += event["dur"]
    count = max(1, len(kept))
    kernel_us = sum(by_type.values())
    run_us = [e["dur"] for e in kept]

    def share(us: float) -> float:
        return us / kernel_us if kernel_us else 0.0

    return {
        "runs": len(kept),
        "run_ms_median": float(np.median(run_us)) / 1000 if run_us else None,
        "kernel_ms_per_run": kernel_us / count / 1000,
        "by_op_type": [
            {"op_type": op, "ms_per_run": us / count / 1000, "share": share(us), "nodes": len(nodes_of_type[op])}
            for op, us in sorted(by_type.items(), key=lambda item: -item[1])
        ],
        "by_node": [
            {"node": node, "op_type": op, "ms_per_run": us / count / 1000, "share": share(us)}
            for node, (op, us) in sorted(by_node.items(), key=lambda item: -item[1][1])[:top]
        ],
    }
