"""Fine-tune the embedding network with a metric-learning loss. Reads top to bottom.

    snapmatch train my-photos/ --out runs/mine

A checkpoint (`last.pt`: model, optimiser, epoch, config, split, random
state) is written atomically after every epoch; `--resume` continues from
it, so a run killed mid-way loses at most one epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from snapmatch.sdk.errors import CatalogExistsError, DatasetError, ImageError, InvalidArgumentError
from snapmatch.training.augment import AugmentConfig, augment
from snapmatch.training.checkpoint import load_checkpoint
from snapmatch.training.data import Dataset, Photo
from snapmatch.training.keep_pretrained import L2SP, Distillation, freeze_blocks
from snapmatch.training.losses import build_criterion
from snapmatch.training.splits import Split

MIN_IMAGES_PER_PRODUCT = 2  # a product needs a positive pair to be learnt from


@dataclass
class TrainConfig:
    data: str = ""  # the dataset: a folder of product sub-folders, a list file, or a Grocery root
    out: str = "runs/default"  # checkpoints, log and config go here
    backbone: str = "small"  # "small" or "large_minimalistic"
    pretrained: str = "default"  # "default" (the shipped model), a .pt/.onnx path, "imagenet" (download) or ""
    head: str = "pooled"  # "pooled" (backbone features), "linear" (new layer to dim) or "prelogits"
    dim: int = 0  # embedding size for a linear head (0: the head's natural size)
    loss: str = "multisimilarity"  # see snapmatch.training.losses.LOSSES
    epochs: int = 10
    batch_size: int = 64  # at most; a dataset with few products gets products x m_per_class
    m_per_class: int = 4  # photos of each product in a batch (MPerClassSampler)
    lr: float = 3e-4  # AdamW learning rate of new layers
    # Class proxies (ArcFace, Proxy-Anchor) start random and must move far in a few epochs:
    # Proxy-Anchor's authors train them 100x faster than the network.
    proxy_lr: float = 1e-2
    backbone_lr: float = 1e-4  # smaller: keep the ImageNet features that help unseen products
    weight_decay: float = 1e-4
    image_size: int = 224
    freeze_bn: bool = True  # BatchNorm is folded in the shipped weights: keep it in eval mode
    include_catalog: bool = True  # train on the catalog-style images too
    # Chance that a shop photo drawn for a batch is swapped for its product's catalog image (when it
    # has one): studio <-> shop positive pairs in most batches, for catalogs of pack shots (P3).
    catalog_pairs: float = 0.0
    pooling: str = "avg"  # "avg" or "gem" (snapmatch.training.model.GeM)
    freeze_blocks: int = 0  # keep the first k blocks of the backbone as they start (keep_pretrained)
    distill: float = 0.0  # weight of the pull towards the starting network's embeddings (keep_pretrained)
    l2sp: float = 0.0  # weight of the pull towards the starting network's weights (keep_pretrained)
    # Each product also trains as colour_classes - 1 other products: its photos with the colour channels
    # permuted (the same pack in other colours is another product, as flavours of one brand are).
    colour_classes: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: all cores)
    split: dict = field(default_factory=dict)  # snapmatch.training.splits.Split.to_dict(): what was held out

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        raw = dict(raw)
        raw["augment"] = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.get("augment", {}).items()})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class TrainResult:
    checkpoint: Path
    products: int
    images: int
    batch_size: int
    skipped: list[tuple[str, str]]  # (path or product, why)
    notes: list[str]


def training_photos(config: TrainConfig, dataset: Dataset, split: Split) -> list[Photo]:
    photos, _catalog, _queries = split.parts(dataset)
    return [photo for photo in photos if config.include_catalog or not photo.catalog]


def load_images(photos: list[Photo], shorter_side: int, *, progress: bool = False
                ) -> tuple[list[Photo], list[np.ndarray], list[tuple[str, str]]]:
    """Decode every photo once (RGB, shorter side resized) so epochs do not re-decode JPEGs.

    Returns the photos kept, their images, and (path, why) of each one that could not be read.
    """
    import cv2
    from tqdm import tqdm

    from snapmatch.sdk.image.preprocess import decode

    kept, images, skipped = [], [], []
    for photo in tqdm(photos, desc="decoding photos", unit="photo", disable=None if progress else True, leave=False):
        try:
            bgr = decode(photo.path)
        except ImageError as exc:
            skipped.append((str(photo.path), str(exc)))
            continue
        scale = shorter_side / min(bgr.shape[:2])
        if scale < 1:
            bgr = cv2.resize(bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        kept.append(photo)
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return kept, images, skipped


def trainable_products(photos: list[Photo]) -> tuple[list[Photo], list[str]]:
    """The photos of products with at least MIN_IMAGES_PER_PRODUCT images, and the products left out."""
    counts: dict[str, int] = {}
    for photo in photos:
        counts[photo.product] = counts.get(photo.product, 0) + 1
    short = sorted(product for product, n in counts.items() if n < MIN_IMAGES_PER_PRODUCT)
    return [photo for photo in photos if counts[photo.product] >= MIN_IMAGES_PER_PRODUCT], short


def batch_plan(products: int, requested: int, m_per_class: int) -> int:
    """The batch MPerClassSampler can fill: m photos of distinct products each, at most `requested`."""
    return max(m_per_class, min(requested, products * m_per_class) // m_per_class * m_per_class)


def parameter_groups(model: torch.nn.Module, criterion, config: TrainConfig) -> list[dict]:
    """The optimiser's groups: the backbone slow, new layers faster, a loss's class proxies fastest."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone = [p for n, p in trainable if n.startswith("features.")]
    new = [p for n, p in trainable if not n.startswith("features.")]
    groups = [{"params": backbone, "lr": config.backbone_lr}] + ([{"params": new, "lr": config.lr}] if new else [])
    if criterion.parameters():
        groups.append({"params": criterion.parameters(), "lr": config.proxy_lr})
    return groups


