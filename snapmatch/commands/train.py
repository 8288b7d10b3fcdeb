"""`snapmatch train` and `snapmatch evaluate` (need the `train` extra for training)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, progress

DEFAULT_DATA = "../shared/data/grocery"


def _exclusions(value: str | None, data: str) -> list[int]:
    """`p2` (the protocol's held-out products) or a comma-separated list of fine labels."""
    if not value:
        return []
    if value == "p2":
        from snapmatch.benchmarks.accuracy import held_out_products
        from snapmatch.training.grocery import GroceryData

        return held_out_products(GroceryData.load(data))
    try:
        return sorted(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter("give `p2` or comma-separated fine labels, e.g. 3,17,42") from None


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA, show_default=True,
              help="Grocery-format dataset root (train.txt, classes.csv, ...).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder: checkpoints, log, config.")
@click.option("--loss", type=click.Choice(["triplet", "multisimilarity", "arcface", "contrastive"]),
              default="multisimilarity", show_default=True)
@click.option("--backbone", type=click.Choice(["small", "large_minimalistic"]), default="small", show_default=True)
@click.option("--pretrained", default=None,
              help="ImageNet weights: a local .pt file, or `imagenet` to download torchvision's (online only). "
                   "Default: ../shared/weights for the chosen backbone.")
@click.option("--head", type=click.Choice(["pooled", "linear", "prelogits"]), default="pooled", show_default=True)
@click.option("--dim", type=click.IntRange(min=0), default=0, help="Embedding size of a linear head.")
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True,
              help="0 writes the pretrained network unchanged (the ImageNet-features baseline).")
@click.option("--batch-size", type=click.IntRange(min=4), default=64, show_default=True)
@click.option("--image-size", type=click.IntRange(min=32), default=224, show_default=True)
@click.option("--backbone-lr", type=float, default=1e-4, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True, help="Learning rate of new layers and loss proxies.")
@click.option("--exclude-products", default=None, help="Leave products out of training: `p2` or labels `3,17,42`.")
@click.option("--max-products", type=click.IntRange(min=2), default=None, help="Train on the first N products only (smoke runs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, help="torch CPU threads (0: all cores).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
def train(data, out, loss, backbone, pretrained, head, dim, epochs, batch_size, image_size, backbone_lr, lr,
          exclude_products, max_products, seed, threads, resume) -> None:
    """Fine-tune the embedding network with a metric-learning loss.

    Writes OUT/last.pt after every epoch (resumable with --resume), OUT/log.jsonl
    and OUT/config.json. Export the result with `snapmatch export OUT/last.pt`.

    \b
    snapmatch train --out runs/ms --loss multisimilarity --epochs 12
    snapmatch train --out runs/p2 --exclude-products p2      # protocol P2
    """
    from snapmatch.training.train import TrainConfig
    from snapmatch.training.train import train as run_training

    if pretrained is None:
        name = "mobilenet_v3_small" if backbone == "small" else "mobilenet_v3_large_minimalistic"
        pretrained = str(Path(data).resolve().parent.parent / "weights" / f"{name}-imagenet.pt")
    excluded = _exclusions(exclude_products, data)
    if max_products:
        from snapmatch.training.grocery import GroceryData

        excluded = sorted(set(excluded) | {label for label in GroceryData.load(data).names if label >= max_products})
    config = TrainConfig(data=str(data), out=str(out), backbone=backbone, pretrained=pretrained, head=head, dim=dim,
                         loss=loss, epochs=epochs, batch_size=batch_size, image_size=image_size,
                         backbone_lr=backbone_lr, lr=lr, exclude_products=excluded, seed=seed, threads=threads)
    checkpoint = run_training(config, resume=resume)
    click.echo(f"trained: {checkpoint}")


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=DEFAULT_DATA, show_default=True)
@click.option("--protocols", default="P1,P2,P3,OPEN", show_default=True, help="Comma-separated: P1, P2, P3, OPEN.")
@click.option("--p2-model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The model trained with --exclude-products p2 (needed for P2).")
@click.option("--target-precision", type=float, default=0.95, show_default=True, help="OPEN: identify() precision target.")
@click.option("--threads", type=click.IntRange(min=0), default=None)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON report here.")
@json_option
def evaluate(models, data, protocols, p2_model, target_precision, threads, out, as_json) -> None:
    """Measure retrieval through the runtime (ONNX Runtime + usearch) on the protocols of DESIGN.md.

    Give several models (e.g. the ImageNet-features baseline beside a trained
    one) to compare them on the same photos.

    \b
    snapmatch evaluate runs/ms/model.onnx baseline.onnx --p2-model runs/p2/model.onnx
    """
    from snapmatch.benchmarks.accuracy import PROTOCOLS, evaluate as run_evaluation, format_report

    chosen = tuple(p.strip().upper() for p in protocols.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PROTOCOLS]
    if unknown:
        raise click.BadParameter(f"unknown protocol(s) {', '.join(unknown)}", param_hint="--protocols")
    reports = []
    for model in models:
        with progress(None, f"embedding ({Path(model).name})") as bar:
            reports.append(run_evaluation(model, data, protocols=chosen, p2_model=p2_model,
                                          target_precision=target_precision, threads=threads,
                                          on_batch=bar.update))
    if out:
        Path(out).write_text(json.dumps(reports, indent=2))
    if as_json:
        emit_json(reports)
    else:
        click.echo(format_report(reports))
