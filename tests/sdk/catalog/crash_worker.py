"""Child process for tests/sdk/catalog/test_crash.py: changes a catalog until the parent SIGKILLs it.

Run as ``python -m tests.sdk.catalog.crash_worker MODE FOLDER LOG SEED PREFIX`` from the
repository root. Every catalog call is bracketed by two lines in LOG, each
written with O_APPEND, flushed and fsynced before the next step:

    begin add p3_7 0 2        (product, first image index, image count)
    done add p3_7 0 2         (the call returned: the change must survive)
    begin add_images p3_7 2 1
    begin remove p3_7 / begin compact / ready

A "done" line is written only after the call returned, so the parent knows
that everything with a "done" line is durable and that at most one call (the
last "begin" without a "done") was in flight when the process died.

The image vectors of a product are a pure function of (product id, image
index): the parent recomputes them to search for every product.

MODE ops:     loop for ever over add / add_images / remove / compact (the
              catalog's small compact_at also makes add() compact by itself).
MODE compact: a few removes and adds, then one compact(); exits when done.
MODE powercut: create the catalog (with the shipped model, as
              ProductSearch.create does), then as ops, until a call fails; the
              failure is logged ("error MODULE.CLASS message") and the worker
              exits 3. Run on tests/sdk/catalog/powercut_fs.py, where the
              failure is the power cut's EIO.
MODE inject:  one call that SIGKILLs its own process at a chosen step inside
              the library (CRASH_POINTS): a crash exactly where a random
              kill is unlikely to land. SEED is the step, PREFIX the product.
"""

from __future__ import annotations

import os
import signal
import sys
import zlib

import numpy as np


