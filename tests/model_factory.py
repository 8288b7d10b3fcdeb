"""Small, real snapmatch ONNX models built with onnx.helper (no torch), and broken ones.

The working model embeds an image as a fixed random projection of its 8x8
colour thumbnail, L2-normalised: deterministic, fast, and close for images
that look alike — enough to exercise the runtime for real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snapmatch.sdk.model.model_spec import InputSpec, ModelSpec


def build_model(
    path: Path,
    *,
    size: int = 32,
    dim: int = 64,
    seed: int = 0,
    model_id: str | None = None,
    input_type: int = TensorProto.UINT8,
    input_rank: int = 4,
    normalise: bool = True,
    metadata: dict[str, str] | None = None,
    drop_metadata: tuple[str, ...] = (),
    default_threshold: float | None = None,
    resize: str = "stretch",
) -> Path:
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((3 * 8 * 8, dim)).astype(np.float32)
    pool = size // 8
    batch = "batch"
    in_shape = [batch, size, size, 3] if input_rank == 4 else [batch, size * size * 3]
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("AveragePool", ["nchw"], ["thumb"], kernel_shape=[pool, pool], strides=[pool, pool]),
        helper.make_node("Flatten", ["thumb"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "projection"], ["raw" if normalise else "embedding"]),
    ]
    if normalise:
        nodes.append(helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2))
    initialisers = [
        numpy_helper.from_array(np.array([127.5], np.float32), "mean"),
        numpy_helper.from_array(np.array([127.5], np.float32), "std"),
        numpy_helper.from_array(projection, "projection"),
    ]
    graph = helper.make_graph(
        nodes,
        "snapmatch-test",
        [helper.make_tensor_value_info("images", input_type, in_shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = ModelSpec(
        input=InputSpec(height=size, width=size, resize=resize),
        embedding_dim=dim,
        model_id=model_id or f"test-model-{seed}-{dim}",
        data_fingerprint="synthetic",
        quantization="fp32",
        default_threshold=default_threshold,
        name="test model",
    )
    props = spec.to_metadata()
    props.update(metadata or {})
    for key in drop_metadata:
        props.pop(key, None)
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def product_image(product: int, *, variant: int = 0, size: int = 96) -> np.ndarray:
    """A synthetic BGR photo of product `product`; variants are small shifts and lighting changes."""
    rng = np.random.default_rng(1000 + product)
    base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
    image = np.kron(base, np.ones((size // 4, size // 4, 1), np.float32))
    if variant:
        vrng = np.random.default_rng(variant * 7919 + product)
        image = np.roll(image, int(vrng.integers(-2, 3)), axis=1) * vrng.uniform(0.93, 1.07)
        image = image + vrng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
