"""How long opening a catalog takes as it grows (DESIGN.md: "Opening is a memory map").

For each size, a synthetic catalog is built (`synthetic_catalog`), then every
open is timed in a fresh Python process, so that imports, allocator warm-up
and a previous open's mappings are not counted: the child imports
everything first and times only the open call. It also reports its resident
memory (VmRSS, split into anonymous and file-backed pages) before and after
the open, and the latency of the first and second search after it.

Modes, each repeated `repeats` times (median and max reported):

- usearch_view: `Index.restore(base, view=True)` alone, the floor under the rest;
- usearch_view_nokeys: the same with enable_key_lookups=False (usearch then
  skips building its key -> slot hash table; search still returns keys);
- readonly: `Catalog.open(folder, readonly=True)`;
- writer: `Catalog.open(folder)` (writer lock, crash recovery, then the same);
- product_search: `ProductSearch.open(folder, readonly=True)`, only with a
  model (loading the ONNX model adds a constant; no model ships yet);
- readonly_evicted: readonly after the catalog's files were evicted from the
  page cache with posix_fadvise (see `pagecache`; dropping all caches needs root).

    snapmatch benchmark open-time --sizes 10k,1M --dim 576 --out scratch/open-time

Building the base dominates a first run: 1M x 576 f32 HNSW at the library's
expansion_add (128) takes tens of minutes on two cores. --expansion-add 32
builds ~3x faster; the file's size and layout (what opening maps) do not
change, only the graph's recall. --reuse keeps catalogs built earlier with the
same settings, so a rerun only measures.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from snapmatch.benchmarks import pagecache
from snapmatch.benchmarks.memory import status as _memory
from snapmatch.benchmarks.synthetic_catalog import (
    SyntheticSpec,
    build,
    load_build,
    sample_queries,
)
from snapmatch.sdk.catalog import store
from snapmatch.sdk.catalog.manifest import MANIFEST, read_manifest
from snapmatch.sdk.errors import InvalidArgumentError

MODULE = "snapmatch.benchmarks.open_time"
MODES = ("usearch_view", "usearch_view_nokeys", "readonly", "writer", "product_search", "readonly_evicted")
RESULT_FILE = "open_time.json"
CHILD_TIMEOUT_S = 900


def run(
    sizes: Sequence[int],
    dim: int = 576,
    folder: str | os.PathLike | None = None,
    repeats: int = 5,
    *,
    vector_dtype: str = "f32",
    expansion_add: int | None = None,
    images_per_product: int = 4,
    clusters: int = 1000,
    seed: int = 0,
    insert: str = "bulk",
    model: str | os.PathLike | None = None,
    modes: Sequence[str] | None = None,
    evict: bool = True,
    reuse: bool = False,
    keep: bool = True,
    threads: int = 0,
    log=None,
) -> list[dict]:
    """Build a catalog of each size under `folder` (a temporary folder when None) and time opening it.

    modes: which of MODES to time (default: all; product_search needs a model).
    reuse: keep an earlier build of the same settings found in `folder`.
    keep: leave the catalogs in `folder` afterwards (always removed for a temporary folder).
    """
    if repeats < 1:
        raise InvalidArgumentError("repeats must be at least 1")
    log = log or (lambda message: None)
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="snapmatch-open-time-") as tmp:
            return run(sizes, dim, tmp, repeats, vector_dtype=vector_dtype, expansion_add=expansion_add,
                       images_per_product=images_per_product, clusters=clusters, seed=seed, insert=insert,
                       model=model, modes=modes, evict=evict, reuse=False, keep=False, threads=threads, log=log)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if modes is None:
        skip = {"product_search"} if model is None else set()
        modes = [m for m in MODES if m not in skip | (set() if evict else {"readonly_evicted"})]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise InvalidArgumentError(f"unknown modes {sorted(unknown)}: choose from {MODES}")
    if "product_search" in modes and model is None:
        raise InvalidArgumentError("the product_search mode needs a model")
    results = []
    for size in sizes:
        spec = SyntheticSpec(size=int(size), dim=dim, images_per_product=images_per_product, clusters=clusters,
                             seed=seed, vector_dtype=vector_dtype, expansion_add=expansion_add, insert=insert)
        catalog = folder / spec.name
        facts = load_build(catalog, spec, model=model) if reuse else None
        reused = facts is not None
        if reused:
            log(f"{spec.name}: reusing the catalog built earlier in {catalog}")
        else:
            shutil.rmtree(catalog, ignore_errors=True)
            facts = build(catalog, spec, model=model, threads=threads, log=log)
        queries, expected, keys = sample_queries(catalog, spec)
        queries_path = folder / f"{spec.name}.queries.npy"
        np.save(queries_path, queries)
        opens = {}
        for mode in modes:
            log(f"{spec.name}: timing {mode} x{repeats}")
            opens[mode] = measure_open(mode, catalog, queries_path, expected, keys, repeats, threads=threads,
                                   images_per_product=images_per_product)
        results.append({
            "size": spec.size,
            "dim": dim,
            "vector_dtype": vector_dtype,
            "products": spec.products,
            "catalog": str(catalog),
            "build": {**facts, "reused": reused},
            "open": opens,
        })
        if not keep:
            shutil.rmtree(catalog, ignore_errors=True)
    return results


def ratios(results: list[dict]) -> dict:
    """Median open time of the largest catalog over the smallest's, per mode (1.0 = flat)."""
    return _compare(results, lambda small, large, _: large / small if small > 0 else None)


