"""`snapmatch catalog ...`: create, add, import, remove, compact, info, tune, calibrate, verify."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from snapmatch.cli import PartialSuccess
from snapmatch.commands.output import emit_json, json_option, progress, status, table, threads_option

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


wait_option = click.option("--wait", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
                           help="Wait this long for another process that is changing the catalog to finish.")


@catalog.command()
@catalog_path
@click.argument("product_id")
@click.argument("images", nargs=-1)
@click.option("--name", default=None, help="Human-readable product name (sets it for a known product too).")
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Add from a few seconds of video of the product turning in the hand, instead of photos.")
@click.option("--max-frames", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --video: keep at most this many sharp, mutually different frames.")
@threads_option
@wait_option
@json_option
def add(catalog: Path, product_id: str, images: tuple[str, ...], name: str | None, video: Path | None,
        max_frames: int, threads: int | None, wait: float, as_json: bool) -> None:
    """Add photos of a product (a new one, or more photos of a known one), or a short video of it.

    A photo the product already holds (same file content) is skipped, so the
    same command twice adds nothing the second time.

    \b
    snapmatch catalog add my-catalog arla-milk-1l a.jpg b.jpg --name "Arla Standard Milk 1 l"
    snapmatch catalog add my-catalog arla-milk-1l --video turning.mp4
    """
    from snapmatch.sdk.product_search import ProductSearch

    if bool(images) == (video is not None):
        raise click.UsageError("give photos or --video FILE (one of them)")
    with ProductSearch.open(catalog, threads=threads, wait=wait) as search:
        if video is not None:
            from_video = search.add_product_from_video(product_id, video, name=name, max_frames=max_frames,
                                                       extend=True)
        else:
            added = search.add(product_id, list(images), name=name)
    if video is not None:
        if as_json:
            emit_json(from_video.to_dict())
            return
        frames = from_video.keyframes
        left_out = ", ".join(f"{count} {reason}" for reason, count in frames.counts().items()) or "none"
        duplicates = f"; {from_video.duplicates} already in it" if from_video.duplicates else ""
        click.echo(f"added {len(from_video.image_keys) - from_video.duplicates} frame(s) of {frames.frames_read} to "
                   f"{'new' if from_video.new_product else 'existing'} product {product_id} "
                   f"(frames {', '.join(map(str, frames.kept))}{duplicates}); left out: {left_out}")
        return
    if as_json:
        emit_json(added.to_dict())
        return
    duplicates = f"; {added.duplicates} already in it, skipped" if added.duplicates else ""
    renamed = f"; renamed to {name!r}" if added.renamed else ""
    click.echo(f"added {added.added} image(s) to {'new' if added.created else 'existing'} product "
               f"{product_id}{duplicates}{renamed}")


@catalog.command("import")
@catalog_path
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@threads_option
@wait_option
@json_option
def import_(catalog: Path, source: Path, threads: int | None, wait: float, as_json: bool) -> None:
    """Add many photos at once, from a folder or a list file.

    SOURCE is a folder with one sub-folder of photos per product (the
    sub-folder name is the product id), or a text file of
    `path, product_id[, name]` lines (a first line naming those columns is
    skipped). Unreadable photos are skipped and named; everything else is
    committed, and the exit code is 3 if any was skipped.

    Each product is committed on its own, and photos a product already holds
    (same file content) are skipped: the same import twice adds nothing, and
    after an interruption (Ctrl-C) running it again finishes it.

    \b
    snapmatch catalog import my-catalog photos/
    snapmatch catalog import my-catalog list.csv
    """
    from snapmatch.cli import Interrupted
    from snapmatch.sdk.catalog.bulk_import import ImportReport, import_items, read_source
    from snapmatch.sdk.product_search import ProductSearch

    items = read_source(source)
    report = ImportReport()
    products = len({item.product_id for item in items})
    try:
        with ProductSearch.open(catalog, threads=threads, wait=wait) as search, \
                progress(len(items), "importing", quiet=as_json) as bar:
            import_items(search, items, report=report, on_product=lambda _, photos: bar.update(photos))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted (Ctrl-C) after {report.products_done} of {products} products: "
                          f"{report.images_added} image(s) committed ({len(report.products_added)} new product(s)); "
                          "run the same import again to finish it (photos already in are skipped)") from None
    if as_json:
        emit_json(report.to_dict())
    else:
        duplicates = f"; {report.duplicates} already in the catalog, skipped" if report.duplicates else ""
        click.echo(f"imported {report.images_added} image(s): {len(report.products_added)} new product(s), "
                   f"{len(report.products_extended)} extended{duplicates}")
        for path, reason in report.skipped:
            click.echo(f"skipped {path}: {reason}", err=True)
    if report.skipped:
        raise PartialSuccess(f"{len(report.skipped)} of {len(items)} image(s) skipped")


@catalog.command()
@catalog_path
@click.argument("product_ids", nargs=-1, required=True)
@wait_option
@json_option
def remove(catalog: Path, product_ids: tuple[str, ...], wait: float, as_json: bool) -> None:
    """Remove products and all their photos.

    \b
    snapmatch catalog remove my-catalog arla-milk-1l
    """
    from snapmatch.sdk.product_search import ProductSearch

    removed = {}
    with ProductSearch.open(catalog, wait=wait) as search:
        for product_id in product_ids:
            removed[product_id] = search.remove_product(product_id)
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
@wait_option
@json_option
def compact(catalog: Path, rebuild: bool, refit: bool, wait: float, as_json: bool) -> None:
    """Merge recent additions and removals into a new base index.

    \b
    snapmatch catalog compact my-catalog
    """
    from snapmatch.sdk.product_search import ProductSearch

    with ProductSearch.open(catalog, wait=wait) as search, contextlib.ExitStack() as bars:
        if not as_json:
            status(f"compacting {catalog} ...")
        shown: dict = {}

        def on_progress(step: str, done: int, total: int) -> None:
            if step not in shown:
                for bar in shown.values():
                    bar.close()
                label = "building the graph" if step == "graph" else "checking every image is reachable"
                shown[step] = bars.enter_context(progress(total, label, quiet=as_json))
            shown[step].update(done - shown[step].n)

        changed = search.compact(rebuild=rebuild, refit=True if refit else None, progress=on_progress)
        stats = search.info()
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
@wait_option
@json_option
def tune(catalog: Path, expansion_search, connectivity, expansion_add, compact_at, adapt, wait: float,
         as_json: bool) -> None:
    """Change how a catalog's index searches and rebuilds (durable; readers pick it up).

    `snapmatch benchmark scale` measures what each setting costs and gains.

    \b
    snapmatch catalog tune my-catalog --expansion-search 128
    snapmatch catalog tune my-catalog --connectivity 32 && snapmatch catalog compact my-catalog --rebuild
    """
    from snapmatch.sdk.product_search import ProductSearch

    changes = {"expansion_search": expansion_search, "connectivity": connectivity, "expansion_add": expansion_add,
               "compact_at": compact_at}
    if all(value is None for value in changes.values()) and adapt is None:
        raise click.UsageError("give at least one setting to change (see --help)")
    with ProductSearch.open(catalog, wait=wait) as search:
        settings = search.tune(adapt=adapt, **changes)
    if as_json:
        emit_json({"catalog": str(catalog), **settings})
    else:
        click.echo(f"{catalog}: " + ", ".join(f"{name} {value}" for name, value in settings.items()))


def _describe_report(report: dict) -> str:
    from snapmatch.sdk.catalog.calibration import CalibrationReport

    return CalibrationReport.from_dict(report).describe()


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
    from snapmatch.sdk.product_search import ProductSearch

    with ProductSearch.open(catalog, readonly=True, threads=1) as search:
        payload = search.info()
        if list_products:
            payload["product_list"] = [product.to_dict() for product in search.products()]
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
    listed = payload.get("product_list", [])
    if listed:
        click.echo(table([[p["id"], p["name"], f"{p['image_count']} image(s)"] for p in listed],
                         ["product", "name", "images"], indent="  "))


@catalog.command()
@catalog_path
@click.argument("labelled", type=click.Path(exists=True, path_type=Path))
@click.option("--target-precision", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.99, show_default=True,
              help="Share of identify() answers that must be right.")
@click.option("--force", is_flag=True,
              help="Store the rule even when it would mean nothing (too few photos, the catalog's own photos, "
                   "a rule that names almost nothing).")
@threads_option
@wait_option
@json_option
def calibrate(catalog: Path, labelled: Path, target_precision: float, force: bool, threads: int | None,
              wait: float, as_json: bool) -> None:
    """Choose the identify() threshold from labelled photos, and store it.

    LABELLED is a folder of product sub-folders, or a list file of
    `path, product_id` lines. Photos of products that are not in the catalog
    (an empty product id, a `_unknown` sub-folder, or an id the catalog does
    not hold) must be rejected, and count against precision when they are not.

    Calibrate on photos the catalog does not hold, taken the way the shop's
    camera takes them: at least 10 (50 or more to trust the result), some of
    them of products outside the catalog. A rule that would mean nothing (the
    catalog's own photos, or one that names almost no photo) is refused.

    \b
    snapmatch catalog calibrate my-catalog val-photos/ --target-precision 0.99
    """
    from snapmatch.sdk.catalog.bulk_import import read_source
    from snapmatch.sdk.product_search import ProductSearch

    items = read_source(labelled, allow_unlabelled=True)
    import warnings

    with ProductSearch.open(catalog, threads=threads, wait=wait) as search, \
            progress(len(items), "embedding", quiet=as_json) as bar:
        known = {product.id for product in search.products()}
        pairs = [(item.path, item.product_id if item.product_id in known else None) for item in items]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report lists them
            threshold = search.calibrate(pairs, target_precision=target_precision, force=force,
                                         on_progress=bar.update)
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
        for warning in report.get("warnings", []):
            click.echo(f"warning: {warning}", err=True)


@catalog.command()
@catalog_path
@click.option("--repair", is_flag=True, help="Rebuild a damaged base index from the database.")
@json_option
def verify(catalog: Path, repair: bool, as_json: bool) -> None:
    """Check checksums, counts and database integrity; optionally repair.

    \b
    snapmatch catalog verify my-catalog --repair
    """
    from snapmatch.sdk.catalog.verify import verify_catalog

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
