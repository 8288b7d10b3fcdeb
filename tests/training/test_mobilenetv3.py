"""MobileNetV3 port: torchvision's architecture, the converted Google weights, TF "SAME" padding."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from snapmatch.sdk.model.model_spec import InputSpec  # noqa: E402
from snapmatch.sdk.image.preprocess import preprocess  # noqa: E402
from snapmatch.training.mobilenetv3 import (  # noqa: E402
    Conv2dSame,
    freeze_batchnorm,
    load_pretrained,
    mobilenet_v3_large,
    mobilenet_v3_large_minimalistic,
    mobilenet_v3_small,
    same_padding,
)

from tests.dev_data import GROCERY, WEIGHTS  # noqa: E402

needs_weights = pytest.mark.skipif(not WEIGHTS.is_dir(), reason=f"no pretrained weights at {WEIGHTS}")
needs_photos = pytest.mark.skipif(not GROCERY.is_dir(), reason=f"no grocery photos at {GROCERY}")

BACKBONES = {
    "small": (mobilenet_v3_small, "mobilenet_v3_small-imagenet.pt"),
    "large_minimalistic": (mobilenet_v3_large_minimalistic, "mobilenet_v3_large_minimalistic-imagenet.pt"),
}
# ImageNet class indices (TF's background class dropped) of three grocery products, checked by hand.
PHOTOS = {
    "train/Fruit/Banana/Banana_001.jpg": 954,  # banana
    "train/Fruit/Pineapple/Pineapple_001.jpg": 953,  # pineapple
    "train/Fruit/Apple/Granny-Smith/Granny-Smith_001.jpg": 948,  # Granny Smith
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_torchvision():
    # torchvision's documented sizes of its own models: the config tables are the same.
    assert n_params(mobilenet_v3_small()) == 2_542_856
    assert n_params(mobilenet_v3_large()) == 5_483_032


@needs_weights
@pytest.mark.parametrize("backbone", BACKBONES)
def test_converted_weights_load_strictly(backbone):
    constructor, filename = BACKBONES[backbone]
    state_dict = torch.load(WEIGHTS / filename, map_location="cpu", weights_only=True)
    model = constructor()
    model.load_state_dict(state_dict, strict=True)  # raises on any missing, unexpected or misshapen key
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v.shape) for k, v in state_dict.items()
    }


def test_large_minimalistic_has_no_se_and_only_relu_and_3x3():
    model = mobilenet_v3_large_minimalistic()
    names = {type(m).__name__ for m in model.modules()}
    assert "SqueezeExcitation" not in names and "Hardswish" not in names and "Hardsigmoid" not in names
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.kernel_size == (3, 3) for m in depthwise)


def test_same_padding_puts_the_extra_pixel_after():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(224, 5, 2) == (1, 2)
    assert same_padding(225, 5, 2) == (2, 2)
    assert same_padding(7, 3, 1) == (1, 1)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [16, 17])
def test_conv2d_same_matches_an_explicitly_padded_convolution(kernel, size):
    torch.manual_seed(0)
    conv = Conv2dSame(4, 4, kernel, stride=2, groups=4)
    x = torch.randn(2, 4, size, size + 1)
    total_h = max((math.ceil(size / 2) - 1) * 2 + kernel - size, 0)
    total_w = max((math.ceil((size + 1) / 2) - 1) * 2 + kernel - size - 1, 0)
    padded = F.pad(x, (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2))
    expected = F.conv2d(padded, conv.weight, stride=2, groups=4)
    out = conv(x)
    assert out.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 1) / 2))
    torch.testing.assert_close(out, expected)
    if size % 2:  # odd input: SAME is symmetric, the same as PyTorch's own padding
        square = x[..., :size]
        symmetric = F.conv2d(square, conv.weight, stride=2, padding=(kernel - 1) // 2, groups=4)
        torch.testing.assert_close(conv(square), symmetric)


@pytest.mark.parametrize("size", [16, 17])
def test_conv2d_same_exports_as_one_onnx_conv_with_asymmetric_pads(tmp_path, size):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    conv = Conv2dSame(4, 8, 3, stride=2)
    path = tmp_path / "conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning: H and W become constants; the exporter's deprecation
        torch.onnx.export(conv, (torch.randn(1, 4, size, size),), str(path), opset_version=17, dynamo=False)
    (node,) = onnx.load(str(path)).graph.node
    pads = next(list(a.ints) for a in node.attribute if a.name == "pads")
    assert node.op_type == "Conv" and pads == ([0, 0, 1, 1] if size % 2 == 0 else [1, 1, 1, 1])
    x = torch.randn(1, 4, size, size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], conv(x), atol=1e-5)


@pytest.mark.parametrize("size", [64, 65, 97, 127])
def test_feature_map_is_ceil_of_size_over_32_with_either_padding(size):
    x = torch.zeros(1, 3, size, size + 2)
    expected = (math.ceil(size / 32), math.ceil((size + 2) / 32))
    with torch.no_grad():
        for tf_padding in (True, False):
            assert mobilenet_v3_small(tf_padding=tf_padding).eval().features(x).shape[-2:] == expected


@needs_weights
def test_tf_padding_changes_the_features_of_even_sized_inputs():
    sd = torch.load(WEIGHTS / BACKBONES["small"][1], map_location="cpu", weights_only=True)
    tf, sym = mobilenet_v3_small(tf_padding=True).eval(), mobilenet_v3_small(tf_padding=False).eval()
    tf.load_state_dict(sd), sym.load_state_dict(sd)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(tf.forward_pooled(x), sym.forward_pooled(x), atol=1e-3)


def _photos() -> torch.Tensor:
    spec = InputSpec(224, 224, "center_crop", 0.875)
    images = np.stack([preprocess(GROCERY / path, spec) for path in PHOTOS])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@needs_weights
@needs_photos
@pytest.mark.parametrize("backbone", BACKBONES)
def test_imagenet_classifier_names_the_fruit(backbone):
    constructor, filename = BACKBONES[backbone]
    model = load_pretrained(constructor(), WEIGHTS / filename).eval()
    x = _photos()
    with torch.no_grad():
        logits = model(x)
        again = model(x)
    assert logits.argmax(1).tolist() == list(PHOTOS.values())
    torch.testing.assert_close(logits, again)  # eval mode is deterministic
    # Different photos give clearly different logits.
    assert torch.cosine_similarity(logits[0], logits[1], dim=0) < 0.9


@needs_weights
def test_freeze_batchnorm_keeps_eval_behaviour_in_train_mode():
    model = load_pretrained(mobilenet_v3_small(), WEIGHTS / BACKBONES["small"][1])
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        reference = model.eval().forward_pooled(x)
        model.train()
        assert freeze_batchnorm(model) == 34  # every BatchNorm of Small
        frozen = model.forward_pooled(x)
    torch.testing.assert_close(frozen, reference)
    bn_params = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert bn_params and not any(p.requires_grad for p in bn_params)
    assert model.features[0][0].weight.requires_grad