def slopes(results: list[dict]) -> dict:
    """Extra open time per million vectors between the smallest and largest catalog, per mode (0 = flat).

    Steadier than the ratio, whose denominator (a few ms) is at the mercy of a busy machine.
    """
    return _compare(results, lambda small, large, added: (large - small) / added * 1e6 if added else None)


def _compare(results: list[dict], compare) -> dict:
    if len(results) < 2:
        return {}
    small, large = min(results, key=lambda r: r["size"]), max(results, key=lambda r: r["size"])
    found = {
        mode: compare(small["open"][mode]["open_ms"]["median"], large["open"][mode]["open_ms"]["median"],
                      large["size"] - small["size"])
        for mode in large["open"]
        if mode in small["open"]
    }
    return {mode: value for mode, value in found.items() if value is not None}


# --- one measurement: fresh processes ---------------------------------------------------


def measure_open(
    mode: str, catalog: Path, queries: Path, expected: list[str], keys: list[int], repeats: int, *, threads: int,
    images_per_product: int,
) -> dict:
    base = catalog / read_manifest(catalog).base.file
    files = [base, catalog / MANIFEST] + [catalog / (store.DATABASE + s) for s in ("", "-wal", "-shm")]
    request = json.dumps({"mode": mode, "folder": str(catalog), "base": str(base), "queries": str(queries),
                          "expected": expected, "keys": keys, "images_per_product": images_per_product,
                          "threads": threads})
    runs = []
    for _ in range(repeats):
        if mode.endswith("_evicted"):
            pagecache.evict(files)
        resident = pagecache.resident_fraction(base)
        done = subprocess.run([sys.executable, "-m", MODULE, "--child", request], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{mode} open of {catalog} failed in the child process:\n{done.stderr[-4000:]}")
        runs.append({**json.loads(done.stdout.strip().splitlines()[-1]), "base_resident_before": resident})
    return _summarise(runs)


def _summarise(runs: list[dict]) -> dict:
    def stats(key: str) -> dict:
        values = [r[key] for r in runs]
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}

    def median(key: str, field: str) -> float | None:
        values = [r[key][field] for r in runs if r[key].get(field) is not None]
        return statistics.median(values) if values else None

    memory = {
        f"{point}_{field}_mb": median(point, field)
        for point in ("before", "after_open", "after_search")
        for field in ("rss", "anon", "file")
    }
    resident = [r["base_resident_before"] for r in runs if r["base_resident_before"] is not None]
    return {
        "open_ms": stats("open_ms"),
        "first_search_ms": stats("first_search_ms"),
        "second_search_ms": stats("second_search_ms"),
        **memory,
        "open_rss_delta_mb": _delta(memory["after_open_rss_mb"], memory["before_rss_mb"]),
        "base_resident_before": statistics.median(resident) if resident else None,
        "top1_hits": min(r["top1_hits"] for r in runs),  # of the queries, those whose top product is right
        "queries": runs[0]["queries"],
    }


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _child(request: dict) -> dict:
    """Runs in the fresh process: everything imported first, then only the open is timed."""
    from snapmatch.sdk.catalog._usearch import (
        Index,  # imports onnxruntime first (see that module)
    )
    from snapmatch.sdk.catalog.catalog import Catalog
    from snapmatch.sdk.product_search import ProductSearch

    mode = request["mode"]
    queries = np.load(request["queries"])
    before = _memory()
    start = time.perf_counter()
    if mode.startswith("usearch_view"):
        opened = Index.restore(request["base"], view=True, enable_key_lookups=mode != "usearch_view_nokeys")
    elif mode == "product_search":
        opened = ProductSearch.open(request["folder"], readonly=True, threads=request["threads"])
    else:
        opened = Catalog.open(request["folder"], readonly=mode != "writer", threads=request["threads"])
    open_ms = 1e3 * (time.perf_counter() - start)
    after_open = _memory()

    if mode.startswith("usearch_view"):
        def search(q, k):
            return opened.search(q, k, threads=request["threads"])
    else:
        catalog = opened.catalog if mode == "product_search" else opened

        def search(q, k):
            return catalog.search(q, k)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        search(queries[:1], 5)
        times.append(1e3 * (time.perf_counter() - start))
    found = search(queries, 1)
    after_search = _memory()
    if mode.startswith("usearch_view"):
        # Synthetic catalogs number their images 1, 2, ... product after product.
        per = request["images_per_product"]
        found_keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)[:, 0]
        hits = sum((int(f) - 1) // per == (k - 1) // per for f, k in zip(found_keys, request["keys"]))
    else:
        hits = sum(bool(m) and m[0].product_id == want for m, want in zip(found, request["expected"]))
        opened.close()
    return {"open_ms": open_ms, "first_search_ms": times[0], "second_search_ms": times[1], "top1_hits": hits,
            "queries": len(queries),
            "before": before, "after_open": after_open, "after_search": after_search}


# --- report ----------------------------------------------------------------------------


def environment() -> dict:
    from snapmatch.sdk.catalog._usearch import usearch

    memory = None
    try:
        with open("/proc/meminfo") as meminfo:
            memory = int(meminfo.readline().split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": memory,
        "usearch": usearch.__version__,
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def format_table(results: list[dict]) -> str:
    lines = [
        f"{'vectors':>9} {'dtype':>5} {'ea':>4} {'insert s':>9} {'base s':>8} {'base MB':>9} {'sqlite MB':>10} "
        f"{'builder RSS MB':>14}"
    ]
    for r in results:
        b = r["build"]
        lines.append(
            f"{r['size']:>9} {r['vector_dtype']:>5} {b['expansion_add']:>4} {b['insert_s']:>9.1f} "
            f"{b['base_build_s']:>8.1f} {b['base_bytes'] / 1e6:>9.1f} {b['sqlite_bytes'] / 1e6:>10.1f} "
            f"{b['builder_peak_rss_mb']:>14.0f}" + ("  (reused)" if b.get("reused") else "")
        )
    lines.append("")
    lines.append(
        f"{'vectors':>9} {'mode':<19} {'open ms med':>11} {'max':>8} {'RSS before':>10} {'after open':>10} "
        f"{'anon +':>7} {'file +':>7} {'1st search ms':>13} {'2nd':>6} {'cached':>6} {'top1':>5}"
    )
    for r in results:
        for mode, m in r["open"].items():
            anon = _delta(m["after_open_anon_mb"], m["before_anon_mb"])
            file = _delta(m["after_open_file_mb"], m["before_file_mb"])
            cached = "-" if m["base_resident_before"] is None else f"{m['base_resident_before']:.0%}"
            top1 = f"{m['top1_hits']}/{m['queries']}"
            lines.append(
                f"{r['size']:>9} {mode:<19} {m['open_ms']['median']:>11.2f} {m['open_ms']['max']:>8.2f} "
                f"{_mb(m['before_rss_mb']):>10} {_mb(m['after_open_rss_mb']):>10} {_mb(anon):>7} {_mb(file):>7} "
                f"{m['first_search_ms']['median']:>13.2f} {m['second_search_ms']['median']:>6.2f} "
                f"{cached:>6} {top1:>5}"
            )
    found = ratios(results)
    if found:
        small, large = min(r["size"] for r in results), max(r["size"] for r in results)
        lines.append("")
        lines.append(f"open({large}) / open({small}), medians: " + ", ".join(f"{m} {v:.2f}x" for m, v in found.items()))
        added = ", ".join(f"{m} {v:.1f}" for m, v in slopes(results).items())
        lines.append(f"open ms added per million vectors: {added}")
    return "\n".join(lines)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def parse_size(text: str) -> int:
    """'10k' -> 10000, '1M' -> 1000000, '2500' -> 2500."""
    text = text.strip()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = int(round(float(number) * scale))
    except ValueError:
        raise InvalidArgumentError(f"not a size: {text!r} (examples: 10k, 1M, 2500)") from None
    if value < 1:
        raise InvalidArgumentError(f"a size must be positive, not {text!r}")
    return value


def report(sizes: list[int], out: Path, *, command: str, log=None, **options) -> dict:
    """Run the open-time benchmark (options as for `run`), write OUT/open_time.json and return the report."""
    started, env = time.time(), environment()
    results = run(sizes, log=log, **options)
    payload = {
        "benchmark": "open_time",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": time.time() - started,
        "command": command,
        "environment": env,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "results": results,
        "ratios": ratios(results),
        "open_ms_per_million_vectors": slopes(results),
        "notes": [
            "every open runs in a fresh Python process; imports are done before the clock starts",
            "warm modes: the catalog's files are in the page cache (just built or read); readonly_evicted drops "
            "them with posix_fadvise(DONTNEED), which cannot reach caches below the OS",
            "catalogs of up to 20000 vectors are searched exactly (Catalog exact_below), larger ones through HNSW",
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def _child_main(argv: Sequence[str]) -> int:
    """`python -m snapmatch.benchmarks.open_time --child REQUEST`: one timed open, in a fresh process."""
    if argv[:1] != ["--child"] or len(argv) != 2:
        print("this module runs the timed child of `snapmatch benchmark open-time`; run that instead", file=sys.stderr)
        return 2
    print(json.dumps(_child(json.loads(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
