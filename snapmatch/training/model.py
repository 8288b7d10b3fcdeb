"""The embedding network: uint8 RGB images in, L2-normalised embeddings out.

`EmbeddingNet` is exactly what gets exported to ONNX, so the whole input
contract lives in its `forward`: cast, scale to [-1, 1] (the input range of
Google's MobileNetV3 weights), NHWC -> NCHW, backbone, global average pool,
head, L2 normalisation. The SDK only decodes and resizes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snapmatch.sdk.errors import InvalidArgumentError
from snapmatch.training.mobilenetv3 import (
    MobileNetV3,
    freeze_batchnorm,
    load_pretrained,
    mobilenet_v3_large_minimalistic,
    mobilenet_v3_small,
)

BACKBONES = {"small": mobilenet_v3_small, "large_minimalistic": mobilenet_v3_large_minimalistic}
HEADS = ("pooled", "linear", "prelogits")
POOLINGS = ("avg", "gem")


@dataclass(frozen=True)
class ModelConfig:
    """What a checkpoint stores to rebuild its network."""

    backbone: str = "small"  # "small" (576 pooled features) or "large_minimalistic" (960)
    head: str = "pooled"  # "pooled": no new layer; "linear": new Linear to dim; "prelogits": classifier.0 + activation
    dim: int | None = None  # embedding size: required by "linear"; with "prelogits" adds a Linear to dim
    tf_padding: bool = True  # TF "SAME" padding on stride-2 convs, as the pretrained weights were trained
    freeze_bn: bool = True  # keep the (folded) BatchNorm layers in eval mode with fixed parameters
    pooling: str = "avg"  # "avg" (the classifier's global average) or "gem" (generalised mean, instance retrieval)
    gem_p: float = 3.0  # GeM's exponent: 1 is the average, larger leans towards the maximum

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise InvalidArgumentError(f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}")
        if self.head not in HEADS:
            raise InvalidArgumentError(f"unknown head {self.head!r}; choose one of {list(HEADS)}")
        if self.head == "linear" and not self.dim:
            raise InvalidArgumentError('head="linear" needs dim')
        if self.pooling not in POOLINGS:
            raise InvalidArgumentError(f"unknown pooling {self.pooling!r}; choose one of {list(POOLINGS)}")
        if self.head == "pooled" and self.dim is not None:
            raise InvalidArgumentError('head="pooled" has no new layer: leave dim unset (it is the backbone width)')

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**data)


class EmbeddingNet(nn.Module):
    """uint8 RGB [N, H, W, 3] -> float32 unit vectors [N, embedding_dim]."""

    def __init__(self, config: ModelConfig, backbone: MobileNetV3):
        super().__init__()
        self.config = config
        self.features = backbone.features
        self.avgpool = backbone.avgpool if config.pooling == "avg" else GeM(config.gem_p)
        self.head, self.embedding_dim = _make_head(config, backbone)
        if config.freeze_bn:
            freeze_batchnorm(self)

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        if self.config.freeze_bn:
            freeze_batchnorm(self)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"EmbeddingNet takes uint8 RGB images [N, H, W, 3], got {images.dtype}")
        x = images.to(torch.float32) / 127.5 - 1.0
        x = x.permute(0, 3, 1, 2)
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return F.normalize(self.head(x), dim=1)


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al.): (mean x^p)^(1/p) per channel, over positive activations."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3), keepdim=True).pow(1.0 / self.p)


def _make_head(config: ModelConfig, backbone: MobileNetV3) -> tuple[nn.Module, int]:
    width = backbone.out_channels
    if config.head == "pooled":
        return nn.Identity(), width
    if config.head == "linear":
        return nn.Linear(width, config.dim), config.dim
    # "prelogits": the pretrained classifier's first Linear and its activation (1024-d Small, 1280-d Large).
    prelogits, activation = backbone.classifier[0], backbone.classifier[1]
    if config.dim is None:
        return nn.Sequential(prelogits, activation), prelogits.out_features
    return nn.Sequential(prelogits, activation, nn.Linear(prelogits.out_features, config.dim)), config.dim


def build_model(config: ModelConfig, pretrained: str | os.PathLike | None = None) -> EmbeddingNet:
    """An EmbeddingNet for `config`, its backbone loaded from a state-dict file or "imagenet" (torchvision, online)."""
    backbone = BACKBONES[config.backbone](tf_padding=config.tf_padding)
    if pretrained is not None:
        load_pretrained(backbone, pretrained)
    return EmbeddingNet(config, backbone).eval()
