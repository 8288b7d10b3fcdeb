"""export_onnx: the exported graph is what PyTorch computes, and it carries the runtime's contract."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

from snapmatch.export import ExportError, ExportSpec, export_onnx
from snapmatch.export.onnx_export import read_metadata
from snapmatch.sdk.model.embedder import Embedder
from snapmatch.sdk.model.model_spec import REQUIRED_KEYS, PREFIX, InputSpec, ModelSpec
from snapmatch.sdk.image.preprocess import preprocess
from tests.export import grocery_photos, stand_in_net

SPEC = ExportSpec(
    input=InputSpec(height=64, width=64, resize="center_crop", crop_fraction=0.875),
    data_fingerprint="grocery-test-0001",
    name="stand-in",
    id_prefix="standin",
    default_threshold=0.62,
)
COSINE_TOLERANCE = 0.999  # ONNX vs PyTorch on the same input: float reordering only


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "standin.onnx"
    return export_onnx(stand_in_net(), path, spec=SPEC)


def torch_embed(net, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(images)).numpy()


def test_exported_model_loads_in_the_runtime_and_matches_pytorch(exported):
    photos = [path for path, _ in grocery_photos(per_product=2, products=4)]
    embedder = Embedder(exported, threads=1)  # validates signature, metadata and normalisation
    got = embedder.embed(photos)
    expected = torch_embed(stand_in_net(), np.stack([preprocess(path, SPEC.input) for path in photos]))
    cosines = np.sum(got * expected, axis=1)
    assert got.shape == (len(photos), 32)
    assert cosines.min() >= COSINE_TOLERANCE, cosines


def test_metadata_carries_every_model_spec_key(exported):
    props = read_metadata(exported)
    spec = ModelSpec.from_metadata(props)
    assert spec == ModelSpec(
        input=SPEC.input,
        embedding_dim=32,
        model_id=spec.model_id,
        data_fingerprint="grocery-test-0001",
        quantization="fp32",
        default_threshold=0.62,
        name="stand-in",
    )
    assert set(spec.to_metadata()) <= set(props)
    assert all(PREFIX + key in props for key in REQUIRED_KEYS)
    assert spec.model_id.startswith("standin-") and len(spec.model_id) == len("standin-") + 16


def test_graph_signature_is_uint8_images_to_embedding_with_dynamic_batch(exported):
    graph = onnx.load(str(exported)).graph
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == ("images", onnx.TensorProto.UINT8)
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 64, 64, 3]
    assert out.name == "embedding"
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 32]


def test_dynamic_batch_gives_the_same_embeddings_at_batch_1_and_5(exported):
    images = np.random.default_rng(3).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    embedder = Embedder(exported, threads=1)
    together = embedder.embed_batch(images)
    alone = np.concatenate([embedder.embed_batch(images[i:i + 1]) for i in range(5)])
    assert together.shape == (5, 32)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_model_id_is_stable_for_the_same_weights_and_differs_otherwise(tmp_path):
    first = export_onnx(stand_in_net(seed=0), tmp_path / "a.onnx", spec=SPEC)
    again = export_onnx(stand_in_net(seed=0), tmp_path / "b.onnx", spec=SPEC)
    other = export_onnx(stand_in_net(seed=1), tmp_path / "c.onnx", spec=SPEC)
    nudged_net = stand_in_net(seed=0)
    with torch.no_grad():
        nudged_net.head.weight[0, 0] += 1e-3
    nudged = export_onnx(nudged_net, tmp_path / "d.onnx", spec=SPEC)
    bigger_input = replace(SPEC, input=InputSpec(height=96, width=96))
    resized = export_onnx(stand_in_net(seed=0), tmp_path / "e.onnx", spec=bigger_input)
    ids = [Embedder(path).model_id for path in (first, again, other, nudged, resized)]
    assert ids[0] == ids[1]
    assert len(set(ids[1:])) == 4, ids


def test_export_refuses_a_network_that_breaks_the_contract(tmp_path):
    class Unnormalised(torch.nn.Module):
        def forward(self, images):
            return images.float().mean(dim=(1, 2)) + 1.0

    with pytest.raises(ExportError, match="L2-normalised"):
        export_onnx(Unnormalised(), tmp_path / "x.onnx", spec=SPEC)
    with pytest.raises(ExportError, match="declares 64"):
        export_onnx(stand_in_net(), tmp_path / "y.onnx", spec=replace(SPEC, embedding_dim=64))
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


def test_export_leaves_the_network_in_the_mode_it_found(tmp_path):
    net = stand_in_net().train()
    export_onnx(net, tmp_path / "m.onnx", spec=SPEC)
    assert net.training


@pytest.mark.slow
def test_mobilenet_embedding_net_exports_and_matches_pytorch(tmp_path):
    model = pytest.importorskip("snapmatch.training.model")
    net = model.build_model(model.ModelConfig())  # random weights: the graph, not the accuracy, is tested
    spec = ExportSpec(input=InputSpec(224, 224), data_fingerprint="none", id_prefix="mnv3s")
    path = export_onnx(net, tmp_path / "mnv3s.onnx", spec=spec)
    photos = [path for path, _ in grocery_photos(per_product=1, products=4)]
    embedder = Embedder(path, threads=1)
    got = embedder.embed(photos)
    expected = torch_embed(net, np.stack([preprocess(photo, spec.input) for photo in photos]))
    assert embedder.dim == net.embedding_dim
    assert np.sum(got * expected, axis=1).min() >= COSINE_TOLERANCE
