"""Metric-learning losses and miners, from pytorch-metric-learning (not hand-written)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from snapmatch.sdk.errors import InvalidArgumentError

LOSSES = ("triplet", "multisimilarity", "arcface", "subcenter_arcface", "proxyanchor", "contrastive")


@dataclass
class Criterion:
    """A loss and its optional miner; `parameters` are trainable (proxy losses such as ArcFace)."""

    loss: torch.nn.Module
    miner: torch.nn.Module | None

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, pairs)

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.loss.parameters())


def build_criterion(name: str, *, num_classes: int, dim: int) -> Criterion:
    """The loss named `name`, with the settings its paper recommends for cosine embeddings.

    triplet:          batch-hard triplet (TripletMarginLoss + BatchHardMiner), the baseline
    multisimilarity:  Multi-Similarity loss + miner (Wang et al. 2019)
    arcface:          additive angular margin over learned class proxies (Deng et al. 2019)
    subcenter_arcface: ArcFace with 3 proxies a class, so a product's few looks (front, side,
                      studio) need not share one centre (Deng et al. 2020)
    proxyanchor:      Proxy-Anchor (Kim et al. 2020): each proxy pulls all its class's photos in a batch
    contrastive:      contrastive loss with a negative margin, on all pairs
    """
    from pytorch_metric_learning import distances, losses, miners

    cosine = distances.CosineSimilarity()
    if name == "triplet":
        return Criterion(
            losses.TripletMarginLoss(margin=0.2, distance=cosine),
            miners.BatchHardMiner(distance=cosine),
        )
    if name == "multisimilarity":
        return Criterion(
            losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5),
            miners.MultiSimilarityMiner(epsilon=0.1),
        )
    if name == "arcface":
        return Criterion(losses.ArcFaceLoss(num_classes=num_classes, embedding_size=dim, margin=28.6, scale=30), None)
    if name == "subcenter_arcface":
        return Criterion(losses.SubCenterArcFaceLoss(num_classes=num_classes, embedding_size=dim, margin=28.6,
                                                     scale=30, sub_centers=3), None)
    if name == "proxyanchor":
        return Criterion(losses.ProxyAnchorLoss(num_classes=num_classes, embedding_size=dim, margin=0.1, alpha=32), None)
    if name == "contrastive":
        return Criterion(losses.ContrastiveLoss(pos_margin=1.0, neg_margin=0.5, distance=cosine), None)
    raise InvalidArgumentError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
