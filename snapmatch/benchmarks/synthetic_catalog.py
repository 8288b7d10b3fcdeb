"""Synthetic catalogs of any size for benchmarks: seeded unit vectors of a chosen structure.

distribution="profile" samples from the shipped profile of the default
model's real embeddings (`embedding_profile`): what search quality and speed
should be judged on. "clusters" (isolated random clusters) is kept for open
time, where only the file's size matters.

`Catalog.add` writes one product per SQLite transaction (fsynced), which is
right for a device and far too slow for a million vectors. `build` therefore
bulk-loads the catalog's own tables (`snapmatch.sdk.catalog.store`'s schema) in large
transactions and then calls `Catalog.compact()`, which builds the usearch base
from those rows exactly as it would on a device. insert="api" goes through
`Catalog.add` instead, for small catalogs and to check both paths agree.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from snapmatch.benchmarks.embedding_profile import load_default
from snapmatch.sdk.cores import usable_cores
from snapmatch.sdk.catalog import store
from snapmatch.sdk.catalog.catalog import Catalog
from snapmatch.sdk.catalog.manifest import read_manifest
from snapmatch.sdk.errors import InvalidArgumentError, SnapmatchError

MODEL_ID = "synthetic-benchmark"  # model id of catalogs built without a model
CHUNK_PRODUCTS = 4096  # products generated (and, in bulk mode, committed) per chunk
PRODUCT_SPREAD = 1.0  # noise norm of a product around its cluster centre (before normalising)
IMAGE_SPREAD = 0.3  # noise norm of an image around its product


@dataclass(frozen=True)
class SyntheticSpec:
    """What to build; two builds of the same spec hold the same vectors under the same keys."""

    size: int  # image vectors in the catalog
    dim: int
    images_per_product: int = 4
    clusters: int = 1000  # random unit centres the products gather around
    seed: int = 0
    vector_dtype: str = "f32"  # the base's usearch scalar kind
    expansion_add: int | None = None  # usearch build effort; None: snapmatch's default
    connectivity: int | None = None  # usearch graph degree; None: snapmatch's default
    insert: str = "bulk"  # "bulk" (SQLite transactions) or "api" (Catalog.add per product; its automatic
    #                       compactions then count as insert time)
    distribution: str = "clusters"  # or "profile": like the default model's real embeddings

    @property
    def products(self) -> int:
        return math.ceil(self.size / self.images_per_product)

    @property
    def name(self) -> str:
        ea = "" if self.expansion_add is None else f"-ea{self.expansion_add}"
        ea += "" if self.connectivity is None else f"-m{self.connectivity}"
        return (
            f"n{self.size}-d{self.dim}-{self.vector_dtype}{ea}-ipp{self.images_per_product}"
            f"-c{self.clusters}-s{self.seed}-{self.insert}" + ("" if self.distribution == "clusters" else "-profile")
        )


def product_id(index: int) -> str:
    return f"p{index:08d}"


def clustered_chunks(spec: SyntheticSpec) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """(product ids, product index of every image, image vectors [n, dim] float32 unit), chunk by chunk."""
    if spec.distribution == "profile":
        yield from _profile_chunks(spec)
        return
    if spec.distribution != "clusters":
        raise InvalidArgumentError(f"distribution must be 'clusters' or 'profile', not {spec.distribution!r}")
    centres = _unit(np.random.default_rng([spec.seed, 1 << 30]).standard_normal((spec.clusters, spec.dim)))
    scale = 1.0 / math.sqrt(spec.dim)  # noise of norm ~SPREAD whatever the dimension
    remaining = spec.size
    for chunk, first in enumerate(range(0, spec.products, CHUNK_PRODUCTS)):
        count = min(CHUNK_PRODUCTS, spec.products - first)
        rng = np.random.default_rng([spec.seed, chunk])
        cluster = rng.integers(spec.clusters, size=count)
        products = _unit(centres[cluster] + PRODUCT_SPREAD * scale * rng.standard_normal((count, spec.dim)))
        owner = np.repeat(np.arange(count), spec.images_per_product)[:remaining]
        images = _unit(products[owner] + IMAGE_SPREAD * scale * rng.standard_normal((len(owner), spec.dim)))
        remaining -= len(owner)
        yield [product_id(first + i) for i in range(count)], first + owner, images


def _profile_chunks(spec: SyntheticSpec) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    profile = load_default()
    if profile.dim != spec.dim:
        raise InvalidArgumentError(f"the embedding profile is {profile.dim}-d, the spec asks for {spec.dim}-d vectors")
    remaining = spec.size
    for chunk, first in enumerate(range(0, spec.products, CHUNK_PRODUCTS)):
        count = min(CHUNK_PRODUCTS, spec.products - first)
        rng = np.random.default_rng([spec.seed, chunk, 2])
        owner = np.repeat(np.arange(count), spec.images_per_product)[:remaining]
        images = profile.images(profile.products(count, rng)[owner], rng)
        remaining -= len(owner)
        yield [product_id(first + i) for i in range(count)], first + owner, images


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _every_tenth(log: Callable[[str], None], name: str) -> Callable[[str, int, int], None]:
    """A compaction progress callback that logs each tenth of each step (a 1M graph takes tens of minutes)."""
    logged: dict[str, int] = {}
    steps = {"graph": "graph", "check": "reachability check"}

    def report(step: str, done: int, total: int) -> None:
        tenth = done * 10 // total if total else 10
        if logged.get(step, -1) < tenth:
            logged[step] = tenth
            log(f"{name}: {steps.get(step, step)} {done:,} of {total:,}")

    return report


def build(folder: str | os.PathLike, spec: SyntheticSpec, *, model: str | os.PathLike | None = None,
          threads: int = 0, log=None) -> dict:
    """Create the catalog `folder` (must not exist yet), fill it and compact it; returns build facts.

    With `model`, the catalog is created by `ProductSearch.create` (model copied
    in, its id in the manifest), so `ProductSearch.open` works on it; the
    model's embedding size must equal spec.dim.
    """
    folder = Path(folder)
    if spec.insert not in ("bulk", "api"):
        raise InvalidArgumentError(f"insert must be 'bulk' or 'api', not {spec.insert!r}")
    log = log or (lambda message: None)
    started = time.perf_counter()
    catalog = _create(folder, spec, model=model, threads=threads)
    try:
        log(f"{spec.name}: inserting {spec.size} vectors ({spec.products} products, {spec.insert})")
        t0 = time.perf_counter()
        if spec.insert == "bulk":
            _bulk_insert(folder, spec)
        else:
            per = spec.images_per_product
            for ids, _, vectors in clustered_chunks(spec):
                for local, pid in enumerate(ids):
                    catalog.add(pid, vectors[local * per:(local + 1) * per], name=f"Product {pid}")
        insert_s = time.perf_counter() - t0
        log(f"{spec.name}: inserted in {insert_s:.1f} s; building the base (compact)")
        t0 = time.perf_counter()
        catalog.compact(progress=_every_tenth(log, spec.name))
        base_build_s = time.perf_counter() - t0
        log(f"{spec.name}: base built in {base_build_s:.1f} s")
    finally:
        catalog.close()
    manifest = read_manifest(folder)
    base = manifest.base
    if base is None or base.count != spec.size:
        raise RuntimeError(f"{folder}: expected a base of {spec.size} vectors, the manifest says {base}")
    if (base.expansion_add, base.connectivity) != (manifest.expansion_add, manifest.connectivity):
        raise RuntimeError(f"{folder}: the base was not built with the manifest's graph settings: {base}")
    facts = {
        "spec": asdict(spec),
        "model": str(Path(model).resolve()) if model is not None else None,
        "insert_s": insert_s,
        "base_build_s": base_build_s,
        "build_threads": threads or usable_cores(),
        "total_s": time.perf_counter() - started,
        "base_file": base.file,
        "base_vectors": base.count,
        "connectivity": base.connectivity,
        "expansion_add": base.expansion_add,
        "usearch_version": base.usearch_version,
        "builder_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **file_sizes(folder),
    }
    build_record(folder).write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def _create(folder: Path, spec: SyntheticSpec, *, model, threads: int) -> Catalog:
    if model is None:
        catalog = Catalog.create(folder, model_id=MODEL_ID, dim=spec.dim, vector_dtype=spec.vector_dtype,
                                 threads=threads)
    else:
        from snapmatch.sdk.product_search import ProductSearch

        catalog = ProductSearch.create(folder, model=model, vector_dtype=spec.vector_dtype, threads=threads,
                                       adapt=False).catalog  # the index is measured, not the metric
        if catalog.dim != spec.dim:
            catalog.close()
            raise InvalidArgumentError(f"model {model} makes {catalog.dim}-d embeddings, the benchmark asks for {spec.dim}")
    graph = {"expansion_add": spec.expansion_add, "connectivity": spec.connectivity}
    if any(value is not None for value in graph.values()):
        catalog.update_manifest(**{name: value for name, value in graph.items() if value is not None})
    return catalog


def _bulk_insert(folder: Path, spec: SyntheticSpec) -> None:
    """Rows exactly as Catalog.add writes them (store.bulk_load), many products per transaction."""
    conn = store.connect(folder, readonly=False)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")  # one fsync per chunk is plenty for a benchmark
        for ids, owner, vectors in clustered_chunks(spec):
            with store.Transaction(conn):
                store.bulk_load(conn, ((pid, f"Product {pid}") for pid in ids),
                                ((product_id(int(o)), v) for o, v in zip(owner, vectors)))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the database file holds everything, as on a device
    finally:
        conn.close()


def build_record(folder: str | os.PathLike) -> Path:
    """Where `build` leaves its facts: beside the catalog folder, not inside it."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".build.json")


