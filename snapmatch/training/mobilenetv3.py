"""MobileNetV3 in plain PyTorch, with torchvision's module names and parameter shapes.

The module tree (`features.N.block.M...`, `avgpool`, `classifier.*`) and the
configuration tables are torchvision's (`torchvision.models.mobilenetv3`), so
torchvision's checkpoints and the converted TF ones (Google's MobileNetV3 release)
load with `load_state_dict(sd, strict=True)`. Two additions:

- `tf_padding`: TensorFlow's "SAME" padding for stride-2 convolutions (the
  extra pixel goes bottom/right). Google's weights were trained with it.
- `mobilenet_v3_large_minimalistic`: Google's Large variant without SE, with
  ReLU everywhere and 3x3 depthwise kernels (torchvision has no such model).

Width multipliers, dilation and the reduced tail are left out: no weights
here use them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from snapmatch.sdk.errors import InvalidArgumentError

# torchvision's IMAGENET1K_V1 checkpoints (symmetric padding, ImageNet mean/std inputs).
TORCHVISION_URLS = {
    "mobilenet_v3_small": "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
    "mobilenet_v3_large": "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
}


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of divisor, never below 90% of value."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one spatial axis: output ceil(size / stride), extra pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TensorFlow's "SAME" padding: an explicit F.pad, then an unpadded convolution.

    The padding depends on the input's parity (even sizes get the extra pixel
    bottom/right; odd ones are padded symmetrically). In an ONNX export (at a
    fixed height and width) it becomes one Conv node with asymmetric `pads`,
    not a Pad node: ONNX Runtime runs that as fast as a symmetric Conv, and
    quantization sees a plain Conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        left, right = same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if torch.onnx.is_in_onnx_export():
            pads = (top, left, bottom, right)
            return _AsymmetricConv.apply(x, self.weight, pads, self.kernel_size, self.stride, self.groups)
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, None, self.stride, 0, 1, self.groups)


class _AsymmetricConv(torch.autograd.Function):
    """conv2d of a zero-padded input, exported as one ONNX Conv with `pads` = (top, left, bottom, right).

    Used only while exporting with the TorchScript exporter (which calls
    `symbolic`); training never goes through it, so it needs no backward.
    """

    @staticmethod
    def forward(ctx, x, weight, pads, kernel, stride, groups):
        top, left, bottom, right = pads
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, None, stride, 0, 1, groups)

    @staticmethod
    def symbolic(g, x, weight, pads, kernel, stride, groups):
        return g.op(
            "Conv", x, weight, kernel_shape_i=list(kernel), pads_i=list(pads), strides_i=list(stride), group_i=groups,
            dilations_i=[1, 1],
        )


class Conv2dNormActivation(nn.Sequential):
    """conv (no bias), BatchNorm, optional activation: torchvision's `ops.Conv2dNormActivation` keys (0, 1, 2)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[..., nn.Module] | None = nn.ReLU,
        tf_padding: bool = False,
    ):
        if tf_padding and stride > 1:
            conv: nn.Module = Conv2dSame(in_channels, out_channels, kernel_size, stride=stride, groups=groups)
        else:  # stride 1 with an odd kernel: SAME is symmetric, the same as PyTorch's padding
            conv = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, groups=groups,
                bias=False,
            )
        layers = [conv, nn.BatchNorm2d(out_channels, eps=0.001, momentum=0.01)]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """torchvision's `ops.SqueezeExcitation` with MobileNetV3's hard-sigmoid gate."""

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


@dataclass(frozen=True)
class BlockConfig:
    """One row of torchvision's `_mobilenet_v3_conf` table (width multiplier 1, no dilation)."""

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    activation: str  # "RE" (ReLU) or "HS" (Hardswish)
    stride: int


