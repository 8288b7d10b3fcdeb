"""Search cost by catalog shape: as many products, one photo each vs many photos each (vectors only).

A catalog's search should cost what its products cost, not what its photos
cost. This times `Catalog.search(k)` on synthetic unit vectors (products as
clusters) for each photos-per-product setting, interleaved round by round so
machine load hits every shape alike; compare the ratio, not the times.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from snapmatch.benchmarks.stats import summary


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def measure(products: int = 81, photos: tuple[int, ...] = (1, 33), *, dim: int = 576, k: int = 5,
            repeats: int = 200, compact: bool = True, threads: int = 1, seed: int = 0) -> dict:
    """Median ms of one search per shape, and each shape's time over the first one's."""
    from snapmatch.sdk.catalog.catalog import Catalog

    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((products, dim)))
    spread = 0.35 * 8 / np.sqrt(dim)  # photos of one product at cosine ~0.5-0.7 of each other
    queries = _unit(centres[rng.integers(0, products, repeats)] + spread * rng.standard_normal((repeats, dim)))
    with tempfile.TemporaryDirectory() as tmp:
        catalogs = []
        for per in photos:
            folder = Path(tmp) / f"shape-{per}"
            with Catalog.create(folder, model_id="search-shape", dim=dim, threads=threads) as writer:
                for p in range(products):
                    writer.add(f"p{p}", _unit(centres[p] + spread * rng.standard_normal((per, dim))))
                if compact:
                    writer.compact()
            catalogs.append(Catalog.open(folder, readonly=True, threads=threads))
        try:
            for catalog in catalogs:  # warm-up: the first search builds the in-memory index
                for query in queries[:20]:
                    catalog.search(query[None], k)
            times: list[list[float]] = [[] for _ in photos]
            for query in queries:
                for i, catalog in enumerate(catalogs):
                    start = time.perf_counter()
                    catalog.search(query[None], k)
                    times[i].append(1e3 * (time.perf_counter() - start))
        finally:
            for catalog in catalogs:
                catalog.close()
    medians = [summary(t)["median"] for t in times]
    return {"products": products, "dim": dim, "k": k, "repeats": repeats, "compacted": compact,
            "shapes": [{"photos_per_product": per, "vectors": per * products, "search_ms": summary(t),
                        "ratio_to_first": medians[i] / medians[0]} for i, (per, t) in enumerate(zip(photos, times))]}
