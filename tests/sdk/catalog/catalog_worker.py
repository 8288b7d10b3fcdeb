"""Child processes for tests/sdk/catalog/test_concurrency.py: ``python -m tests.sdk.catalog.catalog_worker MODE ...``.

MODE reader FOLDER DIR      open FOLDER read-only and search in a loop while the
                            test process writes; check every result against the
                            writer's logs in DIR; write DIR/reader.json; exit 1
                            on any inconsistency.
MODE hold FOLDER DIR [ro]   open FOLDER as the writer (read-only with "ro"), write
                            DIR/ready, then wait (until killed, or stdin closes).
MODE open FOLDER DIR [ro]   try to open FOLDER (read-only with "ro"), print JSON
                            {"ok", "error", "message", "products"} and exit 0.
MODE open-late FOLDER DIR   open FOLDER as the writer, but stall between reading
                            the manifest and taking the lock (DIR/waiting, then
                            until DIR/go exists): scheduling that the OS may
                            impose on any process, made deterministic.
MODE reader-late FOLDER DIR open FOLDER read-only, stalling in the same way
                            between reading the manifest and checking its file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from tests.sdk.catalog.crash_worker import vectors_for

DIM = 32
STABLE = [f"s{i}" for i in range(30)]  # never removed by the writer
CHURN = [f"c{i}" for i in range(30)]  # present at the start; the writer removes some


def read_lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line.split() for line in text.split("\n")[:-1]]


class WriterLogs:
    """What the writer has started and finished, as read from DIR (each line written after the fact)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.add_started: set[str] = set()
        self.added: dict[str, int] = {}
        self.remove_started: set[str] = set()
        self.removed: set[str] = set()

    def read(self) -> "WriterLogs":
        logs = WriterLogs(self.folder)
        logs.add_started = {w[0] for w in read_lines(self.folder / "add-started.log")}
        logs.added = {w[0]: int(w[1]) for w in read_lines(self.folder / "added.log")}
        logs.remove_started = {w[0] for w in read_lines(self.folder / "remove-started.log")}
        logs.removed = {w[0] for w in read_lines(self.folder / "removed.log")}
        return logs


def run_reader(folder: Path, work: Path) -> int:
    from snapmatch.sdk.catalog.catalog import Catalog

    catalog = Catalog.open(folder, readonly=True)
    (work / "reader-ready").write_text("ready\n")
    logs = WriterLogs(work)
    rng = np.random.default_rng(7)
    cache: dict[tuple[str, int], np.ndarray] = {}

    def vector(product: str, index: int) -> np.ndarray:
        if (product, index) not in cache:
            cache[(product, index)] = vectors_for(product, index, 1, DIM)[0]
        return cache[(product, index)]

    searches = queries_done = 0
    problems: list[str] = []
    generations: set[int] = set()
    first_found: dict[str, int] = {}
    final = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        final = (work / "stop").exists()  # the writer made its last change before this
        before = logs.read()
        expect = list(STABLE) + [p for p in before.added if p not in before.remove_started]
        added_last = {p: before.added.get(p, 2) - 1 for p in expect}
        gone = sorted(before.removed)
        if len(gone) > 40:
            gone = [str(p) for p in rng.choice(gone, size=40, replace=False)]
        queries = [vector(p, added_last[p]) for p in expect] + [vector(p, 0) for p in gone]
        queries.append(rng.standard_normal(DIM).astype(np.float32))
        queries[-1] /= np.linalg.norm(queries[-1])
        results = catalog.search(np.stack(queries), k=5)
        after = logs.read()
        searches += 1
        queries_done += len(queries)
        (work / "progress.tmp").write_text(str(searches))
        os.replace(work / "progress.tmp", work / "progress")
        generations.add(catalog.manifest.generation)
        universe = set(STABLE) | set(CHURN) | after.add_started
        for product, matches in zip(expect, results):
            if product in after.remove_started:
                continue  # removed while we searched: it may or may not be there
            if not matches or matches[0].product_id != product or matches[0].score <= 0.99:
                problems.append(f"search {searches}: {product} (added before the search) not top-1: {matches[:2]}")
            else:
                first_found.setdefault(product, searches)
        for product, matches in zip(gone, results[len(expect):]):
            if any(m.product_id == product for m in matches):
                problems.append(f"search {searches}: {product} was removed before the search but found: {matches}")
        for matches in results:
            scores = [m.score for m in matches]
            if scores != sorted(scores, reverse=True):
                problems.append(f"search {searches}: scores not sorted: {matches}")
            if len({m.product_id for m in matches}) != len(matches):
                problems.append(f"search {searches}: a product twice: {matches}")
            for m in matches:
                if m.product_id not in universe:
                    problems.append(f"search {searches}: {m.product_id} was never added: {matches}")
                if m.name != f"name {m.product_id}":
                    problems.append(f"search {searches}: {m.product_id} has the name {m.name!r}")
        if final:
            break
    catalog.close()
    summary = {
        "searches": searches,
        "queries": queries_done,
        "generations": sorted(generations),
        "final_round": final,
        "found": first_found,
        "problems": problems[:50],
        "problem_count": len(problems),
    }
    (work / "reader.json").write_text(json.dumps(summary, indent=1))
    return 1 if problems or not final else 0


def run_hold(folder: Path, work: Path, readonly: bool = False) -> int:
    from snapmatch.sdk.catalog.catalog import Catalog

    catalog = Catalog.open(folder, readonly=readonly)
    catalog.products()
    (work / "ready").write_text("ready\n")
    sys.stdin.read()  # until the test closes our stdin, or kills us
    catalog.close()
    return 0


def run_open(folder: Path, work: Path, readonly: bool) -> int:
    from snapmatch.sdk.catalog.catalog import Catalog

    try:
        catalog = Catalog.open(folder, readonly=readonly)
    except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
        print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
        return 0
    products = [p.id for p in catalog.products()]
    catalog.close()
    print(json.dumps({"ok": True, "error": None, "message": "", "products": products}))
    return 0


def stall(work: Path) -> None:
    (work / "waiting").write_text("waiting\n")
    deadline = time.monotonic() + 60
    while not (work / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.005)


def run_open_late(folder: Path, work: Path) -> int:
    """Open as the writer, stalled after open() read the manifest and before it took the lock."""
    from snapmatch.sdk.catalog import catalog as catalog_module

    original = catalog_module.WriterLock.acquire

    def acquire(self, wait=0.0):
        stall(work)
        return original(self, wait)

    catalog_module.WriterLock.acquire = acquire
    return run_open(folder, work, readonly=False)


def run_reader_late(folder: Path, work: Path) -> int:
    """Open read-only, stalled after _load_state read the manifest and before it looked at the file's inode."""
    from snapmatch.sdk.catalog import catalog as catalog_module

    original = catalog_module.read_manifest
    calls = []

    def read_manifest(folder_):
        manifest = original(folder_)
        calls.append(1)
        if len(calls) == 2:  # the first is open() itself, the second _load_state()
            stall(work)
        return manifest

    catalog_module.read_manifest = read_manifest
    return run_open(folder, work, readonly=True)


def main(argv: list[str]) -> int:
    mode, folder, work = argv[0], Path(argv[1]), Path(argv[2])
    if mode == "reader":
        return run_reader(folder, work)
    if mode == "hold":
        return run_hold(folder, work, readonly=argv[3:] == ["ro"])
    if mode == "open":
        return run_open(folder, work, readonly=argv[3:] == ["ro"])
    if mode == "open-late":
        return run_open_late(folder, work)
    if mode == "reader-late":
        return run_reader_late(folder, work)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
