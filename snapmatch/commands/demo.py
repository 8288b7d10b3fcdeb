"""`snapmatch demo`: the shipped model on bundled photos, from a fresh install, with no arguments."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, table

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


def _load_manifest() -> dict:
    """demo/photos.json: catalog photos per product, and query photos with their true product (or null)."""
    return json.loads((DEMO_DIR / "photos.json").read_text())


def _write_photos(manifest: dict, folder: Path) -> int:
    """The demo's photos as a dataset folder: PRODUCT/catalog/ holds the pack shot, PRODUCT/ the shop photos."""
    import shutil

    from snapmatch.sdk.errors import CatalogExistsError

    queries = {q["product"]: q["photo"] for q in manifest["queries"] if q["product"]}
    written = 0
    for product in manifest["products"]:
        iconic, *shop = product["photos"]  # NAME-0 is the product's iconic image (ATTRIBUTION.md)
        shop = shop + ([queries[product["id"]]] if product["id"] in queries else [])
        targets = [(iconic, folder / product["id"] / "catalog" / Path(iconic).name)]
        targets += [(photo, folder / product["id"] / Path(photo).name) for photo in shop]
        for source, target in targets:
            if target.exists():  # the same command twice is fine; overwriting someone's photo is not
                if target.read_bytes() != (DEMO_DIR / source).read_bytes():
                    raise CatalogExistsError(f"{target} exists and is not the demo's photo: choose a new folder")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DEMO_DIR / source, target)
        written += len(targets)
    return written


@click.command()
@click.option("--catalog", "catalog_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the demo catalog in this (new) folder instead of a temporary one.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="CPU threads (0: all cores).")
@click.option("--write-photos", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Only write the bundled photos to this (new) folder, one sub-folder per product with its "
                   "pack shot in catalog/: the layout `catalog import`, `train` and `evaluate` take.")
@json_option
def demo(catalog_dir: Path | None, threads: int | None, write_photos: Path | None, as_json: bool) -> None:
    """Build a catalog from bundled product photos, then identify other photos.

    Uses the shipped default model and a handful of photos from the Grocery
    Store Dataset (MIT licence, see snapmatch/demo/ATTRIBUTION.md).

    \b
    snapmatch demo
    snapmatch demo --catalog my-demo-catalog     # keep the catalog to play with
    snapmatch demo --write-photos demo-photos    # a tiny dataset to try `snapmatch train` on
    """
    from snapmatch.sdk.product_search import ProductSearch

    manifest = _load_manifest()
    if write_photos is not None:
        written = _write_photos(manifest, write_photos)
        if as_json:
            emit_json({"folder": str(write_photos), "products": len(manifest["products"]), "images": written})
        else:
            click.echo(f"wrote {written} photos of {len(manifest['products'])} products to {write_photos}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = catalog_dir or Path(tmp) / "demo-catalog"
        started = time.perf_counter()
        with ProductSearch.create(folder, threads=threads) as search:
            for product in manifest["products"]:
                search.add_product(product["id"], [DEMO_DIR / p for p in product["photos"]], name=product["name"])
            build_ms = (time.perf_counter() - started) * 1000
            search.identification(DEMO_DIR / manifest["queries"][0]["photo"])  # warm-up: first run allocates
            rule = search.rule
            threshold = rule.threshold
            rows = []
            for query in manifest["queries"]:
                start = time.perf_counter()
                answer = search.identification(DEMO_DIR / query["photo"])
                ms = (time.perf_counter() - start) * 1000
                identified = answer.match.product_id if answer.match else None
                rows.append({
                    "photo": query["photo"],
                    "truth": query["product"],
                    "identified": identified,
                    "name": answer.match.name if answer.match else None,
                    "score": round(answer.best.score, 4) if answer.best else 0.0,
                    "best_guess": answer.best.product_id if answer.best else None,
                    "ms": round(ms, 1),
                    "correct": identified == query["product"],
                })
            model_id = search.model_id
    if as_json:
        emit_json({"model_id": model_id, "threshold": threshold, "catalog_ms": round(build_ms, 1), "results": rows})
        return
    images = sum(len(p["photos"]) for p in manifest["products"])
    click.echo(f"snapmatch demo — model {model_id}")
    click.echo(f"catalog: {len(manifest['products'])} products from {images} photos in {build_ms:.0f} ms"
               f"{f' (kept in {catalog_dir})' if catalog_dir else ''}; identify threshold {threshold:.3f}\n")
    lines = []
    for row in rows:
        answer = (f"{row['identified']} ({row['score']:.3f})" if row["identified"]
                  else f"unknown (best: {row['best_guess']} {row['score']:.3f})")
        lines.append(["[ok]" if row["correct"] else "[MISS]", row["photo"], "->", answer,
                      f"truth: {row['truth'] or 'not in the catalog'}", f"{row['ms']:.1f} ms"])
    click.echo(table(lines, indent="  "))
    right = sum(row["correct"] for row in rows)
    ranked = sum(row["best_guess"] == row["truth"] for row in rows if row["truth"])
    click.echo(f"\n{right}/{len(rows)} photos answered right by identify(); the best match was the right product "
               f"for {ranked}/{sum(1 for row in rows if row['truth'])} known ones.")
    click.echo(f"identify() answers only above the threshold ({threshold:.3f}, the shipped model's default); "
               "`snapmatch catalog calibrate` sets it for your own catalog and photos.")
    click.echo("\nTry next:\n"
               "  snapmatch catalog create my-catalog\n"
               "  snapmatch catalog import my-catalog photos/      # one sub-folder of photos per product\n"
               "  snapmatch identify my-catalog frame.jpg\n"
               "  snapmatch --help")