def load_build(
    folder: str | os.PathLike, spec: SyntheticSpec, *, model: str | os.PathLike | None = None
) -> dict | None:
    """The facts of an earlier build of exactly `spec` (and `model`) in `folder`, or None."""
    record = build_record(folder)
    try:
        facts = json.loads(record.read_text())
        manifest = read_manifest(folder)
    except (OSError, ValueError, SnapmatchError):
        return None
    if (
        facts.get("spec") != asdict(spec)
        or facts.get("model") != (str(Path(model).resolve()) if model is not None else None)
        or manifest.base is None
        or manifest.base.file != facts.get("base_file")
    ):
        return None
    return {**facts, **file_sizes(folder)}


def file_sizes(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    manifest = read_manifest(folder)
    sqlite_bytes = sum(
        (folder / name).stat().st_size
        for name in (store.DATABASE, store.DATABASE + "-wal", store.DATABASE + "-shm")
        if (folder / name).exists()
    )
    return {
        "base_bytes": (folder / manifest.base.file).stat().st_size if manifest.base else 0,
        "sqlite_bytes": sqlite_bytes,
    }


def sample_queries(
    folder: str | os.PathLike, spec: SyntheticSpec, count: int = 8
) -> tuple[np.ndarray, list[str], list[int]]:
    """`count` stored image vectors spread over the catalog, slightly perturbed; their products and keys."""
    rng = np.random.default_rng([spec.seed, 1 << 29])
    keys = np.unique(np.linspace(1, spec.size, count).astype(np.int64))
    conn = store.connect(Path(folder), readonly=True)
    try:
        found = store.lookup(conn, keys, vectors=True)
    finally:
        conn.close()
    rows = [found[int(k)] for k in keys]
    vectors = np.stack([np.frombuffer(row.vector, dtype=np.float32) for row in rows])
    noise = 0.5 * IMAGE_SPREAD / math.sqrt(spec.dim) * rng.standard_normal(vectors.shape)
    return _unit(vectors + noise), [row.product_id for row in rows], [int(k) for k in keys]
