"""Keep what the starting network knows while learning what products share.

Fine-tuning on a few dozen products pulls the embedding towards telling
exactly those apart; products it never saw lose the general features that
told them apart before. Three levers hold it back:

- `freeze_blocks`: the first k blocks of `features` keep their weights
  (edges and textures are what every product shares);
- `distill`: each photo's embedding stays near the starting network's
  (a frozen copy), weighted against the metric loss: loss += w * mean(1 - cos);
- `l2sp`: the weights themselves stay near where they started (L2-SP, Li et
  al. 2018): loss += w * sum((theta - theta_0)^2) over the trainable weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def freeze_blocks(model: nn.Module, blocks: int) -> int:
    """Stop the gradients of `features[:blocks]`; returns how many parameters were frozen."""
    frozen = 0
    for block in list(model.features)[:blocks]:
        for parameter in block.parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


class Distillation:
    """The starting network's embeddings as a soft target: w * mean(1 - cos(student, teacher))."""

    def __init__(self, model: nn.Module, weight: float) -> None:
        self.weight = weight
        self.teacher = copy.deepcopy(model).eval()
        self.teacher.requires_grad_(False)

    def __call__(self, images: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(images)
        return self.weight * (1.0 - (embeddings * target).sum(dim=1)).mean()


class L2SP:
    """A penalty towards the starting weights: w * sum over trainable tensors of ||theta - theta_0||^2."""

    def __init__(self, model: nn.Module, weight: float) -> None:
        self.weight = weight
        self.start = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    def __call__(self) -> torch.Tensor:
        return self.weight * sum(((p - p0) ** 2).sum() for p, p0 in self.start)  # type: ignore[return-value]
