"""Concurrency of the on-disk catalog: threads, a second process, and the writer lock.

DESIGN.md ("On-disk catalog"): one writer at a time (an OS file lock), any
number of readers; inside a process, search is safe while another thread
writes; readers in other processes see commits (SQLite's data_version) and
compactions (the manifest). Real threads, real processes, real files.

SNAPMATCH_CONCURRENCY_SUMMARY: a file each test appends its summary line to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from snapmatch.sdk.catalog.catalog import Catalog
from snapmatch.sdk.errors import CatalogLockedError
from snapmatch.sdk.catalog.manifest import read_manifest
from tests.sdk.catalog.catalog_worker import CHURN, DIM, STABLE
from tests.sdk.catalog.crash_worker import vectors_for

ROOT = Path(__file__).resolve().parents[3]
WAIT = 60.0


def summary(line: str) -> None:
    print(f"\n{line}")
    path = os.environ.get("SNAPMATCH_CONCURRENCY_SUMMARY")
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")


def vector(product: str, index: int = 0) -> np.ndarray:
    return vectors_for(product, index, 1, DIM)[0]


def worker(mode: str, folder: Path, work: Path, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sdk.catalog.catalog_worker", mode, str(folder), str(work), *extra],
        cwd=ROOT, **popen,
    )


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} before writing {path.name}")
        if time.monotonic() > deadline:
            raise AssertionError(f"worker did not write {path.name} within {timeout}s")
        time.sleep(0.005)


# --- threads in one process --------------------------------------------------------------


class History:
    """When each write began and returned (time.monotonic), as the writer thread records them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.add_started: dict[str, float] = {}
        self.remove_started: dict[str, float] = {}
        self.remove_returned: dict[str, float] = {}
        self.images: list[tuple[str, int, float]] = []  # (product, image index, add returned)


