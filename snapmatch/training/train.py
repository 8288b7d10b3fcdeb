"""Fine-tune the embedding network with a metric-learning loss. Reads top to bottom.

    snapmatch train --data ../shared/data/grocery --out runs/ms --loss multisimilarity

A checkpoint (`last.pt`: model, optimiser, epoch, config, random state) is
written atomically after every epoch; `--resume` continues from it, so a run
killed mid-way loses at most one epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from snapmatch.training.augment import AugmentConfig, augment
from snapmatch.training.grocery import GroceryData, Photo, fingerprint
from snapmatch.training.losses import build_criterion


@dataclass
class TrainConfig:
    data: str = "../shared/data/grocery"  # dataset root (train.txt, classes.csv, ...)
    out: str = "runs/default"  # checkpoints, log and config go here
    backbone: str = "small"  # "small" or "large_minimalistic"
    pretrained: str = "../shared/weights/mobilenet_v3_small-imagenet.pt"  # a .pt path, "imagenet" (download) or ""
    head: str = "pooled"  # "pooled" (backbone features), "linear" (new layer to dim) or "prelogits"
    dim: int = 0  # embedding size for a linear head (0: the head's natural size)
    loss: str = "multisimilarity"  # see snapmatch.training.losses.LOSSES
    epochs: int = 10
    batch_size: int = 64
    m_per_class: int = 4  # photos of each product in a batch (MPerClassSampler)
    lr: float = 3e-4  # AdamW learning rate of new layers and loss proxies
    backbone_lr: float = 1e-4  # smaller: keep the ImageNet features that help unseen products
    weight_decay: float = 1e-4
    image_size: int = 224
    freeze_bn: bool = True  # BatchNorm is folded in the shipped weights: keep it in eval mode
    include_iconic: bool = True  # train on the iconic catalog images too
    exclude_products: list[int] = field(default_factory=list)  # fine labels left out (protocol P2)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: all cores)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        raw = dict(raw)
        raw["augment"] = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.get("augment", {}).items()})
        return cls(**raw)


def training_photos(config: TrainConfig) -> list[Photo]:
    data = GroceryData.load(config.data)
    photos = data.split("train") + (data.iconic_photos() if config.include_iconic else [])
    excluded = set(config.exclude_products)
    return [photo for photo in photos if photo.label not in excluded]


def load_images(photos: list[Photo], shorter_side: int) -> list[np.ndarray]:
    """Decode every photo once (RGB, shorter side resized) so epochs do not re-decode JPEGs."""
    import cv2

    from snapmatch.sdk.preprocess import decode

    images = []
    for photo in photos:
        bgr = decode(photo.path)
        scale = shorter_side / min(bgr.shape[:2])
        if scale < 1:
            bgr = cv2.resize(bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


class AugmentedPhotos(torch.utils.data.Dataset):
    def __init__(self, images: list[np.ndarray], labels: list[int], config: TrainConfig) -> None:
        self.images, self.labels, self.config = images, labels, config
        self.rng = np.random.default_rng(config.seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        view = augment(self.images[index], self.config.image_size, self.rng, self.config.augment)
        return torch.from_numpy(view), self.labels[index]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train; returns the path of the final checkpoint."""
    from pytorch_metric_learning.samplers import MPerClassSampler
    from tqdm import tqdm

    from snapmatch.training.model import build_model

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "last.pt"
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)

    # 1. Data: products are relabelled 0..C-1 (proxy losses need contiguous classes).
    photos = training_photos(config)
    classes = sorted({photo.label for photo in photos})
    to_class = {label: i for i, label in enumerate(classes)}
    labels = [to_class[photo.label] for photo in photos]
    images = load_images(photos, shorter_side=round(config.image_size * 256 / 224))
    dataset = AugmentedPhotos(images, labels, config)
    sampler = MPerClassSampler(labels, m=config.m_per_class, batch_size=config.batch_size, length_before_new_iter=len(labels))
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True)

    # 2. Model, loss, optimiser: smaller steps for the pretrained backbone.
    model = build_model(_model_config(config), pretrained=config.pretrained or None)
    criterion = build_criterion(config.loss, num_classes=len(classes), dim=model.embedding_dim)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone = [p for n, p in trainable if n.startswith("features.")]
    new = [p for n, p in trainable if not n.startswith("features.")] + criterion.parameters()
    groups = [{"params": backbone, "lr": config.backbone_lr}] + ([{"params": new, "lr": config.lr}] if new else [])
    optimiser = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps = max(1, config.epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.1, anneal_strategy="cos"
    )
    start_epoch = 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        criterion.loss.load_state_dict(state["criterion"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]
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
            "data_fingerprint": fingerprint(photos, tuple(config.exclude_products)),
        })

    # 3. Epochs: train, log, checkpoint.
    log = open(out / "log.jsonl", "a")
    for epoch in range(start_epoch, config.epochs):
        # Per-epoch seeds: a resumed run draws the same batches and views as an uninterrupted one.
        seed_everything(config.seed * 1000 + epoch)
        dataset.rng = np.random.default_rng([config.seed, epoch])
        model.train()  # keeps BatchNorm frozen when the model config says so
        started, losses = time.time(), []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for batch, batch_labels in bar:
            loss = criterion(model(batch), batch_labels)
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
            print(f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f} ({record['seconds']} s)", flush=True)
        checkpoint(epoch + 1)
    if config.epochs == 0:
        checkpoint(0)  # the pretrained network unchanged: the ImageNet-features baseline
    log.close()
    return checkpoint_path


def _model_config(config: TrainConfig):
    from snapmatch.training.model import ModelConfig

    return ModelConfig(backbone=config.backbone, head=config.head, dim=config.dim or None, freeze_bn=config.freeze_bn)
