"""The recipe's levers: GeM pooling, frozen blocks, distillation, and starting from the shipped ONNX model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from snapmatch.export.onnx_export import ExportSpec, export_onnx  # noqa: E402
from snapmatch.sdk.model.embedder import Embedder  # noqa: E402
from snapmatch.sdk.errors import ModelError  # noqa: E402
from snapmatch.sdk.model.model_spec import InputSpec  # noqa: E402
from snapmatch.sdk.product_search import DEFAULT_MODEL  # noqa: E402
from snapmatch.training import pretrained  # noqa: E402
from snapmatch.training.keep_pretrained import L2SP, Distillation, freeze_blocks  # noqa: E402
from snapmatch.training.model import GeM, ModelConfig, build_model  # noqa: E402


def images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


def test_gem_lies_between_the_mean_and_the_maximum_and_exports():
    x = torch.rand(2, 8, 5, 5)
    pooled = GeM(3.0)(x).flatten(1)
    assert torch.all(pooled >= x.mean(dim=(2, 3)) - 1e-6) and torch.all(pooled <= x.amax(dim=(2, 3)) + 1e-6)
    assert torch.allclose(GeM(1.0)(x).flatten(1), x.clamp(min=1e-6).mean(dim=(2, 3)), atol=1e-6)


def test_a_gem_network_exports_and_runs_in_the_runtime(tmp_path):
    net = build_model(ModelConfig(pooling="gem")).eval()
    path = export_onnx(net, tmp_path / "gem.onnx", spec=ExportSpec(InputSpec(64, 64), data_fingerprint="t", id_prefix="t"))
    batch = images(3)
    with torch.no_grad():
        expected = net(batch).numpy()
    assert np.min(np.sum(Embedder(path, threads=1).embed_batch(batch.numpy()) * expected, axis=1)) > 0.999


def test_the_shipped_model_seeds_a_network_that_reproduces_it_with_either_pooling():
    backbone = pretrained.infer_backbone("default")
    source = pretrained.resolve("default", backbone)
    assert source == pretrained.default_seed()  # the fp32 twin of an int8 default (int8 cannot seed a network)
    seed = Embedder(source, threads=1)
    assert seed.spec.quantization == "fp32"
    net = pretrained.build(ModelConfig(backbone=backbone), source).eval()
    batch = images(2, size=224)
    with torch.no_grad():
        ours = net(batch).numpy()
    assert np.min(np.sum(ours * seed.embed_batch(batch.numpy()), axis=1)) > 0.999
    # ... and agrees with the shipped model itself as closely as int8 agrees with fp32
    assert np.min(np.sum(ours * Embedder(DEFAULT_MODEL, threads=1).embed_batch(batch.numpy()), axis=1)) > 0.9
    gem = pretrained.build(ModelConfig(backbone=backbone, pooling="gem"), source)
    assert isinstance(gem.avgpool, GeM) and gem.features[0][0].weight.equal(net.features[0][0].weight)
    other = "small" if backbone == "large_minimalistic" else "large_minimalistic"
    with pytest.raises(ModelError, match=f"{other} needs --pretrained FILE"):
        pretrained.resolve("default", other)
    with pytest.raises(ModelError, match="cannot seed"):
        pretrained.build(ModelConfig(backbone=backbone, head="linear", dim=16), source)
    with pytest.raises(ModelError, match="cannot seed"):
        pretrained.build(ModelConfig(backbone=backbone), str(DEFAULT_MODEL))  # int8 weights


def test_frozen_blocks_keep_their_weights_and_the_rest_learn():
    net = build_model(ModelConfig(freeze_bn=False))
    assert freeze_blocks(net, 2) > 0
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimiser = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net.train()
    net(images(4)).sum().backward()
    optimiser.step()
    changed = {name for name, p in net.named_parameters() if not torch.equal(p, before[name])}
    assert changed and not any(name.startswith(("features.0.", "features.1.")) for name in changed)


def test_distillation_is_zero_at_the_start_and_grows_as_the_network_moves():
    net = build_model(ModelConfig(freeze_bn=False)).eval()
    distill = Distillation(net, weight=2.0)
    batch = images(4)
    assert float(distill(batch, net(batch)).detach()) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert float(distill(batch, net(batch)).detach()) > 0.01


def test_l2sp_is_zero_at_the_start_and_pulls_moved_weights_back():
    net = build_model(ModelConfig(freeze_bn=False))
    freeze_blocks(net, 2)
    penalty = L2SP(net, weight=0.5)
    assert float(penalty().detach()) == 0.0
    moved = [p for p in net.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in moved:
            p.add_(0.01)
    expected = 0.5 * sum(p.numel() for p in moved) * 0.01 ** 2
    assert float(penalty().detach()) == pytest.approx(expected, rel=1e-3)  # frozen weights are not counted
    penalty().backward()  # its gradient points each weight back to where it started
    assert all(torch.allclose(p.grad, torch.full_like(p, 0.5 * 2 * 0.01), rtol=1e-3) for p in moved)
