"""Where a run's weights start, offline: the shipped model, a state-dict file, or (online) torchvision's.

`--pretrained default` starts from the shipped default model's own weights:
it already knows products, and it is on every install. Its ONNX graph holds
the backbone with BatchNorm folded into the convolutions, which is exactly
how the converted ImageNet weights store it (BatchNorm as identity plus a
bias), so each ONNX Conv maps back onto one PyTorch convolution and its
BatchNorm. The load is checked: the rebuilt network must reproduce the ONNX
model's embeddings, or it fails with a message instead of training from
garbage.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snapmatch.sdk.errors import ModelError
from snapmatch.training.model import EmbeddingNet, GeM, ModelConfig, build_model

ID_PREFIX_BACKBONES = {"mnv3s": "small", "mnv3lm": "large_minimalistic"}
PARITY = 0.999  # least cosine between the rebuilt network and the ONNX model on a probe batch


def default_seed() -> str:
    """The shipped model's fp32 twin, which training starts from (int8 weights cannot seed a network)."""
    from snapmatch.sdk.product_search import MODELS_DIR, default_model_path

    twin = MODELS_DIR / "default-fp32.onnx"
    return str(twin if twin.is_file() else default_model_path())


def infer_backbone(pretrained: str | None) -> str:
    """The backbone the starting weights are for: the shipped model's, an .onnx model's, or a state dict's."""
    if pretrained in (None, "default"):
        pretrained = default_seed()
    if pretrained in ("", "imagenet"):
        return "small"  # torchvision publishes ImageNet weights of Small only
    path = Path(pretrained)
    if path.suffix == ".onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        prefix = meta.get("snapmatch.model_id", "").split("-")[0]
        if prefix in ID_PREFIX_BACKBONES:
            return ID_PREFIX_BACKBONES[prefix]
        raise ModelError(f"{path} does not say which backbone it is (no snapmatch model id): give --backbone")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read pretrained weights {path}: {exc}") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    blocks = {int(key.split(".")[1]) for key in state if key.startswith("features.") and key.split(".")[1].isdigit()}
    return "large_minimalistic" if blocks and max(blocks) >= 16 else "small"


def resolve(pretrained: str | None, backbone: str) -> str:
    """The weights a run starts from: "default" (the shipped model), "imagenet" (download), a .pt or .onnx path, or ""."""
    if pretrained in (None, "default"):
        shipped = infer_backbone(None)
        if backbone != shipped:
            raise ModelError(f"the shipped model is MobileNetV3-{shipped}; {backbone} needs --pretrained FILE "
                             "(a state-dict .pt with torchvision's keys) or --pretrained imagenet (online)")
        return default_seed()
    if pretrained in ("", "imagenet"):
        return pretrained
    if not Path(pretrained).is_file():
        raise ModelError(f"pretrained weights not found: {pretrained}")
    return pretrained


def build(config: ModelConfig, pretrained: str) -> EmbeddingNet:
    """The network of `config` with weights from `pretrained` (see resolve); "" leaves it random."""
    if pretrained.endswith(".onnx"):
        # Loaded and checked as the model was exported (average pooling), then given this config's pooling.
        net = build_model(dataclasses.replace(config, pooling="avg"))
        load_from_onnx(net, pretrained)
        if config.pooling != "avg":
            net.avgpool, net.config = GeM(config.gem_p), config
        return net
    try:
        return build_model(config, pretrained=pretrained or None)
    except (RuntimeError, OSError, ValueError) as exc:  # torch's own errors for a wrong or broken file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load pretrained weights {pretrained} into a {config.backbone} backbone: {first}") \
            from None


@torch.no_grad()
def load_from_onnx(net: EmbeddingNet, path: str | os.PathLike) -> None:
    """Copy a snapmatch fp32 ONNX model's backbone weights into `net` (same architecture), and check the result."""
    import onnx
    from onnx import numpy_helper

    from snapmatch.sdk.model.embedder import Embedder

    embedder = Embedder(path, threads=1)
    spec = embedder.spec
    backbone = ID_PREFIX_BACKBONES.get(spec.model_id.split("-")[0])
    if backbone != net.config.backbone or spec.quantization != "fp32" or net.config.head != "pooled":
        raise ModelError(f"{path} ({spec.model_id}, {spec.quantization}) cannot seed a {net.config.backbone} "
                         f"network with a {net.config.head} head: start from an fp32 snapmatch model of the same "
                         "backbone with a pooled head, or from its training checkpoint")
    proto = onnx.load(os.fspath(path))
    weights = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda module, _i, _o: order.append(module))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    probe = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, spec.input.height, spec.input.width, 3),
                                                               dtype=np.uint8))
    net.eval()
    net(probe)
    for hook in hooks:
        hook.remove()
    if len(order) != len(convs):
        raise ModelError(f"{path} has {len(convs)} convolutions, a {net.config.backbone} backbone {len(order)}")
    batchnorm_after = _batchnorm_after(net)
    for module, node in zip(order, convs):
        if node.input[1] not in weights or (len(node.input) > 2 and node.input[2] not in weights):
            raise ModelError(f"{path}: convolution {node.name} takes computed weights; export it in fp32")
        weight = weights[node.input[1]]
        bias = weights[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0], np.float32)
        if tuple(weight.shape) != tuple(module.weight.shape):
            raise ModelError(f"{path}: convolution {node.name} is {weight.shape}, the network's {tuple(module.weight.shape)}")
        module.weight.copy_(torch.from_numpy(weight.copy()))
        if module.bias is not None:
            module.bias.copy_(torch.from_numpy(bias.copy()))
        elif module in batchnorm_after:
            bn = batchnorm_after[module]  # identity BatchNorm carrying the folded bias, as the shipped weights are
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(bias.copy()))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        elif np.any(bias):
            raise ModelError(f"{path}: convolution {node.name} has a bias the network has no place for")
    expected = embedder.embed_batch(probe.numpy())
    cosine = float(np.min(np.sum(net(probe).numpy() * expected, axis=1)))
    if cosine < PARITY:
        raise ModelError(f"{path}: the rebuilt network does not reproduce the model (cosine {cosine:.4f}); "
                         "start from its training checkpoint instead")


def _batchnorm_after(net: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Each bias-less convolution followed directly by a BatchNorm in its Sequential."""
    pairs = {}
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            for first, second in zip(children, children[1:]):
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    pairs[first] = second
    return pairs
