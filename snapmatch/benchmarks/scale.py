"""How a catalog behaves as it grows: build, disk, open, search (beside exact numpy), memory, add, compact.

For each size, a synthetic catalog of the model's dimension is built (or
reused) from the profile of real embeddings (`embedding_profile`). Then:

- open: `Catalog.open(readonly=True)` timed in fresh processes (`open_time`);
- search, in one fresh process with BLAS and usearch on `threads` threads:
  resident memory after open and after `queries` single-image searches, the
  latency of the bare usearch search (k=10) and of `Catalog.search` (what an
  app pays: products grouped, names read from SQLite), then exact
  brute-force numpy on the same vectors held in RAM, and usearch's recall@10
  against it. Queries are half near-copies of stored photos and half new
  photos of stored products (`embedding_profile.images` around the product);
- add: `Catalog.add` of one 4-photo product, durable (fsynced) when it
  returns, `adds` times; then `compact` (merging them into a new base) and
  the same after removing them, so a reused catalog keeps its content.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from snapmatch.benchmarks import open_time
from snapmatch.benchmarks.embedding_profile import load_default, neighbour_stats
from snapmatch.benchmarks.memory import status
from snapmatch.benchmarks.stats import summary
from snapmatch.benchmarks.synthetic_catalog import (
    SyntheticSpec,
    build,
    build_record,
    clustered_chunks,
    load_build,
)
from snapmatch.sdk.catalog import base_index
from snapmatch.sdk.catalog.manifest import read_manifest
from snapmatch.sdk.errors import InvalidArgumentError

MODULE = "snapmatch.benchmarks.scale"
RECALL_K = 10
CANDIDATES = 40  # what Catalog.search fetches from the base for k=10 (max(4k, 16))
CHILD_TIMEOUT_S = 3600


def catalog_spec(size: int, dim: int, *, vector_dtype: str = "f32", expansion_add: int | None = None,
                 connectivity: int | None = None) -> SyntheticSpec:
    """The synthetic catalog the scale and memory benchmarks use (shaped like real embeddings).

    Graph settings are made explicit (snapmatch's defaults when None): they name the catalog's folder,
    so a later change of the defaults never reuses a catalog built with the old ones.
    """
    # The shipped profile was fitted on 576-d MobileNetV3-Small embeddings; other sizes get plain clusters.
    distribution = "profile" if load_default().dim == dim else "clusters"
    return SyntheticSpec(size=int(size), dim=dim, vector_dtype=vector_dtype, distribution=distribution,
                         expansion_add=expansion_add or base_index.EXPANSION_ADD,
                         connectivity=connectivity or base_index.CONNECTIVITY)


def ensure_catalog(folder: Path, spec: SyntheticSpec, *, reuse: bool, log, build_threads: int = 0) -> dict:
    """The build facts of the catalog `folder` holding `spec`, building it unless an earlier build can be reused."""
    facts = load_build(folder, spec) if reuse else None
    if facts is not None:
        log(f"{spec.name}: reusing the catalog built earlier in {folder}")
        return {**facts, "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    build_record(folder).unlink(missing_ok=True)
    return {**build(folder, spec, threads=build_threads, log=log), "reused": False}


def run(
    sizes: Sequence[int],
    folder: str | os.PathLike | None = None,
    *,
    dim: int = 576,
    vector_dtype: str = "f32",
    expansion_add: int | None = None,
    connectivity: int | None = None,
    expansion_search: Sequence[int] | int | None = None,
    queries: int = 1000,
    open_repeats: int = 3,
    adds: int = 20,
    threads: int = 1,
    build_threads: int = 0,
    reuse: bool = True,
    keep: bool = True,
    exact_below: int | None = None,
    log=None,
) -> list[dict]:
    """Measure a catalog of each size under `folder` (a temporary folder, removed after, when None).

    exact_below: the catalog size up to which search is exact (default: Catalog's).
    build_threads: threads that build each graph (0: all cores), as a catalog opened with that many builds it.
    expansion_search: one value, or several to sweep: the search is measured at each
    (the first is stored in the manifest; each result lists the others under "sweep").
    """
    sweep = [expansion_search] if isinstance(expansion_search, int) else list(expansion_search or [])
    log = log or (lambda message: None)
    if queries < 2 or open_repeats < 1 or adds < 1:
        raise InvalidArgumentError("queries must be at least 2, open_repeats and adds at least 1")
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="snapmatch-scale-") as tmp:
            return run(sizes, tmp, dim=dim, vector_dtype=vector_dtype, expansion_add=expansion_add,
                       connectivity=connectivity, expansion_search=sweep, queries=queries,
                       open_repeats=open_repeats, adds=adds, threads=threads, build_threads=build_threads,
                       reuse=False, keep=False,
                       exact_below=exact_below, log=log)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for size in sizes:
        spec = catalog_spec(size, dim, vector_dtype=vector_dtype, expansion_add=expansion_add,
                            connectivity=connectivity)
        catalog = folder / spec.name
        facts = ensure_catalog(catalog, spec, reuse=reuse, log=log, build_threads=build_threads)
        if sweep:
            _set_expansion_search(catalog, sweep[0])
        log(f"{spec.name}: timing open x{open_repeats} (fresh processes)")
        opened = _open(catalog, spec, open_repeats, threads)
        log(f"{spec.name}: {queries} searches, exact numpy baseline and recall (fresh process)")
        queries_file, structure = _prepare_queries(catalog, spec, queries)
        request = {"folder": str(catalog), "spec": spec.__dict__, "queries": str(queries_file), "threads": threads,
                   "exact_below": exact_below}
        searched = _child_run(request)
        searched["sweep"] = [_sweep_point(searched, read_manifest(catalog).expansion_search)]
        for value in sweep[1:]:
            log(f"{spec.name}: searches at expansion_search={value}")
            searched["sweep"].append(_sweep_point(_child_run({**request, "expansion_search": value}), value))
        log(f"{spec.name}: {adds} durable adds, compact, remove, compact")
        changed = _add_and_compact(catalog, spec, adds, threads)
        results.append({
            "size": spec.size, "dim": dim, "vector_dtype": vector_dtype, "catalog": str(catalog),
            "expansion_search": read_manifest(catalog).expansion_search,
            "connectivity": read_manifest(catalog).base.connectivity,
            "build": facts, "open": opened, **searched, **changed, "neighbour_structure": structure,
        })
        if not keep:
            shutil.rmtree(catalog, ignore_errors=True)
            build_record(catalog).unlink(missing_ok=True)
    return results


def _sweep_point(searched: dict, expansion_search: int) -> dict:
    return {"expansion_search": expansion_search, "index_p50_ms": searched["search_index_ms"]["median"],
            "index_p99_ms": searched["search_index_ms"]["p99"], "recall_at_10": searched["recall_at_10"],
            "rescored_p50_ms": searched["search_rescored_ms"]["median"],
            "recall_at_10_rescored": searched["recall_at_10_rescored"],
            "catalog_p50_ms": searched["search_catalog_ms"]["median"]}


def _set_expansion_search(catalog: Path, value: int) -> None:
    from snapmatch.sdk.catalog.catalog import Catalog

    with Catalog.open(catalog, threads=1) as writer:
        writer.update_manifest(expansion_search=int(value))


def _open(catalog: Path, spec: SyntheticSpec, repeats: int, threads: int) -> dict:
    from snapmatch.benchmarks.synthetic_catalog import sample_queries

    vectors, expected, keys = sample_queries(catalog, spec)
    queries_path = catalog.with_name(catalog.name + ".queries.npy")
    np.save(queries_path, vectors)
    measured = open_time.measure_open("readonly", catalog, queries_path, expected, keys, repeats, threads=threads,
                                  images_per_product=spec.images_per_product)
    return {"open_ms": measured["open_ms"], "first_search_ms": measured["first_search_ms"]["median"]}


def _add_and_compact(catalog_folder: Path, spec: SyntheticSpec, adds: int, threads: int) -> dict:
    from snapmatch.sdk.catalog.catalog import Catalog

    profile = load_default()
    rng = np.random.default_rng([spec.seed, 7])
    centres = profile.products(adds, rng)
    times, ids = [], [f"bench-added-{i:04d}" for i in range(adds)]
    with Catalog.open(catalog_folder, threads=threads) as catalog:
        for pid, centre in zip(ids, centres):
            vectors = profile.images(np.repeat(centre[None], spec.images_per_product, axis=0), rng)
            start = time.perf_counter()
            catalog.add(pid, vectors, name=pid)
            times.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        catalog.compact()
        compact_add_s = time.perf_counter() - start
        for pid in ids:
            catalog.remove(pid)
        start = time.perf_counter()
        catalog.compact()
        compact_remove_s = time.perf_counter() - start
    # The catalog holds the same live vectors again, in a patched base: keep it reusable.
    record = build_record(catalog_folder)
    facts = json.loads(record.read_text())
    facts["base_file"] = read_manifest(catalog_folder).base.file
    facts["patched_by_benchmark"] = facts.get("patched_by_benchmark", 0) + 1
    record.write_text(json.dumps(facts, indent=2) + "\n")
    return {"add_ms": summary(times), "compact_after_adds_s": compact_add_s,
            "compact_after_removes_s": compact_remove_s}


# --- the search measurement, in a fresh process ---------------------------------------------


def _child_run(request: dict) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(request["threads"] or os.cpu_count())  # the numpy baseline on as many threads as usearch
    done = subprocess.run([sys.executable, "-m", MODULE, "--child", json.dumps(request)], capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT_S, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the search measurement of {request['folder']} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_queries(vectors: np.ndarray, spec: SyntheticSpec, count: int, seed: int = 5) -> np.ndarray:
    """Half near-copies of stored photos, half new photos of stored products (product = mean of its photos)."""
    profile = load_default()
    rng = np.random.default_rng([spec.seed, seed])
    picks = rng.choice(len(vectors), size=count, replace=False if count <= len(vectors) else True)
    half = count // 2
    near = profile.images(vectors[picks[:half]].astype(np.float64), rng, spread=0.5)
    per = spec.images_per_product
    centres = np.stack([vectors[(p // per) * per:(p // per + 1) * per].mean(axis=0) for p in picks[half:]])
    return np.concatenate([near, profile.images(centres.astype(np.float64), rng)])


def _prepare_queries(catalog: Path, spec: SyntheticSpec, count: int) -> tuple[Path, dict]:
    """Write the search queries beside the catalog; also describe the vectors' neighbour structure."""
    vectors = np.concatenate([chunk for _, _, chunk in clustered_chunks(spec)])
    path = catalog.with_name(catalog.name + ".search-queries.npy")
    np.save(path, make_queries(vectors, spec, count))
    sample = min(len(vectors), 4000)
    structure = neighbour_stats(vectors[:sample], np.arange(sample) // spec.images_per_product)
    return path, structure


def _child(request: dict) -> dict:
    from snapmatch.sdk.catalog.catalog import (
        Catalog,  # imports onnxruntime before usearch (see sdk/_usearch.py)
    )

    spec = SyntheticSpec(**request["spec"])
    threads = request["threads"]
    before = status()
    options = {} if request.get("exact_below") is None else {"exact_below": request["exact_below"]}
    catalog = Catalog.open(request["folder"], readonly=True, threads=threads, **options)
    after_open = status()
    queries = np.load(request["queries"])
    expansion = request.get("expansion_search")  # this process only; the manifest is unchanged
    base_size = catalog.stats()["base_vectors"]
    index_ms, catalog_ms, found = [], [], []
    for query in queries:
        start = time.perf_counter()
        keys, _ = catalog.search_base(query[None], RECALL_K, expansion_search=expansion)
        index_ms.append(1e3 * (time.perf_counter() - start))
        found.append(keys[0][keys[0] >= 0])
    for query in queries:
        start = time.perf_counter()
        catalog.search(query[None], 5)
        catalog_ms.append(1e3 * (time.perf_counter() - start))
    # What Catalog.search does for an i8/f16 base: CANDIDATES from the index, ranked on their float32 vectors.
    rescored_ms, rescored = [], []
    for query in queries:
        start = time.perf_counter()
        keys, _ = catalog.search_base(query[None], RECALL_K, candidates=CANDIDATES)
        rescored_ms.append(1e3 * (time.perf_counter() - start))
        rescored.append(keys[0][keys[0] >= 0])
    after_search = status()
    catalog.close()

    vectors = np.concatenate([chunk for _, _, chunk in clustered_chunks(spec)])
    exact_ms, truth = [], []
    for query in queries:
        start = time.perf_counter()
        scores = vectors @ query
        top = np.argpartition(-scores, RECALL_K)[:RECALL_K]
        top = top[np.argsort(-scores[top])]
        exact_ms.append(1e3 * (time.perf_counter() - start))
        truth.append(top + 1)  # synthetic catalogs number their images 1, 2, ...
    hits = [len(set(f.tolist()) & set(t.tolist())) / RECALL_K for f, t in zip(found, truth)]
    rescored_hits = [len(set(f.tolist()) & set(t.tolist())) / RECALL_K for f, t in zip(rescored, truth)]
    half = len(queries) // 2
    top1 = [len(f) > 0 and f[0] == t[0] for f, t in zip(found, truth)]
    index = summary(index_ms)
    exact = summary(exact_ms)
    return {
        "search_index_ms": index,
        "search_catalog_ms": summary(catalog_ms),
        "search_exact_numpy_ms": exact,
        "speedup_vs_exact_p50": exact["median"] / index["median"] if index["median"] > 0 else None,
        "recall_at_10": float(np.mean(hits)),
        "recall_at_10_near_copies": float(np.mean(hits[:half])),
        "recall_at_10_new_photos": float(np.mean(hits[half:])),
        "top1_agrees_with_exact": float(np.mean(top1)),
        "search_rescored_ms": summary(rescored_ms),
        "recall_at_10_rescored": float(np.mean(rescored_hits)),
        "exact_search_in_usearch": bool(base_size <= catalog.exact_below),
        "rss_mb": {"before_open": before, "after_open": after_open, "after_searches": after_search},
        "queries": len(queries),
    }


# --- report ---------------------------------------------------------------------------------


def format_table(results: list[dict]) -> str:
    lines = [
        f"{'vectors':>9} {'build s':>8} {'base MB':>8} {'db MB':>7} {'open ms':>8} "
        f"{'usearch p50/p99 ms':>19} {'catalog p50':>11} {'numpy p50':>10} {'speedup':>8} {'recall@10':>9} "
        f"{'rescored':>8} "
        f"{'RSS +open':>9} {'+searches anon/file MB':>22} {'add p50/p99 ms':>15} {'compact s':>9}"
    ]
    for r in results:
        b = r["build"]
        rss = r["rss_mb"]
        opened = rss["after_open"]["rss"] - rss["before_open"]["rss"]
        anon = rss["after_searches"]["anon"] - rss["after_open"]["anon"]
        file = rss["after_searches"]["file"] - rss["after_open"]["file"]
        lines.append(
            f"{r['size']:>9} {b['insert_s'] + b['base_build_s']:>8.1f} {b['base_bytes'] / 1e6:>8.1f} "
            f"{b['sqlite_bytes'] / 1e6:>7.1f} {r['open']['open_ms']['median']:>8.2f} "
            f"{r['search_index_ms']['median']:>9.3f}/{r['search_index_ms']['p99']:<9.3f} "
            f"{r['search_catalog_ms']['median']:>11.3f} {r['search_exact_numpy_ms']['median']:>10.2f} "
            f"{r['speedup_vs_exact_p50']:>7.1f}x {r['recall_at_10']:>9.4f} {r['recall_at_10_rescored']:>8.4f} "
            f"{opened:>9.1f} {anon:>10.1f}/{file:<11.1f} {r['add_ms']['median']:>7.2f}/{r['add_ms']['p99']:<7.2f} "
            f"{r['compact_after_adds_s']:>9.2f}" + (" (exact)" if r["exact_search_in_usearch"] else "")
        )
    sweeps = [r for r in results if len(r.get("sweep", [])) > 1]
    if sweeps:
        lines.append(f"\n{'vectors':>9} {'expansion_search':>16} {'usearch p50':>11} {'p99':>7} {'recall@10':>9} "
                     f"{'rescored p50':>12} {'recall@10':>9} {'catalog p50':>11}")
        for r in sweeps:
            for p in r["sweep"]:
                lines.append(f"{r['size']:>9} {p['expansion_search']:>16} {p['index_p50_ms']:>11.3f} "
                             f"{p['index_p99_ms']:>7.3f} {p['recall_at_10']:>9.4f} {p['rescored_p50_ms']:>12.3f} "
                             f"{p['recall_at_10_rescored']:>9.4f} {p['catalog_p50_ms']:>11.3f}")
    if len(results) > 1:
        small, large = results[0], results[-1]
        ratio = large["open"]["open_ms"]["median"] / small["open"]["open_ms"]["median"]
        lines.append(f"\nopen({large['size']}) / open({small['size']}): {ratio:.2f}x")
    return "\n".join(lines)


def plot(results: list[dict], path: str | os.PathLike) -> Path:
    from snapmatch.benchmarks.plots import pyplot, save

    plt = pyplot()
    sizes = [r["size"] for r in results]
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    ax.plot(sizes, [r["search_index_ms"]["median"] for r in results], "o-", label="usearch p50")
    ax.plot(sizes, [r["search_index_ms"]["p99"] for r in results], "o--", label="usearch p99")
    ax.plot(sizes, [r["search_catalog_ms"]["median"] for r in results], "s-", label="Catalog.search p50")
    ax.plot(sizes, [r["search_exact_numpy_ms"]["median"] for r in results], "^-", label="exact numpy p50")
    ax.set(xscale="log", yscale="log", xlabel="vectors in the catalog", ylabel="ms per query", title="search")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(sizes, [r["open"]["open_ms"]["median"] for r in results], "o-", label="open (readonly), median")
    ax.plot(sizes, [r["add_ms"]["median"] for r in results], "s-", label="add_product p50 (durable)")
    ax.set(xscale="log", xlabel="vectors in the catalog", ylabel="ms", title="open and add")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(sizes, [r["build"]["base_bytes"] / 1e6 for r in results], "o-", label="base file")
    ax.plot(sizes, [r["rss_mb"]["after_open"]["rss"] - r["rss_mb"]["before_open"]["rss"] for r in results], "s-",
            label="RSS added by open")
    ax.plot(sizes, [r["rss_mb"]["after_searches"]["anon"] - r["rss_mb"]["before_open"]["anon"] for r in results],
            "^-", label=f"anonymous RSS added after {results[0]['queries']} searches")
    ax.plot(sizes, [r["rss_mb"]["after_searches"]["file"] - r["rss_mb"]["before_open"]["file"] for r in results],
            "v-", label="mapped file pages resident after them")
    ax.set(xscale="log", yscale="log", xlabel="vectors in the catalog", ylabel="MB", title="size and memory")
    ax.legend(fontsize=8)
    return save(figure, path)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(_child(json.loads(argv[1]))))
        return 0
    raise SystemExit("run `snapmatch benchmark scale`")


if __name__ == "__main__":
    sys.exit(main())