@pytest.mark.parametrize("exact_below", [20_000, 0], ids=["exact", "hnsw"])
def test_threads_search_while_a_thread_adds_removes_and_compacts(tmp_path, exact_below):
    """3 reader threads search while a writer thread adds, adds images, removes and compacts.

    Every result must be consistent with the writes around it: a product found
    was added before the search ended and not removed before it began; a
    product whose add returned before the search began is found by its own
    vector (top-1, score > 0.99) unless its removal began during the search;
    scores are sorted; no product twice; no exception anywhere.
    exact_below=0 makes the base searched through usearch's HNSW graph.
    """
    operations = 120  # writes, in a seeded order; the readers search until the writer is done
    catalog = Catalog.create(tmp_path / "catalog", model_id="m", dim=DIM, compact_at=48, exact_below=exact_below)
    history = History()
    for product in STABLE:
        history.add_started[product] = 0.0
        catalog.add(product, vectors_for(product, 0, 2, DIM), name=f"name {product}")
        history.images += [(product, 0, 0.0), (product, 1, 0.0)]
    catalog.compact()
    stop = threading.Event()
    errors: list[str] = []
    problems: list[str] = []
    counts = {"searches": 0, "queries": 0, "adds": 0, "add_images": 0, "removes": 0, "compactions": 0}

    def writer() -> None:
        rng = np.random.default_rng(1)
        live: dict[str, int] = {}
        serial = 0
        try:
            for _ in range(operations):
                roll = rng.random()
                if roll < 0.5 or len(live) < 5:
                    product, count = f"d{serial}", int(rng.integers(1, 4))
                    serial += 1
                    history.add_started[product] = time.monotonic()
                    catalog.add(product, vectors_for(product, 0, count, DIM), name=f"name {product}")
                    returned = time.monotonic()
                    with history.lock:
                        history.images += [(product, i, returned) for i in range(count)]
                    live[product] = count
                    counts["adds"] += 1
                elif roll < 0.65:
                    product = sorted(live)[int(rng.integers(len(live)))]
                    start = live[product]
                    catalog.add(product, vectors_for(product, start, 2, DIM), new_product=False)
                    returned = time.monotonic()
                    with history.lock:
                        history.images += [(product, start, returned), (product, start + 1, returned)]
                    live[product] = start + 2
                    counts["add_images"] += 1
                elif roll < 0.95:
                    product = sorted(live)[int(rng.integers(len(live)))]
                    history.remove_started[product] = time.monotonic()
                    catalog.remove(product)
                    history.remove_returned[product] = time.monotonic()
                    del live[product]
                    counts["removes"] += 1
                else:
                    catalog.compact()
                    counts["compactions"] += 1
                time.sleep(0.002)  # let the readers in between writes, too
        except BaseException:  # noqa: BLE001 - reported by the test
            errors.append(f"writer: {traceback.format_exc()}")
        finally:
            stop.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        searches = queries_done = 0
        try:
            while not stop.is_set():
                with history.lock:
                    picks = [history.images[int(i)] for i in rng.integers(len(history.images), size=3)]
                queries = [vector(p, i) for p, i, _ in picks]
                noise = rng.standard_normal(DIM).astype(np.float32)
                queries.append(noise / np.linalg.norm(noise))
                began = time.monotonic()
                results = catalog.search(np.stack(queries), k=5)
                ended = time.monotonic()
                searches += 1
                queries_done += len(queries)
                for (product, index, returned), matches in zip(picks + [(None, 0, 0.0)], results):
                    scores = [m.score for m in matches]
                    if scores != sorted(scores, reverse=True):
                        problems.append(f"scores not sorted: {matches}")
                    if len({m.product_id for m in matches}) != len(matches):
                        problems.append(f"a product twice: {matches}")
                    for m in matches:
                        if history.add_started.get(m.product_id, float("inf")) > ended:
                            problems.append(f"{m.product_id} found before its add began: {matches}")
                        if history.remove_returned.get(m.product_id, float("inf")) < began:
                            problems.append(f"{m.product_id} found after its removal returned: {matches}")
                        if m.name != f"name {m.product_id}":
                            problems.append(f"{m.product_id} came with the name {m.name!r}")
                    if product is None or returned >= began:
                        continue
                    if history.remove_started.get(product, float("inf")) > ended:
                        if not matches or matches[0].product_id != product or matches[0].score <= 0.99:
                            problems.append(f"{product} image {index} (added before the search) not top-1: {matches}")
        except BaseException:  # noqa: BLE001 - reported by the test
            errors.append(f"reader {seed}: {traceback.format_exc()}")
        finally:
            with history.lock:
                counts["searches"] += searches
                counts["queries"] += queries_done

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    stop.set()
    stats = catalog.stats()
    catalog.close()
    summary(
        f"concurrency (threads, {'hnsw' if exact_below == 0 else 'exact'}): {counts['searches']} searches "
        f"({counts['queries']} queries), {len(problems)} inconsistencies, {len(errors)} exceptions; writes "
        f"{counts['adds']} adds, {counts['add_images']} add_images, {counts['removes']} removes, "
        f"{counts['compactions']} explicit compactions, generation {stats['generation']}"
    )
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    assert not errors, "\n".join(errors)
    assert not problems, "\n".join(problems[:20])
    assert counts["searches"] > 20 and counts["removes"] > 8 and stats["generation"] > 3, (counts, stats)


# --- a reader in another process ---------------------------------------------------------