def vectors_for(product_id: str, start: int, count: int, dim: int) -> np.ndarray:
    """The image vectors start..start+count-1 of `product_id`: deterministic, L2-normalised float32."""
    seed = zlib.crc32(product_id.encode())
    rows = []
    for index in range(start, start + count):
        rng = np.random.default_rng([seed, index])
        rows.append(rng.standard_normal(dim))
    vectors = np.asarray(rows, dtype=np.float32).reshape(count, dim)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class Log:
    """Append-only, fsynced progress log: the parent's record of what completed."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())
        os.fsync(self.fd)


def run_ops(catalog, log: Log, rng: np.random.Generator, prefix: str) -> None:
    products = {p.id: p.image_count for p in catalog.products()}
    dim = catalog.dim
    serial = 0
    while True:
        roll = rng.random()
        if roll < 0.5 or len(products) < 3:
            pid = f"{prefix}_{serial}"
            serial += 1
            count = int(rng.integers(1, 5))
            log.write(f"begin add {pid} 0 {count}")
            catalog.add(pid, vectors_for(pid, 0, count, dim), name=f"name of {pid}")
            log.write(f"done add {pid} 0 {count}")
            products[pid] = count
        elif roll < 0.7:
            pid = sorted(products)[int(rng.integers(len(products)))]
            start, count = products[pid], int(rng.integers(1, 4))
            log.write(f"begin add_images {pid} {start} {count}")
            catalog.add(pid, vectors_for(pid, start, count, dim), new_product=False)
            log.write(f"done add_images {pid} {start} {count}")
            products[pid] = start + count
        elif roll < 0.93:
            pid = sorted(products)[int(rng.integers(len(products)))]
            log.write(f"begin remove {pid}")
            catalog.remove(pid)
            log.write(f"done remove {pid}")
            del products[pid]
        else:
            log.write("begin compact")
            catalog.compact()
            log.write("done compact")


def run_compact(catalog, log: Log, rng: np.random.Generator, prefix: str) -> None:
    """Remove and add a few products (or, one run in four, 30% of them: a full rebuild), then compact."""
    products = sorted(p.id for p in catalog.products())
    dim = catalog.dim
    heavy = rng.random() < 0.25
    n_remove = max(1, int(0.3 * len(products))) if heavy else int(rng.integers(1, 4))
    n_remove = min(n_remove, len(products))
    for pid in rng.choice(products, size=n_remove, replace=False):
        pid = str(pid)
        log.write(f"begin remove {pid}")
        catalog.remove(pid)
        log.write(f"done remove {pid}")
    for serial in range(n_remove if heavy else int(rng.integers(1, 4))):
        pid = f"{prefix}_{serial}"
        log.write(f"begin add {pid} 0 20")
        catalog.add(pid, vectors_for(pid, 0, 20, dim))
        log.write(f"done add {pid} 0 20")
    log.write("begin compact")
    catalog.compact()
    log.write("done compact")


def die() -> None:
    """Crash like a power cut or the OOM killer would: no cleanup, no flush, no unwinding."""
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    """Make this process SIGKILL itself when the catalog code reaches `point` (see CRASH_POINTS)."""
    import pathlib

    from snapmatch.sdk.catalog import base_index, catalog, store

    def before(module, name):
        def crash(*args, **kwargs):
            die()

        setattr(module, name, crash)

    def after(module, name):
        original = getattr(module, name)

        def crash(*args, **kwargs):
            original(*args, **kwargs)
            die()

        setattr(module, name, crash)

    if point == "compact: before the base is written":
        before(base_index, "write_base")
    elif point == "compact: base written, before the manifest":
        before(catalog, "write_manifest")
    elif point == "compact: manifest replaced, before tombstones retire":
        before(store, "retire_tombstones")
    elif point == "compact: tombstones retired, before the old base is deleted":
        original_unlink = pathlib.Path.unlink

        def unlink(self, *args, **kwargs):
            if self.name.startswith("base-"):
                die()
            return original_unlink(self, *args, **kwargs)

        pathlib.Path.unlink = unlink
    elif point == "compact: old base deleted, before the state reload":
        before(catalog.Catalog, "_load_state")
    elif point == "add: rows inserted, before commit":
        after(store, "insert_images")
    elif point == "remove: rows deleted, before commit":
        after(store, "delete_product")
    else:
        raise SystemExit(f"unknown crash point {point!r}")


CRASH_POINTS = (
    "compact: before the base is written",
    "compact: base written, before the manifest",
    "compact: manifest replaced, before tombstones retire",
    "compact: tombstones retired, before the old base is deleted",
    "compact: old base deleted, before the state reload",
    "add: rows inserted, before commit",
    "remove: rows deleted, before commit",
)


def run_inject(catalog, log: Log, point: str, product: str) -> None:
    """Run the call that `point` names, armed to die inside it; `product` is the one to add or remove."""
    arm(point)
    if point.startswith("compact"):
        log.write("begin compact")
        catalog.compact()
        log.write("done compact")
    elif point.startswith("add"):
        log.write(f"begin add {product} 0 3")
        catalog.add(product, vectors_for(product, 0, 3, catalog.dim))
        log.write(f"done add {product} 0 3")
    else:
        log.write(f"begin remove {product}")
        catalog.remove(product)
        log.write(f"done remove {product}")


def run_powercut(folder: str, log: Log, rng: np.random.Generator, prefix: str) -> int:
    from snapmatch.sdk.product_search import ProductSearch

    try:
        log.write("begin create")
        search = ProductSearch.create(folder, compact_at=12)
        log.write("done create")
        log.write("ready")
        run_ops(search.catalog, log, rng, prefix)
    except Exception as exc:  # noqa: BLE001 - the parent checks which exceptions reach the caller
        message = " ".join(str(exc).split())
        log.write(f"error {type(exc).__module__}.{type(exc).__qualname__} {message}")
        return 3
    return 0


def main(argv: list[str]) -> int:
    mode, folder, log_path, seed, prefix = argv
    from snapmatch.sdk.catalog.catalog import Catalog

    log = Log(log_path)
    if mode == "powercut":
        return run_powercut(folder, log, np.random.default_rng(int(seed)), prefix)
    catalog = Catalog.open(folder)
    log.write("ready")
    rng = np.random.default_rng(int(seed) if seed.isdigit() else 0)
    if mode == "ops":
        run_ops(catalog, log, rng, prefix)
    elif mode == "compact":
        run_compact(catalog, log, rng, prefix)
    elif mode == "inject":  # SEED is the crash point, PREFIX the product to add or remove
        run_inject(catalog, log, seed, prefix)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    catalog.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
