"""`snapmatch benchmark scale` and `snapmatch benchmark memory`."""

from __future__ import annotations

import time
from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, positive_ints

SIZE_EXAMPLES = "e.g. 10k,100k,1M"  # also 2500 or 2.5k


def parse_sizes(value: str, option: str = "--sizes") -> list[int]:
    from snapmatch.benchmarks.open_time import parse_size
    from snapmatch.sdk.errors import InvalidArgumentError

    try:
        sizes = [parse_size(part) for part in value.split(",") if part.strip()]
    except InvalidArgumentError as exc:
        raise click.BadParameter(f"{exc} ({SIZE_EXAMPLES})", param_hint=option) from None
    if not sizes:
        raise click.BadParameter(f"give at least one size ({SIZE_EXAMPLES})", param_hint=option)
    return sorted(set(sizes))


def _invocation() -> str:
    import shlex
    import sys

    return "snapmatch " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])


def _log(message: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


def _header(command: str) -> dict:
    from snapmatch.benchmarks.cpu_info import describe
    from snapmatch.benchmarks.open_time import environment

    return {"command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": describe(),
            "environment": environment()}


def _cpu_line(report: dict, threads: int) -> str:
    from snapmatch.benchmarks.cpu_info import flags_line

    return f"CPU: {report['cpu']['model']} ({flags_line(report['cpu'])}); threads: {threads or 'all'}"


folder_option = click.option(
    "--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where catalogs are built and kept for reuse (default: a temporary folder, removed afterwards).")
dtype_option = click.option("--vector-dtype", type=click.Choice(["f32", "f16", "i8"]), default="f32", show_default=True,
                            help="Scalar type of the usearch base.")
ea_option = click.option("--expansion-add", type=click.IntRange(min=1), default=None,
                         help="usearch build effort (default: snapmatch's); lower builds faster, with lower recall.")


@click.command()
@click.option("--sizes", default="10k,100k,1M", show_default=True, help=f"Catalog sizes in vectors, {SIZE_EXAMPLES}.")
@folder_option
@click.option("--reuse/--no-reuse", default=True, show_default=True,
              help="Reuse catalogs built earlier in --folder with the same settings.")
@dtype_option
@ea_option
@click.option("--connectivity", type=click.IntRange(min=2), default=None,
              help="usearch graph degree (default: snapmatch's).")
@click.option("--expansion-search", default=None, callback=positive_ints,
              help="usearch search effort, e.g. 64, or 64,128,256 to sweep (the first is stored in the manifests; "
                   "default: what they hold).")
@click.option("--queries", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Searches per size (half near-copies of stored photos, half new photos of stored products).")
@click.option("--adds", type=click.IntRange(min=1), default=20, show_default=True, help="Durable add_product calls timed per size.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="Threads for usearch and the numpy baseline (0: all cores).")
@click.option("--build-threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Threads that build a graph (0: all cores; unreachable nodes are repaired after a parallel build).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write scale curves as a PNG.")
@json_option
def scale(sizes, folder, reuse, vector_dtype, expansion_add, connectivity, expansion_search, queries, adds, threads,
          build_threads, plot, as_json) -> None:
    """Build, open, search, add to and compact synthetic catalogs of growing size.

    Vectors have the default model's dimension and follow the profile of its
    real embeddings (common direction, variance spectrum, spread of a
    product's photos), not uniform noise. Per size: build time, size on disk,
    open time (fresh processes), search p50/p99 beside exact numpy on the same
    vectors, recall@10 against it, resident memory after open and after the
    searches, durable add_product latency, compact time.

    \b
    snapmatch benchmark scale --sizes 10k,100k --folder bench-catalogs --plot scale.png
    snapmatch benchmark scale --sizes 1M --expansion-add 32 --folder bench-catalogs --json
    """
    from snapmatch.benchmarks import scale as bench

    chosen = parse_sizes(sizes)
    if plot:
        from snapmatch.benchmarks.plots import pyplot

        pyplot()  # no matplotlib: say so now, not after the catalogs are built
    report = _header(_invocation())
    report["results"] = bench.run(chosen, folder, vector_dtype=vector_dtype, expansion_add=expansion_add,
                                  connectivity=connectivity, expansion_search=expansion_search, queries=queries,
                                  adds=adds, threads=threads, build_threads=build_threads, reuse=reuse,
                                  keep=folder is not None, log=_log)
    if plot:
        report["plot"] = str(bench.plot(report["results"], plot))
    if as_json:
        emit_json(report)
        return
    click.echo(_cpu_line(report, threads))
    click.echo(bench.format_table(report["results"]))
    if plot:
        click.echo(f"plot: {plot}")


@click.command()
@click.option("--size", default="1M", show_default=True, help=f"Catalog size in vectors ({SIZE_EXAMPLES}).")
@folder_option
@click.option("--reuse/--no-reuse", default=True, show_default=True)
@dtype_option
@ea_option
@click.option("--connectivity", type=click.IntRange(min=2), default=None, help="usearch graph degree (default: snapmatch's).")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ONNX model to load (default: the shipped model).")
@click.option("--queries", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True)
@json_option
def memory(size, folder, reuse, vector_dtype, expansion_add, connectivity, model, queries, threads, as_json) -> None:
    """Peak resident memory of a process serving lookups from a large catalog.

    A fresh process loads the model, opens a synthetic catalog of SIZE
    vectors read-only (memory-mapped), embeds the bundled demo photos and
    answers QUERIES searches; memory is read at each step.

    \b
    snapmatch benchmark memory --size 1M --folder bench-catalogs
    """
    from snapmatch.benchmarks import memory as bench
    from snapmatch.benchmarks.bench_photos import load_photos
    from snapmatch.benchmarks.scale import catalog_spec, ensure_catalog
    from snapmatch.sdk.model.embedder import Embedder
    from snapmatch.sdk.product_search import default_model_path

    model_path = Path(model) if model else default_model_path()
    spec = catalog_spec(parse_sizes(size, "--size")[0], Embedder(model_path, threads=1).dim,
                        vector_dtype=vector_dtype, expansion_add=expansion_add, connectivity=connectivity)
    report = _header(_invocation())
    photos = load_photos()
    images = [str(photos.folder / name) for name in photos.names]

    def measure(root: Path) -> dict:
        built = ensure_catalog(root / spec.name, spec, reuse=reuse, log=_log)
        return {"catalog": str(root / spec.name), "build": built,
                **bench.measure(root / spec.name, model_path, images, queries=queries, threads=threads)}

    if folder is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="snapmatch-memory-") as tmp:
            report["result"] = measure(Path(tmp))
    else:
        report["result"] = measure(Path(folder).resolve())
    if as_json:
        emit_json(report)
        return
    result = report["result"]
    click.echo(_cpu_line(report, threads))
    click.echo(f"{spec.size} vectors ({result['base_file_mb']:.0f} MB base file), model {model_path.name} "
               f"({result['model_file_mb']:.1f} MB), {queries} searches, {threads or 'all'} thread(s)")
    click.echo(f"{'step':<16} {'RSS MB':>8} {'anon':>8} {'file':>8}")
    for step, values in result["steps"].items():
        click.echo(f"{step:<16} {values['rss']:>8.1f} {values['anon']:>8.1f} {values['file']:>8.1f}")
    click.echo(f"peak RSS: {result['peak_rss_mb']:.1f} MB "
               f"({result['peak_rss_mb'] / result['base_file_mb']:.1%} of the base file)")


@click.command("open-time")
@click.option("--sizes", default="10k,1M", show_default=True, help=f"Catalog sizes in vectors, {SIZE_EXAMPLES}.")
@click.option("--dim", type=click.IntRange(min=1), default=576, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for open_time.json.")
@folder_option
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@dtype_option
@ea_option
@click.option("--images-per-product", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--clusters", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--insert", type=click.Choice(["bulk", "api"]), default="bulk", show_default=True,
              help="bulk: the store's insert in large transactions; api: Catalog.add, one product at a time.")
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="ONNX model of embedding size --dim: also time ProductSearch.open.")
@click.option("--modes", default=None, help="Comma-separated subset of the modes (default: all that apply).")
@click.option("--no-evict", is_flag=True, help="Skip the page-cache-evicted mode.")
@click.option("--reuse", is_flag=True, help="Reuse catalogs of the same settings built earlier in --folder.")
@click.option("--clean", is_flag=True, help="Delete the catalogs afterwards.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="usearch threads (0: all).")
@json_option
def open_time(sizes, dim, out, folder, repeats, vector_dtype, expansion_add, images_per_product, clusters, seed,
              insert, model, modes, no_evict, reuse, clean, threads, as_json) -> None:
    """How long opening a catalog takes, each open in a fresh process (warm, evicted, writer, ProductSearch).

    \b
    snapmatch benchmark open-time --sizes 10k,1M --expansion-add 32 --modes readonly,writer --out open-time
    """
    from snapmatch.benchmarks import open_time as profiler

    payload = profiler.report(
        parse_sizes(sizes), out, command=_invocation(), log=_log, dim=dim, folder=folder or out / "catalogs",
        repeats=repeats, vector_dtype=vector_dtype, expansion_add=expansion_add,
        images_per_product=images_per_product, clusters=clusters, seed=seed, insert=insert, model=model,
        modes=modes.split(",") if modes else None, evict=not no_evict, reuse=reuse, keep=not clean, threads=threads)
    if as_json:
        emit_json(payload)
    else:
        click.echo(profiler.format_table(payload["results"]))
        click.echo(f"\nresults: {out / profiler.RESULT_FILE}")


@click.command("search-shape")
@click.option("--products", type=click.IntRange(min=2), default=81, show_default=True)
@click.option("--photos", "photos", default="1,33", show_default=True, callback=positive_ints,
              help="Photos per product of each catalog compared, comma-separated (the first is the baseline).")
@click.option("--dim", type=click.IntRange(min=2), default=576, show_default=True)
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--repeats", type=click.IntRange(min=10), default=200, show_default=True)
@click.option("--no-compact", is_flag=True, help="Leave every vector in the delta instead of a base.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True)
@json_option
def search_shape(products, photos, dim, k, repeats, no_compact, threads, as_json) -> None:
    """Search cost of catalogs with the same products and more photos each (vectors only, no model).

    \b
    snapmatch benchmark search-shape --products 81 --photos 1,33
    """
    from snapmatch.benchmarks.search_shape import measure

    result = measure(products, tuple(photos), dim=dim, k=k, repeats=repeats, compact=not no_compact, threads=threads)
    if as_json:
        emit_json({**_header(_invocation()), **result})
        return
    click.echo(f"{products} products, {dim}-d, search k={k}, {repeats} interleaved rounds, {threads or 'all'} thread(s)")
    for shape in result["shapes"]:
        ms = shape["search_ms"]
        click.echo(f"  {shape['photos_per_product']:>4} photo(s) per product ({shape['vectors']:>6} vectors): "
                   f"median {ms['median']:.3f} ms, p99 {ms['p99']:.3f} ms, {shape['ratio_to_first']:.2f}x")
