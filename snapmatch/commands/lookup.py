"""`snapmatch search` and `snapmatch identify`: look images up in a catalog (read-only)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, threads_option
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
        emit_json([{"image": image, "matches": [m.to_dict() for m in result] if result is not None else None,
                    "error": error, "ms": round(ms, 2)} for image, result, error, ms in rows])
    else:
        for image, result, error, ms in rows:
            if error:
                click.echo(f"{image}: error: {error}", err=True)
                continue
            click.echo(f"{image}  ({ms:.1f} ms)")
            for rank, match in enumerate(result, start=1):
                click.echo(f"  {rank}. {match.score:.3f}  {match.product_id}  {match.name}".rstrip())
            if not result:
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
    rule, rows = _run(catalog, images, threads, lambda s, image: s.search(image, k=1))
    threshold = rule.threshold
    answers = []
    for image, result, error, ms in rows:
        best = result[0] if result else None
        accepted = best is not None and rule.accepts(best.score, best.margin)
        answers.append({"image": image, "product": best.to_dict() if accepted else None,
                        "best": best.to_dict() if best else None,
                        "best_score": round(best.score, 6) if best else None,
                        "rule_value": round(rule.value(best.score, best.margin), 6) if best else None,
                        "error": error, "ms": round(ms, 2)})
    if as_json:
        emit_json({"threshold": threshold, "margin_weight": rule.margin_weight, "rule": rule.describe(),
                   "results": answers})
    else:
        for answer in answers:
            if answer["error"]:
                click.echo(f"{answer['image']}: error: {answer['error']}", err=True)
            elif answer["product"]:
                product = answer["product"]
                click.echo(f"{answer['image']}: {product['product_id']} ({product['score']:.3f})  {product['name']}".rstrip())
            else:
                best = answer["best"]
                detail = "empty catalog"
                if best is not None:
                    margin = "" if best["margin"] is None else f", margin {best['margin']:.3f}"
                    detail = (f"best guess {best['product_id']}: score {best['score']:.3f}{margin}; "
                              f"fails {rule.describe()}")
                click.echo(f"{answer['image']}: unknown ({detail})")
    _fail_if_errors(rows)