# Channel orders of the colour classes (COLOUR_ORDERS[0] is the photo as taken).
COLOUR_ORDERS = ((0, 1, 2), (2, 1, 0), (1, 2, 0), (2, 0, 1), (0, 2, 1), (1, 0, 2))


def colour_classes(labels: list[int], classes: int, count: int) -> tuple[list[int], list[int], list[int]]:
    """(photo index, label, channel order) of every training item: each photo once per colour class.

    Class v of product c (v >= 1) is label v * classes + c, its photos' channels in
    COLOUR_ORDERS[1 + (c + v - 1) % 5]: products differ in which orders they get.
    """
    if not 1 <= count <= len(COLOUR_ORDERS):
        raise InvalidArgumentError(f"colour_classes must be 1 to {len(COLOUR_ORDERS)} (one per channel order), "
                                   f"not {count}")
    items = [(i, label, 0) for i, label in enumerate(labels)]
    for variant in range(1, count):
        items += [(i, variant * classes + label, 1 + (label + variant - 1) % 5) for i, label in enumerate(labels)]
    indexes, new_labels, orders = (list(column) for column in zip(*items))
    return indexes, new_labels, orders


class AugmentedPhotos(torch.utils.data.Dataset):
    def __init__(self, images: list[np.ndarray], labels: list[int], config: TrainConfig,
                 catalog: list[bool] | None = None, orders: list[int] | None = None) -> None:
        self.images, self.labels, self.config = images, labels, config
        self.orders = orders or [0] * len(images)
        self.rng = np.random.default_rng(config.seed)
        self.catalog_of: dict[int, list[int]] = {}  # label -> indexes of its catalog images
        self.is_catalog = catalog or [False] * len(images)
        for index, (label, is_catalog) in enumerate(zip(labels, self.is_catalog)):
            if is_catalog:
                self.catalog_of.setdefault(label, []).append(index)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        label = self.labels[index]
        studio = self.catalog_of.get(label)
        if studio and not self.is_catalog[index] and self.rng.random() < self.config.catalog_pairs:
            index = studio[int(self.rng.integers(len(studio)))]
        view = augment(self.images[index], self.config.image_size, self.rng, self.config.augment)
        if self.orders[index]:
            view = np.ascontiguousarray(view[:, :, COLOUR_ORDERS[self.orders[index]]])
        return torch.from_numpy(view), self.labels[index]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, dataset: Dataset, split: Split, *, resume: bool = False, progress: bool = True,
          echo: Callable[[str], None] = print) -> TrainResult:
    """Train on the split's training photos of `dataset`; returns the final checkpoint and what was left out."""
    from pytorch_metric_learning.samplers import MPerClassSampler
    from tqdm import tqdm

    from snapmatch.training import pretrained

    out = Path(config.out)
    checkpoint_path = out / "last.pt"
    if not resume and (checkpoint_path.exists() or (out / "config.json").exists()):
        raise CatalogExistsError(f"run folder {out} already holds a run: --resume continues it, or choose a new --out")
    config.split = split.to_dict()
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    start_weights = pretrained.resolve(config.pretrained, config.backbone)

    # 1. Data: products are relabelled 0..C-1 (proxy losses need contiguous classes).
    photos, images, skipped = load_images(training_photos(config, dataset, split),
                                          shorter_side=round(config.image_size * 256 / 224), progress=progress)
    kept, short = trainable_products(photos)
    notes = []
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable photo(s): " + ", ".join(Path(p).name for p, _ in skipped[:5])
                     + (" ..." if len(skipped) > 5 else ""))
    if short:
        notes.append(f"left out {len(short)} product(s) with fewer than {MIN_IMAGES_PER_PRODUCT} readable images to "
                     "train on: " + ", ".join(short[:5]) + (" ..." if len(short) > 5 else ""))
        skipped += [(product, f"fewer than {MIN_IMAGES_PER_PRODUCT} images to train on") for product in short]
    left_out = set(short)
    images = [image for photo, image in zip(photos, images) if photo.product not in left_out]
    photos = kept
    classes = sorted({photo.product for photo in photos})
    if len(classes) < 2:
        raise DatasetError(f"{dataset.source}: {len(classes)} product(s) with {MIN_IMAGES_PER_PRODUCT}+ readable images "
                           "left to train on; metric learning needs at least 2")
    labels_count = len(classes) * config.colour_classes
    batch_size = batch_plan(labels_count, config.batch_size, config.m_per_class)
    if batch_size != config.batch_size:
        notes.append(f"batch {config.batch_size} -> {batch_size}: {labels_count} products x {config.m_per_class} "
                     "photos each")
    for note in notes:
        echo(note)
    to_class = {product: i for i, product in enumerate(classes)}
    indexes, labels, orders = colour_classes([to_class[photo.product] for photo in photos], len(classes),
                                             config.colour_classes)
    augmented = AugmentedPhotos([images[i] for i in indexes], labels, config,
                                [photos[i].catalog for i in indexes], orders)
    # An epoch is one pass's worth of the photos, whatever the colour classes add.
    sampler = MPerClassSampler(labels, m=config.m_per_class, batch_size=batch_size,
                               length_before_new_iter=max(len(photos), batch_size))
    loader = torch.utils.data.DataLoader(augmented, batch_size=batch_size, sampler=sampler, drop_last=True)

    # 2. Model, loss, optimiser: smaller steps for the pretrained backbone.
    model = pretrained.build(_model_config(config), start_weights)
    if config.freeze_blocks:
        freeze_blocks(model, config.freeze_blocks)
    distillation = Distillation(model, config.distill) if config.distill else None
    l2sp = L2SP(model, config.l2sp) if config.l2sp else None  # after freezing: frozen weights cannot move
    criterion = build_criterion(config.loss, num_classes=labels_count, dim=model.embedding_dim)
    groups = parameter_groups(model, criterion, config)
    optimiser = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps = max(1, config.epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.1, anneal_strategy="cos"
    )
    start_epoch = 0
    if resume and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        if state.get("split") != split.to_dict():
            raise DatasetError(f"{checkpoint_path} was trained on another split of the data (other photos, "
                               "--holdout, --folds, --unseen or --split-seed): resume with the run's own flags")
        model.load_state_dict(state["model"])
        criterion.loss.load_state_dict(state["criterion"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    def checkpoint(epoch: int) -> None:
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(),
            "criterion": criterion.loss.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "config": dataclasses.asdict(config),
            "model_config": dataclasses.asdict(_model_config(config)),
            "data_fingerprint": dataset.fingerprint(photos),  # exactly the photos trained on
            "split": split.to_dict(),
        })

    # 3. Epochs: train, log, checkpoint.
    log = open(out / "log.jsonl", "a")
    for epoch in range(start_epoch, config.epochs):
        # Per-epoch seeds: a resumed run draws the same batches and views as an uninterrupted one.
        seed_everything(config.seed * 1000 + epoch)
        augmented.rng = np.random.default_rng([config.seed, epoch])
        model.train()  # keeps BatchNorm frozen when the model config says so
        started, losses = time.time(), []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=None if progress else True, leave=False)
        for batch, batch_labels in bar:
            embeddings = model(batch)
            loss = criterion(embeddings, batch_labels)
            if distillation is not None:
                loss = loss + distillation(batch, embeddings)
            if l2sp is not None:
                loss = loss + l2sp()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.time() - started, 1)}
        log.write(json.dumps(record) + "\n")
        log.flush()
        if progress:
            echo(f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f} ({record['seconds']} s)")
        checkpoint(epoch + 1)
    if config.epochs == 0:
        checkpoint(0)  # the pretrained network unchanged: the ImageNet-features baseline
    log.close()
    return TrainResult(checkpoint_path, len(classes), len(photos), batch_size, skipped, notes)


def _model_config(config: TrainConfig):
    from snapmatch.training.model import ModelConfig

    return ModelConfig(backbone=config.backbone, head=config.head, dim=config.dim or None, freeze_bn=config.freeze_bn,
                       pooling=config.pooling)
