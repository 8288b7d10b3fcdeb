"""Power cuts: what survives when the writes a catalog did not sync are lost.

A process kill (test_crash.py) is not a power cut: the kernel still writes
what the killed process left in its page cache. Here the catalog lives on
tests/sdk/catalog/powercut_fs.py, a FUSE file system that keeps only what was
fsynced (file bytes) and what a directory fsync made durable (names). Each
cut: mount an empty one, let a worker create a catalog with
ProductSearch.create and add / add_images / remove / compact (also by itself:
compact_at=12; the metric adapts) until the file system cuts the power after
a seeded random number of changing calls (uniform, or for a quarter of the
cuts log-uniform, so the first moments of a new catalog get their share); half the cuts also tear the unsynced
writes, page by page. Then, on the durable image the cut left:

- a catalog whose create returned opens, as reader and writer and as a
  ProductSearch, and `verify` finds nothing wrong;
- it holds exactly the products the worker was told are there, give or take
  the one call in flight (all or nothing), each found top-1 by its own
  vectors, no removed product found (the checks of test_crash.py);
- a catalog whose create had not returned is either whole (an empty
  catalog that opens) or can be created again in the same folder;
- the call the cut interrupted failed with a SnapmatchError that is not
  CatalogCorruptError: an I/O error is not damage.

SNAPMATCH_POWERCUT_CUTS sets the number of cuts (default 16), SNAPMATCH_POWERCUT_SEED
the seed. The summary line (shown with -s) is appended to
$SNAPMATCH_POWERCUT_SUMMARY when that is set. The test skips where FUSE cannot
be mounted (no /dev/fuse, no libfuse3, no mount permission).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from snapmatch.sdk.catalog.manifest import read_manifest
from snapmatch.sdk.catalog.verify import verify_catalog
from snapmatch.sdk.errors import CatalogCorruptError, SnapmatchError
from snapmatch.sdk.product_search import ProductSearch
from tests.sdk.catalog.test_crash import Model, check_catalog, read_log

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
CUTS = int(os.environ.get("SNAPMATCH_POWERCUT_CUTS", "16"))
SEED = int(os.environ.get("SNAPMATCH_POWERCUT_SEED", "20261202"))
MAX_CHANGES = 4000  # changing calls before the cut, at most: about 200 catalog calls
WAIT = 60.0


def fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        import mfusepy  # noqa: F401 - loads libfuse3
    except (ImportError, OSError) as exc:
        return f"mfusepy or libfuse3 is missing ({exc})"
    return None


def mount(workdir: Path, cut_after: int, seed: int, torn: bool) -> subprocess.Popen:
    mountpoint = workdir / "mnt"
    mountpoint.mkdir(parents=True)
    command = [sys.executable, "-m", "tests.sdk.catalog.powercut_fs", str(mountpoint), str(workdir / "image"),
               "--cut-after", str(cut_after), "--seed", str(seed)] + (["--torn"] if torn else [])
    with open(workdir / "fs.log", "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + WAIT
    while not os.path.ismount(mountpoint):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the FUSE file system did not mount: {(workdir / 'fs.log').read_text()[-1500:]}")
        time.sleep(0.02)
    return server


def unmount(server: subprocess.Popen, mountpoint: Path) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    if os.path.ismount(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def error_class(log: Path) -> tuple[str, str] | None:
    """The worker's last logged failure: (module.Class, message)."""
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("error "):
            name, _, message = line[len("error "):].partition(" ")
            return name, message
    return None


def classify(name: str) -> str:
    module, _, qualname = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        return "foreign"
    if issubclass(cls, CatalogCorruptError):
        return "called damage"
    return "snapmatch" if issubclass(cls, SnapmatchError) else "foreign"


