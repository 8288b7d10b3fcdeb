"""Crash safety of the on-disk catalog: SIGKILL a writer process at random points, then check the catalog.

DESIGN.md ("On-disk catalog"): every change is durable when its call returns,
and a crash at any step leaves a catalog that opens and answers exactly as
before or as after the interrupted call. A child process
(tests/sdk/catalog/crash_worker.py) changes a catalog and logs, fsynced, each call it
starts and each call that returned; the parent kills it with SIGKILL at a
seeded random moment, then opens the catalog (first read-only, as an app
would while nothing repaired it yet, then as the writer, which recovers) and
checks it against the log:

- it opens, and `PRAGMA integrity_check` is ok;
- the products are exactly those whose add returned and whose remove did not,
  give or take the one call that was in flight: an add or remove is all or
  nothing (a product has exactly the images its adds gave it, never part);
- every product is found as top-1 by its first and last image vector with
  score > 0.99; no removed product is ever found;
- stats() agree with the products, and the writer's recovery leaves no
  temporary or orphan base files.

SNAPMATCH_CRASH_ITERATIONS sets the number of kills of the operations test
(default 40; the compaction test does half as many, at least 4);
SNAPMATCH_CRASH_SEED changes the seed (default 20261124). Each test prints a
summary line (shown with -s) and writes it to crash-summary.txt in its
tmp_path, and appends it to $SNAPMATCH_CRASH_SUMMARY when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from snapmatch.sdk.catalog.catalog import Catalog
from snapmatch.sdk.catalog.manifest import read_manifest
from tests.sdk.catalog.crash_worker import CRASH_POINTS, vectors_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
ITERATIONS = int(os.environ.get("SNAPMATCH_CRASH_ITERATIONS", "40"))
SEED = int(os.environ.get("SNAPMATCH_CRASH_SEED", "20261124"))
WAIT = 30.0  # seconds to wait for a child to reach a step before calling it a failure


# --- the log the worker writes ---------------------------------------------------------


@dataclass(frozen=True)
class Op:
    kind: str  # add, add_images, remove, compact
    product: str = ""
    start: int = 0
    count: int = 0

    @classmethod
    def parse(cls, words: list[str]) -> "Op":
        kind, rest = words[0], words[1:]
        if kind in ("add", "add_images"):
            return cls(kind, rest[0], int(rest[1]), int(rest[2]))
        if kind == "remove":
            return cls(kind, rest[0])
        return cls(kind)


@dataclass
class LogState:
    ready: bool = False
    done: list[Op] = field(default_factory=list)
    inflight: Op | None = None
    errors: list[str] = field(default_factory=list)


def read_log(path: Path) -> LogState:
    state = LogState()
    if not path.exists():
        return state
    text = path.read_text()
    lines = text.split("\n")[:-1]  # a last line without its newline was never completed
    for line in lines:
        words = line.split()
        if words == ["ready"]:
            state.ready = True
        elif words[0] == "begin":
            if state.inflight is not None:
                state.errors.append(f"log: {line!r} while {state.inflight} had not returned")
            state.inflight = Op.parse(words[1:])
        elif words[0] == "done":
            op = Op.parse(words[1:])
            if op != state.inflight:
                state.errors.append(f"log: {line!r} does not match the call in flight {state.inflight}")
            state.done.append(op)
            state.inflight = None
    return state


def log_lines(path: Path, prefix: str) -> int:
    try:
        return path.read_text().count("\n" + prefix)
    except FileNotFoundError:
        return 0


def log_has(path: Path, line: str) -> bool:
    try:
        return f"{line}\n" in path.read_text()
    except FileNotFoundError:
        return False


# --- the expected catalog ----------------------------------------------------------------


@dataclass
class Model:
    """What the catalog must hold: product -> image count, and every product ever removed."""

    dim: int
    products: dict[str, int] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    _vectors: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def apply(self, op: Op) -> str | None:
        if op.kind == "add":
            if op.product in self.products or op.product in self.removed:
                return f"worker added {op.product} twice"
            self.products[op.product] = op.count
        elif op.kind == "add_images":
            if self.products.get(op.product) != op.start:
                return f"worker added images {op.start}.. to {op.product}, which has {self.products.get(op.product)}"
            self.products[op.product] = op.start + op.count
        elif op.kind == "remove":
            if self.products.pop(op.product, None) is None:
                return f"worker removed {op.product}, which is not in the model"
            self.removed.add(op.product)
        return None

    def vector(self, product: str, index: int) -> np.ndarray:
        key = (product, index)
        if key not in self._vectors:
            self._vectors[key] = vectors_for(product, index, 1, self.dim)[0]
        return self._vectors[key]


def outcomes(model: Model, op: Op | None) -> list[dict[str, int]]:
    """The product tables the catalog may hold: before and after the call in flight."""
    before = dict(model.products)
    if op is None or op.kind == "compact":
        return [before]
    after = dict(before)
    if op.kind in ("add", "add_images"):
        after[op.product] = op.start + op.count
    else:
        after.pop(op.product, None)
    return [before, after]


def check_open_catalog(
    catalog: Catalog, model: Model, allowed: list[dict[str, int]], label: str
) -> tuple[list[str], dict]:
    """Check one opened catalog; returns (failures, the product table it holds)."""
    failures: list[str] = []
    actual = {p.id: p.image_count for p in catalog.products()}
    if actual not in allowed:
        expected = allowed[-1]
        missing = sorted(set(allowed[0]) & set(expected) - set(actual))[:5]
        extra = sorted(set(actual) - set(allowed[0]) - set(expected))[:5]
        counts = sorted(
            (p, actual[p], [a.get(p) for a in allowed]) for p in actual if all(a.get(p) != actual[p] for a in allowed)
        )[:5]
        failures.append(
            f"{label}: products differ from the log: missing {missing}, never added {extra}, counts {counts}"
        )
    present = sorted(actual)
    queries, owners = [], []
    for product in present:
        for index in {0, actual[product] - 1}:
            queries.append(model.vector(product, index))
            owners.append(product)
    gone = sorted(model.removed)
    queries += [model.vector(product, 0) for product in gone]
    if queries:
        results = catalog.search(np.stack(queries), k=5)
        for owner, matches in zip(owners, results):
            if not matches or matches[0].product_id != owner or matches[0].score <= 0.99:
                failures.append(f"{label}: {owner} is not top-1 for its own image: {matches[:2]}")
        for product, matches in zip(gone, results[len(owners):]):
            if any(m.product_id == product for m in matches):
                failures.append(f"{label}: removed product {product} was found: {matches}")
        for matches in results:
            scores = [m.score for m in matches]
            if scores != sorted(scores, reverse=True) or len({m.product_id for m in matches}) != len(matches):
                failures.append(f"{label}: unsorted or duplicated result {matches}")
                break
    stats = catalog.stats()
    if stats["products"] != len(actual) or stats["images"] != sum(actual.values()):
        failures.append(f"{label}: stats {stats} disagree with products() ({len(actual)}, {sum(actual.values())})")
    # A reader does not recover: after a compaction killed between the manifest
    # replace and the retirement of tombstones, its count includes retired ones
    # (test_reader_stats_after_compaction_killed_before_retire). The writer has recovered.
    if not catalog.readonly and stats["images"] != stats["base_vectors"] - stats["tombstones"] + stats["delta_vectors"]:
        failures.append(f"{label}: stats do not add up (images != base - tombstones + delta): {stats}")
    if stats["generation"] != catalog.manifest.generation:
        failures.append(f"{label}: stats generation {stats} != manifest {catalog.manifest.generation}")
    return failures, actual


def integrity(folder: Path) -> list[str]:
    """PRAGMA integrity_check on its own connection, closed at once.

    (A sqlite3 connection left to the garbage collector stays open for a
    while: it would keep the WAL index of the killed process alive.)
    """
    conn = sqlite3.connect(f"{(folder / 'catalog.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.Error as exc:
        return [f"integrity_check failed: {exc!r}"]
    finally:
        conn.close()
    return [] if result == "ok" else [f"integrity_check: {result}"]


def check_catalog(folder: Path, model: Model, inflight: Op | None) -> list[str]:
    """Open the killed catalog read-only, then as the writer; check both; move the model to what it holds."""
    allowed = outcomes(model, inflight)
    failures: list[str] = []
    failures += integrity(folder)
    held = None
    for label, readonly in (("reader", True), ("writer", False)):
        try:
            catalog = Catalog.open(folder, readonly=readonly)
        except Exception as exc:  # noqa: BLE001 - any failure to open is what this test looks for
            failures.append(f"{label}: open failed: {exc!r}")
            return failures
        try:
            found, actual = check_open_catalog(catalog, model, allowed, label)
            failures += found
            if held is not None and actual != held:
                failures.append(f"writer recovery changed the products the reader saw: {held} -> {actual}")
            held = actual
            if not readonly:
                names = sorted(os.listdir(folder))
                base = catalog.manifest.base.file if catalog.manifest.base else None
                adaptation = catalog.manifest.adaptation.file if catalog.manifest.adaptation else None
                stray = [n for n in names if n.endswith(".tmp") or (re.match(r"base-\d+\.usearch$", n) and n != base)
                         or (re.match(r"adapt-\d+\.npz$", n) and n != adaptation)]
                if stray:
                    failures.append(f"writer: recovery left stray files {stray}")
                if base is not None and base not in names:
                    failures.append(f"writer: manifest base {base} is missing")
        finally:
            catalog.close()
    if held in allowed:
        model.products = dict(held)
        if inflight is not None and inflight.kind == "remove" and inflight.product not in held:
            model.removed.add(inflight.product)
    return failures


# --- driving the child ---------------------------------------------------------------------


def spawn(mode: str, folder: Path, log: Path, seed: int, prefix: str, stderr: Path) -> subprocess.Popen:
    with open(stderr, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.sdk.catalog.crash_worker", mode, str(folder), str(log), str(seed), prefix],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = WAIT, poll: float = 0.002) -> bool:
    """Poll until predicate() holds (True) or the child exits or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(poll)
    return False


def kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the child; True when it was still running (it died by our signal)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=WAIT)
    return proc.returncode == -signal.SIGKILL


def child_failure(proc: subprocess.Popen, stderr: Path) -> str | None:
    """A child that ended on its own must have exited 0 (only the compact worker ever does)."""
    if proc.returncode in (0, -signal.SIGKILL):
        return None
    return f"worker exited with {proc.returncode}: {stderr.read_text()[-2000:]}"


def report(tmp_path: Path, line: str) -> None:
    print(f"\n{line}")
    (tmp_path / "crash-summary.txt").write_text(line + "\n")
    extra = os.environ.get("SNAPMATCH_CRASH_SUMMARY")
    if extra:
        with open(extra, "a") as handle:
            handle.write(line + "\n")


def snapshot(folder: Path, keep: Path) -> None:
    """Copy the killed catalog aside (before recovery changes it) so a failure can be examined."""
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(folder, keep)


# --- tests -------------------------------------------------------------------------------


def test_sigkill_during_adds_removes_and_compactions(tmp_path):
    """Kill a worker that adds, adds images, removes and compacts (also by itself: compact_at=12).

    The catalog adapts its metric, so writes also refit it (every 8 or more changes): a product found
    top-1 by its own image at score > 0.99 shows base, delta and query under one transform.
    """
    rng = np.random.default_rng(SEED)
    folder = tmp_path / "catalog"
    Catalog.create(folder, model_id="m", dim=32, compact_at=12, adapt=True).close()
    model = Model(dim=32)
    failures: list[str] = []
    kills = 0
    inflight_kinds: Counter = Counter()
    done_kinds: Counter = Counter()
    started = time.monotonic()
    for iteration in range(ITERATIONS):
        log, err = tmp_path / f"log-{iteration}.txt", tmp_path / "stderr.txt"
        proc = spawn("ops", folder, log, int(rng.integers(2**31)), f"p{iteration}", err)
        if rng.random() < 0.15:
            time.sleep(rng.uniform(0.0, 0.6))  # anywhere from start-up through open (and its recovery)
        else:
            # After a random number of calls (progress, not time: the same under load), plus a bit.
            calls = int(rng.integers(0, 60))
            if not wait_for(lambda: log_lines(log, "done ") >= calls and log_has(log, "ready"), proc, poll=0.001):
                failures.append(f"iteration {iteration}: the worker did not get {calls} calls done")
            time.sleep(rng.uniform(0.0, 0.01))
        kills += kill(proc)
        problem = child_failure(proc, err)
        state = read_log(log)
        snapshot(folder, tmp_path / "last-killed")
        found = [problem] if problem else []
        found += state.errors
        for op in state.done:
            error = model.apply(op)
            if error:
                found.append(error)
            done_kinds[op.kind] += 1
        inflight_kinds[state.inflight.kind if state.inflight else ("none" if state.ready else "open")] += 1
        found += check_catalog(folder, model, state.inflight)
        if found:
            failures += [f"iteration {iteration}: {f}" for f in found]
            shutil.copytree(tmp_path / "last-killed", tmp_path / f"failed-{iteration}", dirs_exist_ok=True)
            if any("open failed" in f for f in found):
                break  # nothing after this can be checked
    elapsed = time.monotonic() - started
    with Catalog.open(folder, readonly=True) as catalog:
        stats = catalog.stats()
        refits = catalog.manifest.adaptation is not None
    report(
        tmp_path,
        f"crash test: {kills} kills, {len(failures)} failures ({elapsed:.1f}s; calls that returned "
        f"{dict(done_kinds)}; in flight at the kill {dict(inflight_kinds)}; final {stats})",
    )
    assert kills >= ITERATIONS * 0.9, f"only {kills} of {ITERATIONS} workers were killed"
    if ITERATIONS >= 20:
        assert all(done_kinds[kind] for kind in ("add", "add_images", "remove", "compact")), done_kinds
        assert refits, "the catalog never fitted its metric: the test did not cover refits"
    assert not failures, "\n".join(failures[:20])


