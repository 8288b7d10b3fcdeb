"""`snapmatch train` (needs the `train` extra) and `snapmatch evaluate` (runtime only)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, progress, require_train_extra


def _unseen(value: str | None) -> list[str] | None:
    """Comma-separated product ids, or @FILE with one per line."""
    if not value:
        return None
    if value.startswith("@"):
        text = Path(value[1:]).read_text()
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [part.strip() for part in value.split(",") if part.strip()]


@click.command()
@click.argument("photos", type=click.Path(exists=True))
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Run folder (new, or with --resume): checkpoints, log, config, model.onnx, evaluation.json.")
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True,
              help="0 writes the starting network unchanged (e.g. the ImageNet-features baseline).")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.2, show_default=True,
              help="Share of products held out of training, to measure products the model never saw. "
                   "0 trains on every product (no unseen figure).")
@click.option("--folds", type=click.IntRange(min=1), default=1, show_default=True,
              help="K > 1: train K models, each product held out in exactly one; report the mean over folds.")
@click.option("--unseen", default=None, help="Hold out these products instead: ids `a,b,c` or @FILE (one per line).")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the product and photo split.")
@click.option("--pretrained", default="default", show_default=True,
              help="Starting weights: `default` (the shipped model: offline, already knows products), a "
                   "state-dict .pt or snapmatch .onnx file (e.g. ImageNet weights), `imagenet` (torchvision's, "
                   "online) or `none`.")
@click.option("--loss", type=click.Choice(["triplet", "multisimilarity", "arcface", "subcenter_arcface", "proxyanchor",
                                          "contrastive"]), default="multisimilarity", show_default=True,
              help="Metric-learning loss (snapmatch.training.losses; the names of training.losses.LOSSES).")
@click.option("--camera", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of training views given a shop camera's faults: low resolution, JPEG, perspective, glare.")
@click.option("--catalog-pairs", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Chance that a shop photo in a batch is swapped for its product's catalog image: "
                   "studio <-> shop pairs, for catalogs of pack shots.")
@click.option("--colour-classes", type=click.IntRange(1, 6), default=1, show_default=True,
              help="Train each product also as K-1 other products: its photos with the colour channels "
                   "permuted (packs that differ only in colour are different products). 1: off.")
@click.option("--backbone", type=click.Choice(["small", "large_minimalistic"]), default=None,
              help="Default: the one the starting weights are for (the shipped model: large_minimalistic).")
@click.option("--head", type=click.Choice(["pooled", "linear", "prelogits"]), default="pooled", show_default=True)
@click.option("--dim", type=click.IntRange(min=0), default=0, help="Embedding size of a linear head.")
@click.option("--pooling", type=click.Choice(["avg", "gem"]), default="avg", show_default=True,
              help="Global pooling of the last feature map: average, or GeM (generalised mean, p=3).")
@click.option("--freeze-blocks", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep the first K backbone blocks as they start (what every product shares).")
@click.option("--distill", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of a pull towards the starting network's embeddings (keeps what it knew).")
@click.option("--l2sp", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of a pull towards the starting network's weights (L2-SP: sum of squared changes).")
@click.option("--batch-size", type=click.IntRange(min=4), default=64, show_default=True,
              help="At most this many photos a step; a dataset with few products gets products x 4.")
@click.option("--image-size", type=click.IntRange(min=32), default=224, show_default=True)
@click.option("--backbone-lr", type=float, default=1e-4, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True, help="Learning rate of new layers.")
@click.option("--proxy-lr", type=float, default=1e-2, show_default=True,
              help="Learning rate of a proxy loss's class proxies (arcface, subcenter_arcface, proxyanchor).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of training (batches, views, init).")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="torch CPU threads (0: all cores).")
@click.option("--no-evaluate", is_flag=True, help="Skip the export and the seen / unseen measurement at the end.")
@click.option("--resume", is_flag=True, help="Continue the run in OUT (its last checkpoint, or its next fold).")
@json_option
def train(photos, out, epochs, holdout, folds, unseen, split_seed, pretrained, loss, camera, catalog_pairs,
          colour_classes, backbone, head, dim, pooling, freeze_blocks, distill, l2sp, batch_size, image_size,
          backbone_lr, lr, proxy_lr, seed, threads, no_evaluate, resume, as_json) -> None:
    """Fine-tune the embedding network on your own product photos.

    PHOTOS is a folder with one sub-folder of photos per product (the layout
    `catalog import` takes; pack shots may go in a `catalog/` folder inside
    a product's folder), a `path, product_id[, name]` list file, or the
    Grocery Store Dataset.

    A seeded share of the products (--holdout) is kept out of training; at
    the end the run exports OUT/model.onnx and measures it through the
    runtime: Recall@1 on products it trained on (held-out photos) and on
    products it never saw (added to the catalog from their photos, as a
    device adds a new product). OUT/last.pt is written after every epoch.

    \b
    snapmatch train my-photos/ --out runs/mine
    snapmatch train my-photos/ --out runs/mine-5fold --folds 5 --epochs 5
    snapmatch train my-photos/ --out runs/final --holdout 0      # every product, to ship
    snapmatch export runs/final/last.pt --int8
    """
    require_train_extra("train")
    import sys

    from snapmatch.training.data import load_dataset
    from snapmatch.training.runs import format_summary, plan_splits, run
    from snapmatch.training.train import TrainConfig

    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    dataset = load_dataset(photos)
    splits = plan_splits(dataset, holdout=holdout, folds=folds, seed=split_seed, unseen=_unseen(unseen))
    if not as_json:
        products = len(dataset.products)
        held = ", ".join(f"{len(s.unseen)}" for s in splits)
        echo(f"{dataset.format} dataset {dataset.source}: {products} products, {len(dataset.photos)} images "
             f"({len(dataset.catalog_images())} catalog-style); products held out: {held} (split seed {split_seed})")
    if backbone is None:
        from snapmatch.training.pretrained import infer_backbone

        backbone = infer_backbone("" if pretrained == "none" else pretrained)
    config = TrainConfig(data=str(dataset.source), out=str(out), backbone=backbone,
                         pretrained="" if pretrained == "none" else pretrained, head=head, dim=dim, loss=loss,
                         pooling=pooling, freeze_blocks=freeze_blocks, distill=distill, l2sp=l2sp,
                         epochs=epochs, batch_size=batch_size, image_size=image_size, backbone_lr=backbone_lr, lr=lr,
                         proxy_lr=proxy_lr, seed=seed, threads=threads, catalog_pairs=catalog_pairs,
                         colour_classes=colour_classes)
    if camera:
        config.augment = dataclasses.replace(config.augment, camera=camera)
    summary = run(config, dataset, splits, resume=resume, evaluate=not no_evaluate,
                  progress=sys.stderr.isatty() or not as_json, echo=echo)
    if as_json:
        emit_json(json.loads(json.dumps(summary, default=float)))
    else:
        click.echo(format_summary(summary))


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("photos", type=click.Path(exists=True))
@click.option("--split", "split_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A run's split (OUT/evaluation.json or a split JSON) instead of the one the model records.")
@click.option("--protocols", default="P1,FEW,P3,OPEN", show_default=True,
              help="Comma-separated: P1, FEW, P3 (needs catalog-style images), OPEN, P2 (needs --p2-model).")
@click.option("--p2-model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="P2: a model trained with products held out, beside MODEL trained on them.")
@click.option("--adapt/--no-adapt", default=True, show_default=True,
              help="Also measure with the catalog's adaptation on (its own metric, fitted on catalog photos only).")
@click.option("--target-precision", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="OPEN: the precision identify()'s rule is calibrated for.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Inference threads (default: all cores).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON report here.")
@json_option
def evaluate(model, photos, split_file, protocols, p2_model, adapt, target_precision, threads, out, as_json) -> None:
    """Measure a model on a dataset through the runtime (ONNX Runtime + a real catalog).

    Recall@1 / @5 (by product), MAP@R (by image), and identify() with a third
    of the products unknown (OPEN). When MODEL was trained by `snapmatch train`
    on PHOTOS, it records its split, and the figures are given separately for
    products it trained on (seen) and products it never saw (unseen).

    \b
    snapmatch evaluate runs/mine/model.onnx my-photos/
    snapmatch evaluate snapmatch/models/default.onnx my-photos/ --json
    """
    from snapmatch.evaluation import PROTOCOLS, evaluate as run_evaluation, format_report
    from snapmatch.training.data import load_dataset
    from snapmatch.training.splits import Split

    chosen = tuple(p.strip().upper() for p in protocols.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(PROTOCOLS)}", param_hint="--protocols")
    if "P2" in chosen and p2_model is None:
        raise click.BadParameter("P2 needs --p2-model", param_hint="--protocols")
    split = None
    if split_file:
        raw = json.loads(Path(split_file).read_text())
        split = Split.from_dict(raw.get("split", raw))
    dataset = load_dataset(photos)
    with progress(None, f"embedding ({Path(model).name})") as bar:
        report = run_evaluation(model, dataset, split=split, protocols=chosen, p2_model=p2_model, adapt=adapt,
                                target_precision=target_precision, threads=threads, on_batch=bar.update)
    if out:
        Path(out).write_text(json.dumps(report, indent=2, default=float))
    if as_json:
        emit_json(json.loads(json.dumps(report, default=float)))
        return
    click.echo(f"{dataset.format} dataset {dataset.source}: {report['products']} products; split: "
               f"{report['split_origin']} ({report['unseen_products']} unseen)")
    click.echo(format_report([report]))
    if report["skipped"]:
        click.echo(f"skipped {len(report['skipped'])} unreadable photo(s)", err=True)