class InvertedResidual(nn.Module):
    """expand 1x1 (if wider) -> depthwise kxk -> SE (optional) -> project 1x1, residual when shapes allow."""

    def __init__(self, cnf: BlockConfig, tf_padding: bool = False):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        activation = nn.Hardswish if cnf.activation == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, 1, activation=activation))
        layers.append(
            Conv2dNormActivation(
                cnf.expanded_channels, cnf.expanded_channels, cnf.kernel, stride=cnf.stride,
                groups=cnf.expanded_channels, activation=activation, tf_padding=tf_padding,
            )
        )
        if cnf.use_se:
            layers.append(SqueezeExcitation(cnf.expanded_channels, _make_divisible(cnf.expanded_channels // 4, 8)))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = result + x
        return result


def _small_table() -> list[BlockConfig]:
    b = BlockConfig
    return [
        b(16, 3, 16, 16, True, "RE", 2),
        b(16, 3, 72, 24, False, "RE", 2),
        b(24, 3, 88, 24, False, "RE", 1),
        b(24, 5, 96, 40, True, "HS", 2),
        b(40, 5, 240, 40, True, "HS", 1),
        b(40, 5, 240, 40, True, "HS", 1),
        b(40, 5, 120, 48, True, "HS", 1),
        b(48, 5, 144, 48, True, "HS", 1),
        b(48, 5, 288, 96, True, "HS", 2),
        b(96, 5, 576, 96, True, "HS", 1),
        b(96, 5, 576, 96, True, "HS", 1),
    ]


def _large_table() -> list[BlockConfig]:
    b = BlockConfig
    return [
        b(16, 3, 16, 16, False, "RE", 1),
        b(16, 3, 64, 24, False, "RE", 2),
        b(24, 3, 72, 24, False, "RE", 1),
        b(24, 5, 72, 40, True, "RE", 2),
        b(40, 5, 120, 40, True, "RE", 1),
        b(40, 5, 120, 40, True, "RE", 1),
        b(40, 3, 240, 80, False, "HS", 2),
        b(80, 3, 200, 80, False, "HS", 1),
        b(80, 3, 184, 80, False, "HS", 1),
        b(80, 3, 184, 80, False, "HS", 1),
        b(80, 3, 480, 112, True, "HS", 1),
        b(112, 3, 672, 112, True, "HS", 1),
        b(112, 5, 672, 160, True, "HS", 2),
        b(160, 5, 960, 160, True, "HS", 1),
        b(160, 5, 960, 160, True, "HS", 1),
    ]


def _minimalistic(table: list[BlockConfig]) -> list[BlockConfig]:
    """Google's "minimalistic" variant of a table: no SE, ReLU only, 3x3 kernels."""
    return [BlockConfig(c.input_channels, 3, c.expanded_channels, c.out_channels, False, "RE", c.stride) for c in table]


class MobileNetV3(nn.Module):
    """MobileNetV3 classifier: `features` (stem, inverted residuals, last 1x1 conv), `avgpool`, `classifier`."""

    def __init__(
        self,
        blocks: list[BlockConfig],
        last_channel: int,
        *,
        num_classes: int = 1000,
        dropout: float = 0.2,
        activation: Callable[..., nn.Module] = nn.Hardswish,
        tf_padding: bool = False,
        arch: str = "",
    ):
        super().__init__()
        self.arch = arch
        self.tf_padding = tf_padding
        first, last_in = blocks[0].input_channels, blocks[-1].out_channels
        self.out_channels = 6 * last_in  # what `features` gives: 576 (Small), 960 (Large)
        stem = Conv2dNormActivation(3, first, 3, stride=2, activation=activation, tf_padding=tf_padding)
        layers: list[nn.Module] = [stem]
        layers += [InvertedResidual(cnf, tf_padding=tf_padding) for cnf in blocks]
        layers.append(Conv2dNormActivation(last_in, self.out_channels, 1, activation=activation))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(self.out_channels, last_channel),
            activation(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so a model built without weights matches its counterpart.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled backbone features, [N, out_channels], of normalised NCHW float input."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [N, num_classes] of normalised NCHW float input."""
        return self.classifier(self.forward_pooled(x))


def mobilenet_v3_small(tf_padding: bool = True) -> MobileNetV3:
    """MobileNetV3-Small (SE, hardswish): 2.5 M parameters, 576 pooled features."""
    return MobileNetV3(_small_table(), 1024, tf_padding=tf_padding, arch="mobilenet_v3_small")


def mobilenet_v3_large(tf_padding: bool = True) -> MobileNetV3:
    """MobileNetV3-Large (SE, hardswish): 5.5 M parameters, 960 pooled features."""
    return MobileNetV3(_large_table(), 1280, tf_padding=tf_padding, arch="mobilenet_v3_large")


def mobilenet_v3_large_minimalistic(tf_padding: bool = True) -> MobileNetV3:
    """MobileNetV3-Large minimalistic (no SE, ReLU, 3x3): 3.9 M parameters, 960 pooled features."""
    return MobileNetV3(
        _minimalistic(_large_table()), 1280, activation=nn.ReLU, tf_padding=tf_padding,
        arch="mobilenet_v3_large_minimalistic",
    )


def load_pretrained(model: MobileNetV3, source: str | os.PathLike) -> MobileNetV3:
    """Load ImageNet weights into `model` strictly, from a local state-dict file or "imagenet".

    "imagenet" downloads torchvision's checkpoint for the model's architecture
    (Small or Large; there is none for Large-minimalistic). That needs the
    internet, which the build machines do not have. torchvision's weights
    were trained with symmetric padding and ImageNet mean/std inputs, not the
    [-1, 1] inputs and TF padding of the converted Google weights.
    """
    if str(source) == "imagenet":
        url = TORCHVISION_URLS.get(model.arch)
        if url is None:
            name = model.arch or "this model"
            raise InvalidArgumentError(f"torchvision publishes no ImageNet weights for {name}; give a local state-dict file")
        state_dict = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    else:
        state_dict = torch.load(os.fspath(source), map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm layer of `model` in eval mode and stop its parameters' gradients; returns how many.

    The converted weights store BatchNorm folded into the convolutions (mean 0,
    variance 1 - eps), so batch statistics in train mode would wreck the
    features. `model.train()` puts the layers back in train mode: call this
    again after it (EmbeddingNet does so by itself).
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.requires_grad_(False)
            count += 1
    return count
