"""Peak resident memory of a process that serves lookups: the model plus a large catalog.

The process is fresh (nothing else in it): it imports snapmatch, loads the
model, opens the catalog read-only (memory-mapped), then embeds real photos
and searches the catalog `queries` times. Resident memory is read from
/proc/self/status at each step (anonymous and file-backed separately: mapped
index pages are file-backed and the kernel may drop them under pressure) and
the peak (VmHWM) at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODULE = "snapmatch.benchmarks.memory"
CHILD_TIMEOUT_S = 1800


def measure(catalog: str | os.PathLike, model: str | os.PathLike, images: list[str], *, queries: int = 1000,
            threads: int = 1) -> dict:
    """Run the serving process once and return its memory at each step."""
    request = {"catalog": str(Path(catalog).resolve()), "model": str(Path(model).resolve()), "images": images,
               "queries": queries, "threads": threads}
    done = subprocess.run([sys.executable, "-m", MODULE, json.dumps(request)], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory measurement failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def status() -> dict:
    """This process's resident memory in MB: now (total, anonymous, file-backed) and its peak."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    found = dict.fromkeys(fields.values())
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name in fields:
                    found[fields[name]] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return found


def _serve(request: dict) -> dict:
    steps = {"start": status()}
    from snapmatch.sdk.catalog.catalog import Catalog
    from snapmatch.sdk.model.embedder import Embedder

    steps["imported"] = status()
    embedder = Embedder(request["model"], threads=request["threads"])
    steps["model_loaded"] = status()
    catalog = Catalog.open(request["catalog"], readonly=True, threads=request["threads"])
    steps["catalog_opened"] = status()
    vectors = embedder.embed(request["images"])
    steps["photos_embedded"] = status()
    started = time.perf_counter()
    for i in range(request["queries"]):
        catalog.search(vectors[i % len(vectors)][None], 5)
    seconds = time.perf_counter() - started
    steps["after_searches"] = status()
    manifest = catalog.manifest
    base = catalog.folder / manifest.base.file if manifest.base else None
    catalog.close()
    return {
        "steps": steps,
        "peak_rss_mb": steps["after_searches"]["peak"],
        "base_file_mb": base.stat().st_size / 1e6 if base else 0.0,
        "model_file_mb": Path(request["model"]).stat().st_size / 1e6,
        "queries": request["queries"],
        "search_ms_mean": 1e3 * seconds / max(request["queries"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    print(json.dumps(_serve(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
