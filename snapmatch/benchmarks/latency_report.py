"""The latency benchmark's result as text (tables, ratios, targets, slow operators) and as a PNG chart."""

from __future__ import annotations

import os
from pathlib import Path

from snapmatch.benchmarks import cpu_info
from snapmatch.benchmarks.latency import STAGES

BASELINE_NAMES = {"onnx_fp32": "ONNX fp32", "onnx_int8": "ONNX int8", "torch_eager": "PyTorch eager fp32"}
STAGE_NAMES = {"decode": "decode", "resize": "resize", "inference": "inference", "search": "search",
               "total": "identify (total)"}


def format_report(result: dict, *, top: int = 8) -> str:
    """Everything a person reads from one run, medians / p95 / p99 in ms."""
    runs = result["runs"]
    model, images, cpu = result["model"], result["images"], result["cpu"]
    lines = [
        f"snapmatch benchmark latency — model {model['model_id']} ({model['quantization']}, {model['input']})",
        f"CPU: {cpu['model']} ({cpu['machine']}, {cpu['usable_cores']} usable of {cpu['cores']} cores): "
        f"{cpu_info.flags_line(cpu)}",
        f"frames: {images['timed_frames']} photos from {images['folder']} (median {images['frame_size_median']}, "
        f"{images['frame_bytes_median'] / 1024:.0f} KiB JPEG); catalog {result['catalog']['base_vectors']} vectors "
        f"({result['catalog']['photos']} photos + {result['catalog']['synthetic']} synthetic)",
        f"load average {_load(result)} on {cpu['usable_cores']} cores (multi-thread figures need an idle machine); "
        f"{result['config']['repeats']} timed rounds after {result['config']['warmup']} warm-up; "
        "ms as median / p95 / p99",
        "",
    ]
    width = 26
    header = f"{'':<{width}}" + "".join(f"{run['label']:>24}" for run in runs)
    lines += [header]
    for stage in STAGES:
        lines.append(f"{STAGE_NAMES[stage]:<{width}}" + "".join(f"{_triple(run['stages'][stage]):>24}" for run in runs))
    lines.append(f"{'  other (total - stages)':<{width}}"
                 + "".join(f"{run['stages']['other']['median']:>24.2f}" for run in runs))
    if all("adaptation" in run["stages"] for run in runs):
        # Inside `search`: the catalog's own metric, one [1, d] x [d, d] product per query.
        lines.append(f"{'  of search: adaptation':<{width}}"
                     + "".join(f"{_triple(run['stages']['adaptation']):>24}" for run in runs))
    for stage, label in (("camera_resize", "640x480 frame: resize"), ("camera_total", "640x480 frame: identify")):
        if all(stage in run["stages"] for run in runs):  # a camera's BGR array: no decode
            lines.append(f"{label:<{width}}" + "".join(f"{_triple(run['stages'][stage]):>24}" for run in runs))
    lines += ["", f"{'inference, batch 1':<{width}}" + "".join(f"{run['label']:>24}" for run in runs)]
    for name, label in BASELINE_NAMES.items():
        if any(name in run["baselines"] for run in runs):
            lines.append(f"{label:<{width}}" + "".join(
                f"{_triple(run['baselines'][name]['batch1']) if name in run['baselines'] else '-':>24}" for run in runs))
    lines += ["", f"{'throughput, best images/s':<{width}}" + "".join(f"{run['label']:>24}" for run in runs)]
    for name, label in BASELINE_NAMES.items():
        if any(name in run["baselines"] for run in runs):
            cells = []
            for run in runs:
                best = run["baselines"].get(name, {}).get("best")
                cells.append(f"{best['images_per_s']:.0f} (batch {best['batch']})" if best else "-")
            lines.append(f"{label:<{width}}" + "".join(f"{cell:>24}" for cell in cells))
    lines += ["", "ratios of medians measured in this run:"]
    for run in runs:
        r = run["ratios"]
        lines.append(
            f"  {run['label']}: ONNX fp32 {_x(r['fp32_speedup_vs_torch'])} faster than PyTorch eager "
            f"(throughput {_x(r['fp32_vs_torch_throughput'])}); int8/fp32 latency {_f(r['int8_vs_fp32_latency'])}; "
            f"identify/eager inference {_f(r['identify_vs_torch'])}; "
            f"(inference+search)/eager inference {_f(r['inference_search_vs_torch'])}; "
            f"frame path / inference: JPEG {_x(r.get('frame_path_vs_inference'))}, "
            f"640x480 frame {_x(r.get('camera_path_vs_inference'))}"
        )
    lines += ["", "targets (1 thread):"]
    for row in result["targets"]:
        verdict = {True: "met", False: f"MISSED by {row['missed_by_factor']:.2f}x" if row["missed_by_factor"] else "MISSED",
                   None: "not measured"}[row["met"]]
        lines.append(f"  {row['target']}: {_f(row['value'])} (goal {row['goal']}): {verdict}")
    lines += _int8_lines(result)
    for name, profile in (result.get("profile") or {}).items():
        lines += ["", f"slowest operators, {BASELINE_NAMES.get(name, name)}, 1 thread "
                      f"(kernel time {profile['kernel_ms_per_run']:.2f} ms/run under the profiler):"]
        for row in profile["by_op_type"][:top]:
            lines.append(f"  {row['op_type']:<22} {row['ms_per_run']:6.3f} ms  {row['share']:6.1%}  ({row['nodes']} nodes)")
        slow = profile["by_node"][:3]
        if slow:
            lines.append("  slowest nodes: " + "; ".join(f"{n['node']} ({n['op_type']}, {n['ms_per_run']:.3f} ms)" for n in slow))
    for name, reason in result.get("unavailable", {}).items():
        lines.append(f"not measured: {BASELINE_NAMES.get(name, name)}: {reason}")
    return "\n".join(lines)