STRATEGIES = ("delay", "base tmp file", "new base file", "manifest tmp file", "manifest replaced")


def _reached(folder: Path, strategy: str, generation: int) -> bool:
    names = os.listdir(folder)
    if strategy == "base tmp file":
        return any(n.startswith(".base-") and n.endswith(".tmp") for n in names)
    if strategy == "new base file":
        return f"base-{generation + 1:06d}.usearch" in names
    if strategy == "manifest tmp file":
        return any(n.startswith(".manifest.json.") and n.endswith(".tmp") for n in names)
    return json.loads((folder / "manifest.json").read_text())["generation"] > generation


def _folder_state(folder: Path, generation: int) -> str:
    """Where the killed compaction to generation+1 stopped, seen from the files it left."""
    names = os.listdir(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest["generation"] > generation:
        old = f"base-{generation:06d}.usearch" in names
        return "manifest replaced, old base still there" if old else "manifest replaced, old base deleted"
    if f"base-{generation + 1:06d}.usearch" in names:
        return "new base written, manifest not yet replaced"
    if any(n.startswith(".base-") and n.endswith(".tmp") for n in names):
        return "writing the new base"
    return "before writing the base"


def test_sigkill_during_compaction_of_a_large_base(tmp_path):
    """Kill compact() on a 3000-vector catalog at random delays and the moment it reaches each step.

    The steps (seen from the files): writing the base under a temporary name,
    the base renamed to its final name (the window before the manifest points
    at it), the manifest written aside, the manifest replaced (tombstones not
    yet retired, old base not yet deleted).
    """
    rng = np.random.default_rng(SEED + 1)
    iterations = max(4, ITERATIONS // 2)
    folder = tmp_path / "catalog"
    model = Model(dim=64)
    with Catalog.create(folder, model_id="m", dim=64, compact_at=10**6) as catalog:
        for i in range(150):
            product = f"base_{i}"
            catalog.add(product, vectors_for(product, 0, 20, 64))
            model.products[product] = 20
        began = time.monotonic()
        catalog.compact()
        full_time = time.monotonic() - began
        generation = catalog.manifest.generation
    failures: list[str] = []
    kills = 0
    states: Counter = Counter()
    strategies: Counter = Counter()
    started = time.monotonic()
    for iteration in range(iterations):
        log, err = tmp_path / f"log-{iteration}.txt", tmp_path / "stderr.txt"
        proc = spawn("compact", folder, log, int(rng.integers(2**31)), f"c{iteration}", err)
        strategy = STRATEGIES[iteration % len(STRATEGIES)]
        strategies[strategy] += 1
        if not wait_for(lambda: log_has(log, "begin compact"), proc, poll=0.0005):
            failures.append(f"iteration {iteration}: the worker never began compacting")
        elif strategy == "delay":
            time.sleep(rng.uniform(0.0, 1.3 * full_time))
        else:
            # Kill the moment the compaction reaches a step: poll the folder as fast as we can.
            wait_for(lambda: _reached(folder, strategy, generation), proc, poll=0)
        killed = kill(proc)
        kills += killed
        states[_folder_state(folder, generation) if killed else "completed before the kill"] += 1
        problem = child_failure(proc, err)
        state = read_log(log)
        snapshot(folder, tmp_path / "last-killed")
        found = [problem] if problem else []
        found += state.errors
        for op in state.done:
            error = model.apply(op)
            if error:
                found.append(error)
        found += check_catalog(folder, model, state.inflight)
        if found:
            failures += [f"iteration {iteration}: {f}" for f in found]
            shutil.copytree(tmp_path / "last-killed", tmp_path / f"failed-{iteration}", dirs_exist_ok=True)
            if any("open failed" in f for f in found):
                break
        generation = json.loads((folder / "manifest.json").read_text())["generation"]
    elapsed = time.monotonic() - started
    with Catalog.open(folder, readonly=True) as catalog:
        stats = catalog.stats()
    report(
        tmp_path,
        f"crash test (compaction): {kills} kills, {len(failures)} failures ({elapsed:.1f}s; full compaction "
        f"{full_time * 1000:.0f} ms; kill triggers {dict(strategies)}; "
        f"where the compaction stopped {dict(states)}; final {stats})",
    )
    assert states["new base written, manifest not yet replaced"], (
        f"never killed between the base write and the manifest replace: {dict(states)}"
    )
    assert not failures, "\n".join(failures[:20])


# --- a crash at each step, exactly ---------------------------------------------------------


def _catalog_to_crash(folder: Path, path: str) -> Model:
    """40 products in a base, some removed (tombstones), 5 in the delta: a compaction has everything to do.

    path "full": 15 of 40 products removed, more than a quarter of the base, so
    compact() rebuilds the base; "incremental": 2 removed, it patches a copy.
    """
    model = Model(dim=32)
    with Catalog.create(folder, model_id="m", dim=32, compact_at=10**6) as catalog:
        for i in range(40):
            catalog.add(f"b{i}", vectors_for(f"b{i}", 0, 4, 32))
            model.products[f"b{i}"] = 4
        catalog.compact()
        for i in range(15 if path == "full" else 2):
            catalog.remove(f"b{i}")
            model.apply(Op("remove", f"b{i}"))
        for i in range(5):
            catalog.add(f"d{i}", vectors_for(f"d{i}", 0, 2, 32))
            model.products[f"d{i}"] = 2
    return model


def _crash_at(tmp_path: Path, point: str, product: str) -> LogState:
    folder, log, err = tmp_path / "catalog", tmp_path / "log.txt", tmp_path / "stderr.txt"
    proc = spawn("inject", folder, log, point, product, err)  # type: ignore[arg-type]
    proc.wait(timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL, f"the worker did not die at {point!r}: {err.read_text()[-2000:]}"
    state = read_log(log)
    assert state.inflight is not None and not state.done, f"the worker did not die inside the call: {state}"
    return state


@pytest.mark.parametrize("path", ["incremental", "full"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_at_each_step(tmp_path, point, path):
    """A worker SIGKILLs itself at one step inside add, remove or compact: the catalog answers as before or after."""
    folder = tmp_path / "catalog"
    model = _catalog_to_crash(folder, path)
    before = dict(model.products)
    generation = read_manifest(folder).generation
    state = _crash_at(tmp_path, point, "new" if point.startswith("add") else "b39")
    failures = check_catalog(folder, model, state.inflight)
    assert not failures, "\n".join(failures)
    if not point.startswith("compact"):
        assert model.products == before, "a call killed before its commit left changes behind"
    else:
        assert model.products == before, "an interrupted compaction changed the products"
        replaced = point not in CRASH_POINTS[:2]
        assert read_manifest(folder).generation == generation + replaced
    # The recovered catalog keeps working: the next compaction and add succeed.
    with Catalog.open(folder) as catalog:
        catalog.add("after", vectors_for("after", 0, 2, 32))
        catalog.compact()
    model.products["after"] = 2
    assert not check_catalog(folder, model, None)


def test_reader_stats_after_compaction_killed_before_retire(tmp_path):
    folder = tmp_path / "catalog"
    _catalog_to_crash(folder, "incremental")
    _crash_at(tmp_path, "compact: manifest replaced, before tombstones retire", "b39")
    with Catalog.open(folder, readonly=True) as catalog:
        stats = catalog.stats()
    assert stats["tombstones"] == 0, stats
    assert stats["images"] == stats["base_vectors"] - stats["tombstones"] + stats["delta_vectors"], stats


# --- an interrupted commit while another process has the catalog open -------------------------


def test_interrupted_add_does_not_reappear_later(tmp_path):
    """A reader app keeps the catalog open while the writer is killed inside add().

    The next writer sees the add as not done (fine: it was in flight). That
    answer must stay: once the reader app exits too, the catalog must not
    answer differently (the killed add showing up) without any new call.
    """
    rng = np.random.default_rng(SEED + 2)
    folder, work = tmp_path / "catalog", tmp_path / "work"
    Catalog.create(folder, model_id="m", dim=32, compact_at=10**6).close()
    flips = []
    for iteration in range(20):
        (work / str(iteration)).mkdir(parents=True)
        holder = subprocess.Popen(
            [sys.executable, "-m", "tests.sdk.catalog.catalog_worker", "hold", str(folder), str(work / str(iteration)), "ro"],
            cwd=ROOT, stdin=subprocess.PIPE,
        )
        log = tmp_path / f"log-{iteration}.txt"
        proc = spawn("ops", folder, log, int(rng.integers(2**31)), f"p{iteration}", tmp_path / "stderr.txt")
        try:
            assert wait_for(lambda: (work / str(iteration) / "ready").exists(), holder)
            # Aim at a commit: kill just after the worker logged that it began an add.
            calls = int(rng.integers(1, 30))
            wait_for(lambda: log_lines(log, "done ") >= calls and _last_line(log).startswith("begin add"), proc, poll=0)
            time.sleep(rng.uniform(0.0, 0.002))
            kill(proc)
            with Catalog.open(folder) as catalog:  # the next writer, while the reader app still runs
                seen = {p.id: p.image_count for p in catalog.products()}
        finally:
            holder.kill()
            holder.wait()
            kill(proc)
        with Catalog.open(folder, readonly=True) as catalog:  # later, nothing else open
            later = {p.id: p.image_count for p in catalog.products()}
        if later != seen:
            changed = {p: (seen.get(p), later.get(p)) for p in set(seen) | set(later) if seen.get(p) != later.get(p)}
            flips.append(f"iteration {iteration}: in flight {read_log(log).inflight}; changed later {changed}")
            break  # one is enough
    assert not flips, "\n".join(flips)


def _last_line(path: Path) -> str:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ""
    return text[text.rstrip("\n").rfind("\n") + 1:] if text.endswith("\n") else ""