def _append(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def wait_for_searches(work: Path, reader: subprocess.Popen, more: int) -> None:
    """Wait until the reader process has finished `more` searches that began after this call."""

    def done() -> int:
        try:
            return int((work / "progress").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    target = done() + more + 1  # the search running now may have begun before
    deadline = time.monotonic() + WAIT
    while done() < target:
        if reader.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the reader stopped searching (exit code {reader.poll()})")
        time.sleep(0.002)


def test_reader_process_searches_while_the_writer_compacts(tmp_path):
    """A read-only process searches in a loop while this process removes, adds and compacts.

    The reader (tests/sdk/catalog/catalog_worker.py reader) checks every result against
    the logs this writer appends after each call returns: products added
    (before the search) are found, products removed (before it) are not, no
    unknown product, sorted and without duplicates. It must see several base
    generations (it follows compactions) and, in a last round after the writer
    stopped, find every product added since, the last ones without a compaction.
    """
    folder, work = tmp_path / "catalog", tmp_path / "work"
    work.mkdir()
    catalog = Catalog.create(folder, model_id="m", dim=DIM, compact_at=10**6)
    for product in STABLE + CHURN:
        catalog.add(product, vectors_for(product, 0, 2, DIM), name=f"name {product}")
    catalog.compact()
    reader = worker("reader", folder, work, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(work / "reader-ready", reader)
        wait_for_searches(work, reader, 1)  # it has searched generation 1
        rng = np.random.default_rng(3)
        churn = list(CHURN)
        serial = 0

        def add(product: str) -> None:
            _append(work / "add-started.log", product)
            catalog.add(product, vectors_for(product, 0, 3, DIM), name=f"name {product}")
            _append(work / "added.log", f"{product} 3")

        def remove(product: str) -> None:
            _append(work / "remove-started.log", product)
            catalog.remove(product)
            _append(work / "removed.log", product)

        for round_ in range(8):
            for _ in range(10 if round_ == 4 else 2):  # round 4 removes > 25% of the base: a full rebuild
                remove(churn.pop(int(rng.integers(len(churn)))))
            for _ in range(3):
                add(f"n{serial}")
                churn.append(f"n{serial}")
                serial += 1
            catalog.compact()
            wait_for_searches(work, reader, 2)  # the reader searches this generation
        for i in range(5):
            add(f"late{i}")  # into the delta only
        generation = catalog.manifest.generation
        (work / "stop").write_text("stop\n")
        _, stderr = reader.communicate(timeout=WAIT)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        catalog.close()
    result = json.loads((work / "reader.json").read_text()) if (work / "reader.json").exists() else {}
    summary(
        f"concurrency (reader process): {result.get('searches')} searches ({result.get('queries')} queries), "
        f"{result.get('problem_count')} inconsistencies; generations seen {result.get('generations')} "
        f"of 1..{generation}; exit code {reader.returncode}"
    )
    assert reader.returncode == 0, f"reader exited {reader.returncode}: {result.get('problems')}\n{stderr[-3000:]}"
    assert result["final_round"] and result["problem_count"] == 0
    assert result["generations"] == list(range(1, generation + 1)), f"the reader missed compactions: {result}"
    missed = [f"late{i}" for i in range(5) if f"late{i}" not in result["found"]]
    assert not missed, f"the reader missed products added after the last compaction: {missed}"


# --- the writer lock ---------------------------------------------------------------------


def test_writer_lock_across_processes(tmp_path):
    folder, work = tmp_path / "catalog", tmp_path / "work"
    work.mkdir()
    with Catalog.create(folder, model_id="m", dim=DIM) as catalog:
        catalog.add("a", vectors_for("a", 0, 2, DIM), name="name a")
    holder = worker("hold", folder, work, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_file(work / "ready", holder)
        # A second writer, in this process and in a third one, is refused and told who holds the lock.
        with pytest.raises(CatalogLockedError, match=rf"being changed by pid {holder.pid}\b"):
            Catalog.open(folder)
        other = worker("open", folder, work, stdout=subprocess.PIPE, text=True)
        out, _ = other.communicate(timeout=WAIT)
        answer = json.loads(out)
        assert answer["error"] == "CatalogLockedError" and f"being changed by pid {holder.pid}" in answer["message"], answer
        # Readers are not refused, here or in another process.
        with Catalog.open(folder, readonly=True) as reader:
            assert reader.search(vector("a"), k=1)[0][0].product_id == "a"
        other = worker("open", folder, work, "ro", stdout=subprocess.PIPE, text=True)
        out, _ = other.communicate(timeout=WAIT)
        assert json.loads(out) == {"ok": True, "error": None, "message": "", "products": ["a"]}
        # The holder dies without closing anything: the OS drops its flock.
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=WAIT)
        assert holder.returncode == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with Catalog.open(folder) as catalog:
        catalog.add("b", vectors_for("b", 0, 1, DIM), name="name b")
        # Only one writer inside a process too.
        with pytest.raises(CatalogLockedError, match=rf"being changed by pid {os.getpid()}\b"):
            Catalog.open(folder)
        assert [p.id for p in catalog.products()] == ["a", "b"]
    # A writer that closes releases the lock at once.
    Catalog.open(folder).close()


def test_writer_lock_released_when_holder_exits_normally(tmp_path):
    folder, work = tmp_path / "catalog", tmp_path / "work"
    work.mkdir()
    Catalog.create(folder, model_id="m", dim=DIM).close()
    holder = worker("hold", folder, work, stdin=subprocess.PIPE)
    wait_for_file(work / "ready", holder)
    holder.communicate(input=b"", timeout=WAIT)  # closes stdin: the holder closes the catalog and exits
    assert holder.returncode == 0
    Catalog.open(folder).close()


# --- races made deterministic ------------------------------------------------------------


def _catalog(folder: Path, compacted: bool = True) -> None:
    with Catalog.create(folder, model_id="m", dim=DIM) as catalog:
        for product in STABLE[:10]:
            catalog.add(product, vectors_for(product, 0, 2, DIM), name=f"name {product}")
        if compacted:
            catalog.compact()


@pytest.mark.parametrize(
    "compaction",
    [
        "first",  # the stale manifest had no base yet
        "later",  # the stale manifest names a base that compaction retired
    ],
)
def test_writer_open_racing_a_compaction_keeps_the_current_base(tmp_path, compaction):
    """Writer B reads the manifest, is descheduled, writer A compacts and closes, then B takes the lock."""
    folder, work = tmp_path / "catalog", tmp_path / "work"
    work.mkdir()
    _catalog(folder, compacted=compaction == "later")
    late = worker("open-late", folder, work, stdout=subprocess.PIPE, text=True)
    try:
        wait_for_file(work / "waiting", late)
        with Catalog.open(folder) as catalog:  # writer A
            catalog.remove(STABLE[0])
            catalog.add("x", vectors_for("x", 0, 2, DIM), name="name x")
            catalog.compact()
        (work / "go").write_text("go\n")
        out, _ = late.communicate(timeout=WAIT)
    finally:
        if late.poll() is None:
            late.kill()
            late.wait()
    answer = json.loads(out)
    manifest = read_manifest(folder)
    assert (folder / manifest.base.file).exists(), f"the current base {manifest.base.file} was deleted: {answer}"
    assert answer["ok"], answer
    with Catalog.open(folder) as catalog:
        assert catalog.search(vector("x"), k=1)[0][0].product_id == "x"


def test_reader_open_racing_a_compaction_retries(tmp_path):
    """Reader C reads manifest generation 1, is descheduled, the writer compacts to 2 and deletes base 1."""
    folder, work = tmp_path / "catalog", tmp_path / "work"
    work.mkdir()
    _catalog(folder)
    with Catalog.open(folder) as catalog:
        late = worker("reader-late", folder, work, stdout=subprocess.PIPE, text=True)
        try:
            wait_for_file(work / "waiting", late)
            catalog.remove(STABLE[0])
            catalog.add("x", vectors_for("x", 0, 2, DIM), name="name x")
            catalog.compact()
            (work / "go").write_text("go\n")
            out, _ = late.communicate(timeout=WAIT)
        finally:
            if late.poll() is None:
                late.kill()
                late.wait()
    answer = json.loads(out)
    assert answer["ok"], answer
    assert "x" in answer["products"] and STABLE[0] not in answer["products"]
