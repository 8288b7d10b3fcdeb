"""`snapmatch catalog ...`: create, add, import, remove, compact, info, tune, calibrate, verify."""

from __future__ import annotations

from pathlib import Path

import click

from snapmatch.cli import PartialSuccess
from snapmatch.commands.output import emit_json, json_option, progress, threads_option

catalog_path = click.argument("catalog", type=click.Path(file_okay=False, path_type=Path))


@click.group()
def catalog() -> None:
    """Create, fill, inspect, calibrate and repair catalogs.

    A catalog is a folder: manifest.json, a memory-mapped base index,
    catalog.sqlite (products, images, recent additions) and its own copy of
    the model.
    """


@catalog.command()
@catalog_path
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="ONNX model to embed with (default: the shipped model).")
@click.option("--vector-dtype", type=click.Choice(["f32", "f16", "i8"]), default="f32", show_default=True,
              help="How the base index stores vectors (f16/i8: smaller, slightly less exact).")
@click.option("--compact-at", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Merge recent additions into the base once they reach this many images.")
@click.option("--adapt/--no-adapt", default=True, show_default=True,
              help="Fit the metric to the catalog's own photos once it has a few multi-photo products.")
@json_option
def create(catalog: Path, model: Path | None, vector_dtype: str, compact_at: int, adapt: bool, as_json: bool) -> None:
    """Create an empty catalog.

    With --adapt (the default) the catalog learns its own products: once a
    few products have two or more photos, it whitens its vectors by how
    photos of one product vary, and refits as products come and go.

    \b
    snapmatch catalog create my-catalog --model model.onnx
    """
    from snapmatch.sdk.product_search import ProductSearch

    with ProductSearch.create(catalog, model=model, vector_dtype=vector_dtype, compact_at=compact_at,
                              adapt=adapt) as search:
        info = {"catalog": str(catalog), "model_id": search.model_id, "dim": search.embedder.dim,
                "threshold": search.threshold}
    if as_json:
        emit_json(info)
    else:
        click.echo(f"created {catalog} (model {info['model_id']}, {info['dim']}-d)")


@catalog.command()
@catalog_path
@click.argument("product_id")
@click.argument("images", nargs=-1)
@click.option("--name", default=None, help="Human-readable product name (for a new product).")
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Add from a few seconds of video of the product turning in the hand, instead of photos.")
@click.option("--max-frames", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --video: keep at most this many sharp, mutually different frames.")
@threads_option
@json_option
def add(catalog: Path, product_id: str, images: tuple[str, ...], name: str | None, video: Path | None,
        max_frames: int, threads: int | None, as_json: bool) -> None:
    """Add photos of a product (a new one, or more photos of a known one), or a short video of it.

    \b
    snapmatch catalog add my-catalog arla-milk-1l a.jpg b.jpg --name "Arla Standard Milk 1 l"
    snapmatch catalog add my-catalog arla-milk-1l --video turning.mp4
    """
    from snapmatch.sdk.product_search import ProductSearch

    if bool(images) == (video is not None):
        raise click.UsageError("give photos or --video FILE (one of them)")
    if video is not None:
        with ProductSearch.open(catalog, threads=threads) as search:
            added = search.add_product_from_video(product_id, video, name=name, max_frames=max_frames)
        if as_json:
            emit_json(added.to_dict())
            return
        frames = added.keyframes
        left_out = ", ".join(f"{count} {reason}" for reason, count in frames.counts().items()) or "none"
        click.echo(f"added {len(added.image_keys)} frame(s) of {frames.frames_read} to "
                   f"{'new' if added.new_product else 'existing'} product {product_id} "
                   f"(frames {', '.join(map(str, frames.kept))}); left out: {left_out}")
        return
    with ProductSearch.open(catalog, threads=threads) as search:
        known = any(product.id == product_id for product in search.products())
        keys = search.add_images(product_id, list(images)) if known else search.add_product(product_id, list(images), name=name)
    if as_json:
        emit_json({"product_id": product_id, "new_product": not known, "image_keys": keys})
    else:
        click.echo(f"added {len(keys)} image(s) to {'existing' if known else 'new'} product {product_id}")


@catalog.command("import")
@catalog_path
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@threads_option
@json_option
def import_(catalog: Path, source: Path, threads: int | None, as_json: bool) -> None:
    """Add many photos at once, from a folder or a list file.

    SOURCE is a folder with one sub-folder of photos per product (the
    sub-folder name is the product id), or a text file of
    `path, product_id[, name]` lines. Unreadable photos are skipped and named;
    everything else is committed, and the exit code is 3 if any was skipped.

    \b
    snapmatch catalog import my-catalog photos/
    snapmatch catalog import my-catalog list.csv
    """
    from snapmatch.sdk.bulk_import import import_items, read_source
    from snapmatch.sdk.product_search import ProductSearch

    items = read_source(source)
    with ProductSearch.open(catalog, threads=threads) as search, progress(len(items), "importing") as bar:
        report = import_items(search, items, on_image=lambda item: bar.update(1))
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(f"imported {report.images_added} image(s): {len(report.products_added)} new product(s), "
                   f"{len(report.products_extended)} extended")
        for path, reason in report.skipped:
            click.echo(f"skipped {path}: {reason}", err=True)
    if report.skipped:
        raise PartialSuccess(f"{len(report.skipped)} of {len(items)} image(s) skipped")


@catalog.command()
@catalog_path
@click.argument("product_ids", nargs=-1, required=True)
@json_option
def remove(catalog: Path, product_ids: tuple[str, ...], as_json: bool) -> None:
    """Remove products and all their photos.

    \b
    snapmatch catalog remove my-catalog arla-milk-1l
    """
    from snapmatch.sdk.catalog import Catalog

    removed = {}
    with Catalog.open(catalog) as store:
        for product_id in product_ids:
            removed[product_id] = store.remove(product_id)
    if as_json:
        emit_json({"removed": removed})
    else:
        for product_id, count in removed.items():
            click.echo(f"removed {product_id} ({count} image(s))")


@catalog.command()
@catalog_path
@click.option("--rebuild", is_flag=True, help="Rebuild the whole graph from the database instead of patching it.")
@click.option("--refit", is_flag=True,
              help="Refit the catalog's own metric now (otherwise it is refitted once 10% of the catalog changed).")
@json_option
def compact(catalog: Path, rebuild: bool, refit: bool, as_json: bool) -> None:
    """Merge recent additions and removals into a new base index.

    \b
    snapmatch catalog compact my-catalog
    """
    from snapmatch.sdk.catalog import Catalog

    with Catalog.open(catalog) as store:
        changed = store.compact(rebuild=rebuild, refit=True if refit else None)
        stats = store.stats()
    if as_json:
        emit_json({"compacted": changed, **stats})
    else:
        click.echo(f"{'compacted' if changed else 'nothing to compact'}: base generation {stats['generation']}, "
                   f"{stats['base_vectors']} vector(s)")


@catalog.command()
@catalog_path
@click.option("--expansion-search", type=click.IntRange(min=1), default=None,
              help="Search effort of the HNSW graph (catalogs above 20,000 images): higher finds more, slower.")
@click.option("--connectivity", type=click.IntRange(min=2), default=None,
              help="Graph degree used by the next full rebuild (`compact --rebuild`).")
@click.option("--expansion-add", type=click.IntRange(min=1), default=None,
              help="Build effort used by the next full rebuild.")
@click.option("--compact-at", type=click.IntRange(min=1), default=None,
              help="Merge recent additions into the base once they reach this many images.")
@click.option("--adapt/--no-adapt", default=None,
              help="Turn the catalog's own metric on (fitted now, when it can be) or off (dropped now).")
@json_option
def tune(catalog: Path, expansion_search, connectivity, expansion_add, compact_at, adapt, as_json: bool) -> None:
    """Change how a catalog's index searches and rebuilds (durable; readers pick it up).

    `snapmatch benchmark scale` measures what each setting costs and gains.

    \b
    snapmatch catalog tune my-catalog --expansion-search 128
    snapmatch catalog tune my-catalog --connectivity 32 && snapmatch catalog compact my-catalog --rebuild
    """
    from snapmatch.sdk.catalog import Catalog

    changes = {name: value for name, value in (("expansion_search", expansion_search), ("connectivity", connectivity),
                                               ("expansion_add", expansion_add), ("compact_at", compact_at))
               if value is not None}
    if not changes and adapt is None:
        raise click.UsageError("give at least one setting to change (see --help)")
    with Catalog.open(catalog) as store:
        if changes:
            store.update_manifest(**changes)
        if adapt is not None:
            store.set_adapt(adapt)
        manifest = store.manifest
        adaptation = store.adaptation_status()
    settings = {name: getattr(manifest, name) for name in ("expansion_search", "connectivity", "expansion_add",
                                                            "compact_at", "adapt")}
    settings["adaptation_in_force"] = adaptation["in_force"]
    if as_json:
        emit_json({"catalog": str(catalog), **settings})
    else:
        click.echo(f"{catalog}: " + ", ".join(f"{name} {value}" for name, value in settings.items()))


def _describe_report(report: dict) -> str:
    from snapmatch.sdk.calibration import CalibrationReport

    return CalibrationReport(**{k: v for k, v in report.items() if k != "precision"}).describe()


def _describe_adaptation(status: dict) -> str:
    if not status["in_force"]:
        return f"none: {status['reason']}"
    return (f"in force ({status['file']}): fitted on {status['images']} photos of {status['products']} "
            f"multi-photo products, shrinkage {status['shrinkage']}")


@catalog.command()
@catalog_path
@click.option("--products", "list_products", is_flag=True, help="Also list every product.")
@json_option
def info(catalog: Path, list_products: bool, as_json: bool) -> None:
    """Show a catalog's model, threshold and counts (read-only: works while a writer is busy).

    \b
    snapmatch catalog info my-catalog --products
    """
    from snapmatch.sdk.catalog import Catalog

    with Catalog.open(catalog, readonly=True) as store:
        manifest = store.manifest
        payload = {
            "catalog": str(catalog),
            "model_id": manifest.model_id,
            "dim": manifest.dim,
            "vector_dtype": manifest.vector_dtype,
            "threshold": manifest.threshold,
            "threshold_source": manifest.threshold_source,
            "rule": store.rule.describe(),
            "margin_weight": manifest.margin_weight,
            # False: the threshold was fitted under another metric (recalibrate with `catalog calibrate`)
            "threshold_current": store.threshold_current(),
            "calibration": manifest.calibration,
            "connectivity": manifest.connectivity,
            "expansion_add": manifest.expansion_add,
            "expansion_search": manifest.expansion_search,
            **store.stats(),
        }
        if list_products:
            payload["product_list"] = [product.to_dict() for product in store.products()]
    if as_json:
        emit_json(payload)
        return
    for key, value in payload.items():
        if key == "adaptation":
            click.echo(f"{key:17} {_describe_adaptation(value)}")
        elif key == "calibration":
            if value:
                click.echo(f"{key:17} {_describe_report(value)}")
        elif key != "product_list":
            click.echo(f"{key:17} {value}")
    for product in payload.get("product_list", []):
        click.echo(f"  {product['id']}  {product['name']}  ({product['image_count']} image(s))")


@catalog.command()
@catalog_path
@click.argument("labelled", type=click.Path(exists=True, path_type=Path))
@click.option("--target-precision", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.99, show_default=True,
              help="Share of identify() answers that must be right.")
@threads_option
@json_option
def calibrate(catalog: Path, labelled: Path, target_precision: float, threads: int | None, as_json: bool) -> None:
    """Choose the identify() threshold from labelled photos, and store it.

    LABELLED is a folder of product sub-folders, or a list file of
    `path, product_id` lines. Photos of products that are not in the catalog
    (an empty product id, a `_unknown` sub-folder, or an id the catalog does
    not hold) must be rejected, and count against precision when they are not.

    \b
    snapmatch catalog calibrate my-catalog val-photos/ --target-precision 0.99
    """
    from snapmatch.sdk.bulk_import import read_source
    from snapmatch.sdk.product_search import ProductSearch

    items = read_source(labelled, allow_unlabelled=True)
    with ProductSearch.open(catalog, threads=threads) as search:
        known = {product.id for product in search.products()}
        pairs = [(item.path, item.product_id if item.product_id in known else None) for item in items]
        threshold = search.calibrate(pairs, target_precision=target_precision)
        rule = search.rule
        report = search.calibration_report()
    unknown = sum(1 for _, label in pairs if label is None)
    if as_json:
        emit_json({"threshold": threshold, "margin_weight": rule.margin_weight, "rule": rule.describe(),
                   "target_precision": target_precision, "photos": len(pairs), "unknown_photos": unknown,
                   "report": report})
    else:
        click.echo(f"rule {rule.describe()} for precision {target_precision} "
                   f"({len(pairs)} photos, {unknown} of products not in the catalog)")
        click.echo(_describe_report(report))


@catalog.command()
@catalog_path
@click.option("--repair", is_flag=True, help="Rebuild a damaged base index from the database.")
@json_option
def verify(catalog: Path, repair: bool, as_json: bool) -> None:
    """Check checksums, counts and database integrity; optionally repair.

    \b
    snapmatch catalog verify my-catalog --repair
    """
    from snapmatch.sdk.verify import verify_catalog

    report = verify_catalog(catalog, repair=repair)
    if as_json:
        emit_json(report.to_dict())
    else:
        for problem in report.repaired:
            click.echo(f"repaired: {problem}")
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        if report.ok:
            click.echo(f"{catalog}: ok")
    if not report.ok:
        from snapmatch.sdk.errors import CatalogCorruptError

        hint = "" if repair or report.unrepairable else " (run with --repair)"
        raise CatalogCorruptError(f"{catalog} has {len(report.problems)} problem(s){hint}")