def _int8_lines(result: dict) -> list[str]:
    int8 = result.get("int8") or {}
    retrieval = int8.get("retrieval")
    if not retrieval:
        return []
    lines = ["", f"int8 model: {int8.get('source')} ({int8.get('model_id')})"]
    recall = retrieval["recall_at_1"]
    if recall:
        lines.append(f"  {retrieval['protocol']} ({retrieval['queries']} queries): fp32 {recall['fp32']:.3f}, "
                     f"int8 {recall['int8']:.3f}, difference {retrieval['recall_at_1_difference']:+.3f}; "
                     f"top-1 agreement {retrieval['top1_agreement']:.2f}")
    lines.append(f"  cosine int8 vs fp32 embeddings: mean {retrieval['cosine_mean']:.3f}, min {retrieval['cosine_min']:.3f}")
    return lines


def plot(result: dict, path: str | os.PathLike) -> Path:
    """Per-stage median latency (p95 whiskers) at each thread setting beside the baselines, and throughput by batch."""
    from snapmatch.benchmarks.plots import pyplot, save

    plt = pyplot()
    runs = result["runs"]
    rows = [(STAGE_NAMES[s], lambda run, s=s: run["stages"][s]) for s in STAGES]
    rows += [(BASELINE_NAMES[n], lambda run, n=n: run["baselines"].get(n, {}).get("batch1"))
             for n in BASELINE_NAMES if any(n in run["baselines"] for run in runs)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    height = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        positions, medians, errors = [], [], []
        for j, (_, get) in enumerate(rows):
            stats = get(run)
            if stats:
                positions.append(j + i * height)
                medians.append(stats["median"])
                errors.append(max(0.0, stats["p95"] - stats["median"]))
        left.barh(positions, medians, height=height, xerr=[[0] * len(errors), errors], label=run["label"], capsize=2)
    left.set_yticks([j + height * (len(runs) - 1) / 2 for j in range(len(rows))], [name for name, _ in rows])
    left.invert_yaxis()
    left.set_xscale("log")  # decode (~0.3 ms) and PyTorch eager (~7 ms, far more on a busy machine) on one axis
    left.set_xlabel("ms per image, median (whisker: p95), log scale")
    left.set_title("Latency per stage and baselines, batch 1")
    left.legend()
    for run in runs:
        for name, label in BASELINE_NAMES.items():
            if name in run["baselines"]:
                sweep = run["baselines"][name]["throughput"]
                right.plot([row["batch"] for row in sweep], [row["images_per_s"] for row in sweep], marker="o",
                           label=f"{label}, {run['label']}")
    right.set_xscale("log", base=2)
    right.set_xlabel("batch size")
    right.set_ylabel("images/s")
    right.set_title("Throughput")
    right.legend(fontsize=7)
    figure.suptitle(f"{result['model']['model_id']} on {result['cpu']['model']}", fontsize=10)
    return save(figure, path)


def _load(result: dict) -> str:
    load = result.get("load_average") or {}
    return " -> ".join(f"{load[k]:.1f}" for k in ("start", "end") if load.get(k) is not None) or "unknown"


def _triple(stats: dict) -> str:
    return f"{stats['median']:.2f} / {stats['p95']:.2f} / {stats['p99']:.2f}"


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"
