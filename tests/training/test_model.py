"""EmbeddingNet: uint8 NHWC in, unit vectors out, the same in PyTorch and in ONNX Runtime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from snapmatch.sdk.model.model_spec import InputSpec  # noqa: E402
from snapmatch.sdk.image.preprocess import preprocess  # noqa: E402
from snapmatch.training.mobilenetv3 import load_pretrained, mobilenet_v3_small  # noqa: E402
from snapmatch.training.model import ModelConfig, build_model  # noqa: E402

from tests.dev_data import GROCERY, SMALL_WEIGHTS, WEIGHTS  # noqa: E402

LARGE_WEIGHTS = WEIGHTS / "mobilenet_v3_large_minimalistic-imagenet.pt"
needs_weights = pytest.mark.skipif(not SMALL_WEIGHTS.is_file(), reason=f"no pretrained weights at {SMALL_WEIGHTS}")
needs_photos = pytest.mark.skipif(not GROCERY.is_dir(), reason=f"no grocery photos at {GROCERY}")


def random_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=generator)


def grocery_photos(n: int) -> np.ndarray:
    """n val photos spread over the products, as the runtime would feed them: RGB uint8 [n, 224, 224, 3]."""
    lines = [line for line in (GROCERY / "val.txt").read_text().splitlines() if line.strip()]
    picks = np.linspace(0, len(lines) - 1, n).astype(int)
    spec = InputSpec(224, 224, "center_crop", 0.875)
    return np.stack([preprocess(GROCERY / lines[i].split(",")[0].strip(), spec) for i in picks])


@pytest.mark.parametrize(
    ("config", "dim"),
    [
        (ModelConfig("small", "pooled"), 576),
        (ModelConfig("small", "linear", dim=128), 128),
        (ModelConfig("small", "prelogits"), 1024),
        (ModelConfig("small", "prelogits", dim=256), 256),
        (ModelConfig("large_minimalistic", "pooled"), 960),
        (ModelConfig("large_minimalistic", "prelogits"), 1280),
    ],
)
def test_forward_gives_unit_float32_vectors(config, dim):
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        out = model(random_images(3))
    assert model.embedding_dim == dim
    assert out.dtype == torch.float32 and out.shape == (3, dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


@needs_weights
def test_forward_does_the_preprocessing_itself():
    model = build_model(ModelConfig("small", "pooled"), SMALL_WEIGHTS)
    backbone = load_pretrained(mobilenet_v3_small(), SMALL_WEIGHTS).eval()
    images = random_images(2, size=96)
    with torch.no_grad():
        x = images.permute(0, 3, 1, 2).float() * (2 / 255) - 1  # [-1, 1], NCHW
        expected = F.normalize(backbone.forward_pooled(x), dim=1)
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=1e-4)


@needs_weights
def test_prelogits_head_is_the_pretrained_classifier_layer():
    model = build_model(ModelConfig("small", "prelogits", dim=64), SMALL_WEIGHTS)
    state_dict = torch.load(SMALL_WEIGHTS, map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.head[0].weight, state_dict["classifier.0.weight"])
    assert isinstance(model.head[1], torch.nn.Hardswish) and model.head[2].out_features == 64


def test_float_input_is_refused():
    with pytest.raises(TypeError, match="uint8"):
        build_model(ModelConfig())(torch.zeros(1, 32, 32, 3))


@pytest.mark.parametrize(
    "kwargs",
    [{"backbone": "resnet"}, {"head": "mlp"}, {"head": "linear"}, {"head": "pooled", "dim": 128}],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        ModelConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    config = ModelConfig("large_minimalistic", "prelogits", dim=256, tf_padding=False)
    assert ModelConfig.from_dict(config.to_dict()) == config


@needs_weights
def test_train_mode_keeps_the_folded_batchnorm_frozen():
    model = build_model(ModelConfig("small", "linear", dim=32), SMALL_WEIGHTS)
    images = random_images(4)
    with torch.no_grad():
        reference = model.eval()(images)
        in_train_mode = model.train()(images)
    torch.testing.assert_close(in_train_mode, reference)
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(m.training or p.requires_grad for m in batchnorms for p in m.parameters())
    assert model.head.weight.requires_grad and model.features[0][0].weight.requires_grad


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        # The TF padding amounts are read from the traced height and width: they become constants,
        # which is right for a model whose input size is fixed by its metadata.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            model,
            (random_images(2, size=224),),
            str(path),
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=17,
            dynamo=False,  # the torch.export-based exporter needs onnxscript, which is not a dependency
        )
    return path


@needs_weights
@needs_photos
@pytest.mark.parametrize(
    ("config", "weights"),
    [
        (ModelConfig("small", "pooled"), SMALL_WEIGHTS),
        (ModelConfig("large_minimalistic", "prelogits", dim=128), LARGE_WEIGHTS),
    ],
    ids=["small-pooled", "large_minimalistic-prelogits-128"],
)
def test_onnx_export_matches_pytorch_on_real_photos(tmp_path, config, weights):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(config, weights)
    path = export_onnx(model, tmp_path / "model.onnx")

    onnx = pytest.importorskip("onnx")
    assert "Pad" not in {node.op_type for node in onnx.load(str(path)).graph.node}  # TF padding lives in Conv pads
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [224, 224, 3] and isinstance(inp.shape[0], str)
    assert out.type == "tensor(float)" and out.shape[1] == model.embedding_dim

    photos = grocery_photos(5)  # a batch size other than the one exported with
    onnx_emb = session.run(None, {"images": photos})[0]
    with torch.no_grad():
        torch_emb = model(torch.from_numpy(photos)).numpy()
    assert onnx_emb.shape == torch_emb.shape == (5, model.embedding_dim)
    cosine = (onnx_emb * torch_emb).sum(axis=1)
    assert cosine.min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(onnx_emb, axis=1), 1.0, atol=1e-5)
    # Different photos stay apart: the export did not collapse the embedding.
    assert (onnx_emb @ onnx_emb.T)[~np.eye(5, dtype=bool)].max() < 0.99


@needs_weights
def test_the_backbone_is_inferred_from_the_starting_weights(tmp_path):
    from snapmatch.training.pretrained import infer_backbone

    assert infer_backbone(str(SMALL_WEIGHTS)) == "small"
    large = SMALL_WEIGHTS.with_name("mobilenet_v3_large_minimalistic-imagenet.pt")
    if large.is_file():
        assert infer_backbone(str(large)) == "large_minimalistic"
    from snapmatch.sdk.product_search import default_model_path
    from snapmatch.sdk.model.embedder import Embedder

    shipped = Embedder(default_model_path(), threads=1).model_id.split("-")[0]
    assert infer_backbone("default") == {"mnv3s": "small", "mnv3lm": "large_minimalistic"}[shipped]
