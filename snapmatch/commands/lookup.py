"""`snapmatch search` and `snapmatch identify`: look images up in a catalog (read-only)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, table, threads_option
from snapmatch.sdk.errors import SnapmatchError

catalog_path = click.argument("catalog", type=click.Path(file_okay=False, path_type=Path))
images_argument = click.argument("images", nargs=-1, required=True)


def _each_image(search, images, lookup):
    """(image, result, error, milliseconds) per image: one bad image does not stop the others."""
    for image in images:
        start = time.perf_counter()
        try:
            result, error = lookup(search, image), None
        except SnapmatchError as exc:
            result, error = None, str(exc)
        yield image, result, error, (time.perf_counter() - start) * 1000.0


def _run(catalog: Path, images, threads, lookup):
    from snapmatch.sdk.product_search import ProductSearch

    with ProductSearch.open(catalog, readonly=True, threads=threads) as search:
        return search.rule, list(_each_image(search, images, lookup))


def _fail_if_errors(rows) -> None:
    failed = [image for image, _, error, _ in rows if error]
    if failed:
        raise SnapmatchError(f"{len(failed)} of {len(rows)} image(s) could not be looked up")


# search --json and identify --json share one shape: an object whose "results" list has one
# entry per image: {"image", "error", "ms", ...}, with "matches" (search) or "product"/"best" (identify).

@click.command()
@catalog_path
@images_argument
@click.option("-k", "--top-k", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many products to list per image.")
@threads_option
@json_option
def search(catalog: Path, images: tuple[str, ...], k: int, threads: int | None, as_json: bool) -> None:
    """List the k best catalog products for each image, best first, with cosine scores.

    \b
    snapmatch search my-catalog photo.jpg -k 3
    """
    _, rows = _run(catalog, images, threads, lambda s, image: s.search(image, k=k))
    if as_json:
        emit_json({"k": k, "results": [
            {"image": image, "matches": [m.to_dict() for m in result] if result is not None else None,
             "error": error, "ms": round(ms, 2)} for image, result, error, ms in rows]})
    else:
        for image, result, error, ms in rows:
            if error:
                click.echo(f"{image}: error: {error}", err=True)
                continue
            click.echo(f"{image}  ({ms:.1f} ms)")
            if result:
                click.echo(table([[f"{rank}.", f"{m.score:.3f}", m.product_id, m.name]
                                  for rank, m in enumerate(result, start=1)], indent="  "))
            else:
                click.echo("  (the catalog is empty)")
    _fail_if_errors(rows)


@click.command()
@catalog_path
@images_argument
@threads_option
@json_option
def identify(catalog: Path, images: tuple[str, ...], threads: int | None, as_json: bool) -> None:
    """Name the product in each image, or say it is not in the catalog (it fails the catalog's rule).

    The rule weighs the best product's score and its margin over the second
    product (`snapmatch catalog info` shows it; `catalog calibrate` fits it).
    An unknown answer still names the best candidate.

    \b
    snapmatch identify my-catalog frame.jpg
    """
    rule, rows = _run(catalog, images, threads, lambda s, image: s.identification(image))
    if as_json:
        emit_json({"threshold": rule.threshold, "margin_weight": rule.margin_weight, "rule": rule.describe(),
                   "results": [{"image": image, **(answer.to_dict() if answer else {"product": None, "best": None,
                                                                                      "rule_value": None}),
                                "error": error, "ms": round(ms, 2)} for image, answer, error, ms in rows]})
    else:
        for image, answer, error, _ in rows:
            if error:
                click.echo(f"{image}: error: {error}", err=True)
            else:
                click.echo(f"{image}: {describe_answer(answer, rule)}")
    _fail_if_errors(rows)


def describe_answer(answer, rule) -> str:
    """One identification as the CLI prints it: the product, or unknown with the best guess and why."""
    if answer.match is not None:
        return f"{answer.match.product_id} ({answer.match.score:.3f})  {answer.match.name}".rstrip()
    best = answer.best
    if best is None:
        return "unknown (empty catalog)"
    margin = "" if best.margin is None else f", margin {best.margin:.3f}"
    return f"unknown (best guess {best.product_id}: score {best.score:.3f}{margin}; fails {rule.describe()})"
