"""Helpers of the export tests: a small stand-in embedding network and real grocery photos.

The stand-in has the contract of `snapmatch.training.model.EmbeddingNet`
(uint8 RGB [N, H, W, 3] in, L2-normalised float32 [N, D] out, preprocessing
inside) at a fraction of its cost, so export and quantization tests stay fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dev_data import GROCERY  # noqa: E402  ($SNAPMATCH_DATA; .ci/run sets it)


def grocery_photos(split: str = "train", *, per_product: int, products: int, skip: int = 0) -> list[tuple[Path, int]]:
    """(path, fine label) of `per_product` photos of each of the first `products` products, after `skip` each."""
    listing = GROCERY / f"{split}.txt"
    if not listing.is_file():
        pytest.skip(f"the grocery photos are not at {GROCERY}")
    by_label: dict[int, list[Path]] = {}
    for line in listing.read_text().splitlines():
        if line.strip():
            path, fine, _coarse = (part.strip() for part in line.split(","))
            by_label.setdefault(int(fine), []).append(GROCERY / path)
    # Every 7th product: fruit, vegetables and packages alike, not 4 kinds of apple.
    labels = sorted(by_label)[::7][:products]
    return [(path, label) for label in labels for path in by_label[label][skip:skip + per_product]]


def stand_in_net(*, dim: int = 32, seed: int = 0, centre_on=None):
    """A seeded two-conv network with a squeeze-excitation block and EmbeddingNet's contract.

    Random features of photos share one large common component (every cosine
    is ~0.99), which would hide quantization error; `centre_on` (uint8
    [N, H, W, 3] images) subtracts their mean pooled feature before the head,
    so embeddings spread out as a trained network's do.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    class StandInNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
            self.block = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.squeeze = nn.Conv2d(32, 8, 1)  # squeeze-excitation, as in MobileNetV3's blocks
            self.excite = nn.Conv2d(8, 32, 1)
            self.head = nn.Linear(32, dim, bias=False)
            self.register_buffer("centre", torch.zeros(32))

        def pooled(self, images: torch.Tensor) -> torch.Tensor:
            x = images.to(torch.float32) / 127.5 - 1.0
            x = x.permute(0, 3, 1, 2)
            x = F.relu(self.block(F.relu(self.stem(x))))
            gate = F.hardsigmoid(self.excite(F.relu(self.squeeze(F.adaptive_avg_pool2d(x, 1)))))
            return (x * gate).mean(dim=(2, 3))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.head(self.pooled(images) - self.centre), dim=1)

    torch.manual_seed(seed)
    net = StandInNet().eval()
    if centre_on is not None:
        with torch.no_grad():
            net.centre.copy_(net.pooled(torch.from_numpy(np.asarray(centre_on))).mean(dim=0))
    return net