def cut_once(workdir: Path, rng: np.random.Generator, tally: Counter) -> list[str]:
    """One mount, one worker, one cut; returns the failures found."""
    if rng.random() < 0.25:  # log-uniform: the first moments of a new catalog
        cut_after = int(math.exp(rng.uniform(0, math.log(MAX_CHANGES))))
    else:
        cut_after = int(rng.integers(1, MAX_CHANGES + 1))
    torn = bool(rng.random() < 0.5)
    server = mount(workdir, cut_after, int(rng.integers(2**31)), torn)
    log, err = workdir / "log.txt", workdir / "worker.err"
    folder = workdir / "mnt" / "catalog"
    failures: list[str] = []
    try:
        with open(err, "wb") as stderr:
            worker = subprocess.Popen(
                [sys.executable, "-m", "tests.sdk.catalog.crash_worker", "powercut", str(folder), str(log),
                 str(int(rng.integers(2**31))), "p"],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            )
        try:
            worker.wait(timeout=WAIT)  # it stops at the first failed call: the cut's EIO
        except subprocess.TimeoutExpired:
            failures.append("the worker did not stop within a minute of the cut (or never reached it)")
            worker.kill()
            worker.wait()
    finally:
        unmount(server, workdir / "mnt")
    info_path = workdir / "image.json"
    if not info_path.exists():
        return failures + [f"the worker exited ({worker.returncode}) before the cut: {err.read_text()[-1500:]}"]
    info = json.loads(info_path.read_text())
    tally["torn" if torn else "dropped"] += 1
    tally[f"cut at {info['cut_at'].split()[0]}"] += 1
    failed = error_class(log)
    if failed is None:
        failures.append(f"the worker logged no failed call (exit {worker.returncode}): {err.read_text()[-1500:]}")
    else:
        kind = classify(failed[0])
        tally[f"error {failed[0].rpartition('.')[2]}"] += 1
        if kind != "snapmatch":
            failures.append(f"the cut reached the caller as {failed[0]} ({kind}): {failed[1]}")
    state = read_log(log)
    failures += state.errors
    image = workdir / "image" / "catalog"
    created = any(op.kind == "create" for op in state.done)
    writes = [op for op in state.done if op.kind != "create"]
    tally["acknowledged writes"] += len(writes)
    if not created:
        tally["cut during create"] += 1
        if (image / "manifest.json").exists():  # create had finished on disk, but not returned
            return failures + check_catalog(image, Model(dim=read_manifest(image).dim), None)
        try:
            ProductSearch.create(image).close()  # an interrupted create can simply be run again
        except SnapmatchError as exc:
            failures.append(f"create again after a cut during create failed: {exc!r}")
        return failures
    try:
        model = Model(dim=read_manifest(image).dim)
    except SnapmatchError as exc:
        tally["writes lost or wrong"] += 1
        return failures + [f"the catalog, created and acknowledged, did not survive the cut: {exc!r}"]
    for op in writes:
        error = model.apply(op)
        if error:
            failures.append(error)
    found = check_catalog(image, model, state.inflight)
    if found:
        tally["writes lost or wrong"] += 1
    failures += found
    try:
        ProductSearch.open(image, readonly=True).close()
        report = verify_catalog(image)
        if not report.ok:
            failures.append(f"verify after the cut: {report.problems}")
    except SnapmatchError as exc:
        failures.append(f"ProductSearch.open or verify after the cut failed: {exc!r}")
    return failures


def test_power_cuts_lose_no_acknowledged_write(tmp_path):
    missing = fuse_missing()
    if missing:
        pytest.skip(f"power-cut test needs FUSE: {missing}")
    rng = np.random.default_rng(SEED)
    tally: Counter = Counter()
    failures: list[str] = []
    started = time.monotonic()
    for cut in range(CUTS):
        workdir = tmp_path / f"cut-{cut}"
        try:
            found = cut_once(workdir, rng, tally)
        except RuntimeError as exc:
            if cut == 0 and "did not mount" in str(exc):
                pytest.skip(f"power-cut test needs FUSE: {exc}")
            raise
        if found:
            failures += [f"cut {cut}: {f}" for f in found]
        else:
            shutil.rmtree(workdir)  # keep only the cuts that failed, to examine
    line = (f"power-cut test: {CUTS} cuts, {len(failures)} failures ({time.monotonic() - started:.0f}s; "
            f"{dict(sorted(tally.items()))})")
    print(f"\n{line}")
    if os.environ.get("SNAPMATCH_POWERCUT_SUMMARY"):
        with open(os.environ["SNAPMATCH_POWERCUT_SUMMARY"], "a") as handle:
            handle.write(line + "\n")
    if CUTS >= 10:
        assert tally["acknowledged writes"] > 0, "no cut fell after a write returned: the test covered nothing"
    assert not failures, "\n".join(failures[:20])
