"""Embedder with real onnxruntime sessions on small real ONNX models, working and broken (no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from snapmatch.sdk.model.embedder import Embedder
from snapmatch.sdk.errors import InvalidImageError, ImageNotFoundError, ModelContractError, ModelError, SnapmatchError
from snapmatch.sdk.model.model_spec import PREFIX, REQUIRED_KEYS, InputSpec, ModelSpec
from tests.model_factory import build_model, product_image

SIZE, DIM = 32, 64  # what the model_path fixture declares


@pytest.fixture(scope="module")
def embedder(model_path) -> Embedder:
    return Embedder(model_path, threads=1)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Products 0-5, three variants each: 18 synthetic 96x96 BGR photos."""
    return [product_image(product, variant=variant) for product in range(6) for variant in range(3)]


def reference_embeddings(rgb: np.ndarray, *, seed: int = 0, dim: int = DIM) -> np.ndarray:
    """What the factory's graph computes, written out in numpy: normalise, 8x8 average pool, project, L2."""
    projection = np.random.default_rng(seed).standard_normal((3 * 8 * 8, dim)).astype(np.float32)
    n, size = rgb.shape[0], rgb.shape[1]
    pool = size // 8
    x = (rgb.astype(np.float32) - 127.5) / 127.5
    thumb = x.transpose(0, 3, 1, 2).reshape(n, 3, 8, pool, 8, pool).mean(axis=(3, 5))
    raw = thumb.reshape(n, -1) @ projection
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def model_input(bgr: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The stretch policy done by hand with OpenCV: shrink with INTER_AREA, then BGR -> RGB."""
    return cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


# --- a working model ------------------------------------------------------------------


def test_shape_dtype_and_unit_norm(embedder, photos):
    vectors = embedder.embed(photos)
    assert vectors.shape == (len(photos), DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_matches_an_independent_numpy_reference(embedder, photos):
    expected = reference_embeddings(np.stack([model_input(photo) for photo in photos]))
    np.testing.assert_allclose(embedder.embed(photos), expected, atol=1e-5)


def test_same_product_is_close_and_different_products_are_far(embedder, photos):
    vectors = embedder.embed(photos)
    similarity = vectors @ vectors.T
    labels = np.repeat(np.arange(6), 3)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(photos), dtype=bool)
    assert similarity[same & off_diagonal].min() > similarity[~same].max() + 0.2


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_path_bytes_and_array_give_identical_vectors(tmp_path, embedder, photos, ext):
    path = tmp_path / f"photo{ext}"
    assert cv2.imwrite(str(path), photos[4])
    data = path.read_bytes()
    as_array = cv2.imread(str(path), cv2.IMREAD_COLOR)
    vectors = {
        "str": embedder.embed(str(path)),
        "Path": embedder.embed(path),
        "bytes": embedder.embed(data),
        "bytearray": embedder.embed(bytearray(data)),
        "memoryview": embedder.embed(memoryview(data)),
        "in a list": embedder.embed([path, data]),
    }
    for kind, vector in vectors.items():
        for row in vector:
            np.testing.assert_array_equal(row, vectors["bytes"][0], err_msg=kind)
    # An array is what the caller decoded, at full size; an encoded JPEG larger than the model needs
    # is decoded shrunk in the DCT (preprocess.decode's min_side): the same photo, a few levels apart.
    from_array = embedder.embed(as_array)[0]
    if ext == ".png":
        np.testing.assert_array_equal(from_array, vectors["bytes"][0])
    else:
        assert float(from_array @ vectors["bytes"][0]) > 0.99


def test_single_image_gives_one_row(embedder, photos):
    gray = cv2.cvtColor(photos[0], cv2.COLOR_BGR2GRAY)
    for image in (photos[0], gray, gray[:, :, None]):
        assert embedder.embed(image).shape == (1, DIM)


def test_batch_and_single_agree(embedder, photos):
    batch = embedder.embed(photos[:5])
    singles = np.concatenate([embedder.embed(photo) for photo in photos[:5]])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 8, 16, 36, 37, 64])
def test_batch_size_chunking(model_path, embedder, batch_size):
    images = [product_image(i % 11, variant=i // 11, size=48) for i in range(37)]
    singles = np.concatenate([embedder.embed(image) for image in images])
    chunked = Embedder(model_path, threads=1, batch_size=batch_size)
    assert chunked.batch_size == batch_size
    vectors = chunked.embed(images)
    assert vectors.shape == (37, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, singles, atol=1e-5)  # same rows, same order


def test_batch_size_below_one_is_one(model_path, photos):
    embedder = Embedder(model_path, batch_size=0)
    assert embedder.batch_size == 1
    assert embedder.embed(photos[:3]).shape == (3, DIM)


def test_iterables_and_stacked_arrays(embedder, photos):
    expected = embedder.embed(photos[:4])
    np.testing.assert_allclose(embedder.embed(photo for photo in photos[:4]), expected, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(tuple(photos[:4])), expected, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(np.stack(photos[:4])), expected, atol=1e-6)  # [N, H, W, 3]


def test_nothing_to_embed(embedder):
    for empty in ([], (), iter([])):
        vectors = embedder.embed(empty)
        assert vectors.shape == (0, DIM) and vectors.dtype == np.float32


def test_images_of_any_size_and_kind(embedder):
    rng = np.random.default_rng(7)
    images = [
        rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),  # smaller than the model input
        rng.integers(0, 256, (300, 40, 3), dtype=np.uint8),  # very tall
        rng.integers(0, 65536, (20, 30), dtype=np.uint16),  # 16-bit gray
        rng.random((20, 30, 3)),  # float in [0, 1]
        np.dstack([rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), np.zeros((20, 30), np.uint8)]),  # transparent
    ]
    vectors = embedder.embed(images)
    assert vectors.shape == (5, DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    white = np.full((20, 30, 3), 255, np.uint8)
    np.testing.assert_allclose(vectors[4], embedder.embed(white)[0], atol=1e-6)  # transparent = white


def test_bad_image_in_a_batch_names_it(tmp_path, embedder, photos):
    missing = tmp_path / "gone.jpg"
    with pytest.raises(ImageNotFoundError, match="gone.jpg"):
        embedder.embed([photos[0], missing])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"certainly not an image")
    with pytest.raises(InvalidImageError, match="garbage.jpg"):
        embedder.embed([garbage])


def test_preprocess_follows_the_model_input(embedder, photos):
    out = embedder.preprocess(photos[0])
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, model_input(photos[0]))


def test_embed_batch_takes_preprocessed_input(embedder, photos):
    batch = np.stack([embedder.preprocess(photo) for photo in photos[:3]])
    np.testing.assert_allclose(embedder.embed_batch(batch), embedder.embed(photos[:3]), atol=1e-6)


@pytest.mark.parametrize(
    "batch",
    [np.zeros((2, SIZE, SIZE, 3), np.float32), np.zeros((SIZE, SIZE, 3), np.uint8)],
    ids=["float", "rank-3"],
)
def test_embed_batch_rejects_wrong_arrays(embedder, batch):
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed_batch(batch)


def test_properties_and_repr(model_path, embedder):
    assert embedder.dim == DIM
    assert embedder.model_id == "test-model-0-64"
    assert embedder.path == Path(model_path)
    assert embedder.spec.input == InputSpec(height=SIZE, width=SIZE, resize="stretch", crop_fraction=0.875)
    assert embedder.spec.quantization == "fp32" and embedder.spec.name == "test model"
    text = repr(embedder)
    assert "test-model-0-64" in text and "dim=64" in text and str(model_path) in text


def test_two_models_give_different_vectors(embedder, other_model_path, photos):
    other = Embedder(other_model_path, threads=1)
    assert other.model_id != embedder.model_id
    np.testing.assert_allclose(
        other.embed(photos[:3]),
        reference_embeddings(np.stack([model_input(photo) for photo in photos[:3]]), seed=1),
        atol=1e-5,
    )
    assert np.abs(other.embed(photos[:3]) - embedder.embed(photos[:3])).max() > 0.1


@pytest.mark.parametrize("resize_policy", ["letterbox", "center_crop"])
def test_model_resize_policy_is_used(tmp_path, resize_policy):
    embedder = Embedder(build_model(tmp_path / "m.onnx", resize=resize_policy, size=16), threads=1)
    wide = np.zeros((40, 160, 3), np.uint8)
    wide[:, :40] = (255, 0, 0)  # blue left end, black elsewhere
    out = embedder.preprocess(wide)
    assert out.shape == (16, 16, 3)
    if resize_policy == "letterbox":
        assert (out[:6] == 255).all() and (out[10:] == 255).all()  # 16 x 4, white above and below
        assert (out[6:10, 8:] == 0).all()
    else:
        assert (out == 0).all()  # the blue end is cropped away
    assert embedder.embed(wide).shape == (1, DIM)


def test_larger_model_input(tmp_path, photos):
    embedder = Embedder(build_model(tmp_path / "m64.onnx", size=64, dim=24, seed=3), threads=1)
    assert embedder.preprocess(photos[0]).shape == (64, 64, 3)
    # Not a whole-factor shrink: the staged area average is a level or two from one INTER_AREA step.
    reference = reference_embeddings(np.stack([model_input(photo, 64) for photo in photos[:2]]), seed=3, dim=24)
    assert (np.sum(embedder.embed(photos[:2]) * reference, axis=1) > 0.999).all()


# --- threads --------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_reach_the_session(model_path, threads, photos, embedder):
    threaded = Embedder(model_path, threads=threads)
    options = threaded._session.get_session_options()
    assert options.intra_op_num_threads == threads
    assert options.inter_op_num_threads == 1
    assert threaded.threads == threads
    np.testing.assert_allclose(threaded.embed(photos[:4]), embedder.embed(photos[:4]), atol=1e-6)


def test_a_batch_is_prepared_on_several_threads_in_order(tmp_path, model_path, photos, embedder):
    """With more than one thread, a batch's images are decoded and resized concurrently: same vectors, same order,
    the first unreadable image (in the caller's order) is the one named, and skipping keeps every other image."""
    import threading

    threaded = Embedder(model_path, threads=2)
    seen: set[str] = set()
    preprocess = threaded.preprocess

    def recording(image):
        seen.add(threading.current_thread().name)
        return preprocess(image)

    threaded.preprocess = recording  # type: ignore[method-assign]
    np.testing.assert_array_equal(threaded.embed(photos), embedder.embed(photos))
    assert any(name.startswith("snapmatch-preprocess") for name in seen)
    garbage, missing = tmp_path / "garbage.jpg", tmp_path / "gone.jpg"
    garbage.write_bytes(b"certainly not an image")
    with pytest.raises(InvalidImageError, match="garbage.jpg"):
        threaded.embed([photos[0], garbage, missing])
    prepared = threaded.preprocess_many([photos[0], missing, photos[1]])
    assert isinstance(prepared[1], ImageNotFoundError)
    np.testing.assert_array_equal(prepared[2], embedder.preprocess(photos[1]))
    assert embedder._pool is None  # one thread: everything in the caller's thread, as before


@pytest.mark.parametrize("threads", [None, 0])
def test_default_threads(model_path, threads, photos):
    embedder = Embedder(model_path, threads=threads)
    assert embedder.threads == threads
    assert embedder._session.get_session_options().intra_op_num_threads == 0  # 0: onnxruntime picks
    assert embedder.embed(photos[:2]).shape == (2, DIM)


def test_negative_threads(model_path):
    with pytest.raises(ValueError, match="threads"):
        Embedder(model_path, threads=-1)


# --- broken models: metadata ----------------------------------------------------------


def refused(path: Path, error: type[ModelError] = ModelContractError) -> str:
    with pytest.raises(error) as info:
        Embedder(path)
    assert isinstance(info.value, SnapmatchError)
    message = str(info.value)
    assert str(path) in message, message  # the message names the file
    return message


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_metadata_key(tmp_path, key):
    path = build_model(tmp_path / "m.onnx", drop_metadata=(PREFIX + key,))
    message = refused(path)
    assert PREFIX + key in message and "metadata" in message
    for other in REQUIRED_KEYS:
        if other != key:
            assert PREFIX + other not in message  # only what is missing is named


def test_all_metadata_missing_names_every_key(tmp_path):
    path = build_model(tmp_path / "m.onnx", drop_metadata=tuple(PREFIX + key for key in REQUIRED_KEYS))
    message = refused(path)
    assert all(PREFIX + key in message for key in REQUIRED_KEYS)
    assert "not a snapmatch model" in message


def test_metadata_under_another_prefix_does_not_count(tmp_path):
    ours = ModelSpec(InputSpec(SIZE, SIZE), DIM, "x", "f", "fp32").to_metadata()
    theirs = {"other." + key[len(PREFIX):]: value for key, value in ours.items()}
    path = build_model(tmp_path / "m.onnx", drop_metadata=tuple(ours), metadata=theirs)
    assert "metadata_props lack" in refused(path)


@pytest.mark.parametrize(
    "key, value",
    [
        ("input_size", "abc"),
        ("input_size", "32"),
        ("input_size", "32,32,3"),
        ("input_size", "32x32"),
        ("embedding_dim", "sixty-four"),
        ("format_version", "1.0"),
        ("crop_fraction", "most"),
        ("default_threshold", "high"),
    ],
)
def test_malformed_metadata(tmp_path, key, value):
    path = build_model(tmp_path / "m.onnx", metadata={PREFIX + key: value})
    assert "malformed" in refused(path)


def test_metadata_that_is_not_utf8_is_a_model_error(tmp_path):
    # As random damage to a model file's metadata leaves it: still a valid protobuf, no longer text.
    path = build_model(tmp_path / "m.onnx", metadata={"note": "MARKER--"})
    data = path.read_bytes()
    assert data.count(b"MARKER--") == 1
    path.write_bytes(data.replace(b"MARKER--", b"\xcc\x01garbge"))  # the same length: the protobuf stays valid
    assert "not UTF-8" in refused(path, ModelError)


@pytest.mark.parametrize(
    "key, value",
    [
        ("input_size", "4,4"),
        ("input_size", "5000,32"),
        ("embedding_dim", "0"),
        ("embedding_dim", "-64"),
        ("crop_fraction", "0.05"),
        ("crop_fraction", "1.5"),
        ("crop_fraction", "nan"),
    ],
)
def test_implausible_metadata(tmp_path, key, value):
    path = build_model(tmp_path / "m.onnx", metadata={PREFIX + key: value})
    assert "implausible" in refused(path)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("resize", "squash", "resize policy 'squash'"),
        ("quantization", "int4", "quantization 'int4'"),
        ("format_version", "2", "upgrade snapmatch"),
        ("model_id", "", "empty snapmatch.model_id"),
    ],
)
def test_unsupported_metadata_values(tmp_path, key, value, expected):
    path = build_model(tmp_path / "m.onnx", metadata={PREFIX + key: value})
    assert expected in refused(path)


@pytest.mark.parametrize("version", ["0", "-3"])
def test_format_version_below_one(tmp_path, version):
    path = build_model(tmp_path / "m.onnx", metadata={PREFIX + "format_version": version})
    refused(path)


def test_optional_metadata_is_read(tmp_path):
    path = build_model(tmp_path / "m.onnx", default_threshold=0.42, metadata={PREFIX + "crop_fraction": "0.5"})
    spec = Embedder(path).spec
    assert spec.default_threshold == pytest.approx(0.42)
    assert spec.input.crop_fraction == 0.5


def test_metadata_dim_disagrees_with_output(tmp_path):
    path = build_model(tmp_path / "m.onnx", dim=64, metadata={PREFIX + "embedding_dim": "32"})
    message = refused(path)
    assert "output dim 64" in message and "(32)" in message


def test_metadata_input_size_disagrees_with_graph(tmp_path):
    path = build_model(tmp_path / "m.onnx", size=32, metadata={PREFIX + "input_size": "16,16"})
    message = refused(path)
    assert "16x16" in message and "input shape" in message


# --- broken models: graph -------------------------------------------------------------


def test_float_input(tmp_path):
    message = refused(build_model(tmp_path / "m.onnx", input_type=TensorProto.FLOAT))
    assert "uint8" in message and "tensor(float)" in message


def test_rank_2_input(tmp_path):
    # A valid graph that takes flattened images [N, H*W*3]: it loads, but breaks the contract.
    projection = np.random.default_rng(0).standard_normal((SIZE * SIZE * 3, DIM)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["x", "projection"], ["raw"]),
            helper.make_node("LpNormalization", ["raw"], ["embedding"], axis=1, p=2),
        ],
        "rank2",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", SIZE * SIZE * 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])],
        [numpy_helper.from_array(projection, "projection")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = save_with_metadata(model, tmp_path / "r2.onnx")
    message = refused(path)
    assert "[N, H, W, 3]" in message and str(SIZE * SIZE * 3) in message


def test_factory_rank_2_variant_is_refused(tmp_path):
    # build_model(input_rank=2) keeps the NHWC Transpose, so onnxruntime cannot even load it.
    refused(build_model(tmp_path / "m.onnx", input_rank=2), ModelError)


def test_four_channel_input(tmp_path):
    model = onnx.load(str(build_model(tmp_path / "base.onnx")))
    graph = model.graph
    graph.input[0].name = "rgba"
    graph.input[0].type.tensor_type.shape.dim[3].dim_value = 4
    for name, value in (("starts", [0]), ("ends", [3]), ("axes", [3])):
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    graph.node.insert(0, helper.make_node("Slice", ["rgba", "starts", "ends", "axes"], ["images"]))
    path = tmp_path / "rgba.onnx"
    onnx.save(model, str(path))
    assert "[N, H, W, 3]" in refused(path)


def test_two_outputs(tmp_path):
    model = onnx.load(str(build_model(tmp_path / "base.onnx")))
    model.graph.node.append(helper.make_node("Identity", ["embedding"], ["copy"]))
    model.graph.output.append(helper.make_tensor_value_info("copy", TensorProto.FLOAT, ["batch", DIM]))
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    assert "one input and one output" in refused(path)


def test_double_output(tmp_path):
    model = onnx.load(str(build_model(tmp_path / "base.onnx")))
    model.graph.node[-1].output[0] = "embedding_float"
    model.graph.node.append(helper.make_node("Cast", ["embedding_float"], ["embedding"], to=TensorProto.DOUBLE))
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    path = tmp_path / "double.onnx"
    onnx.save(model, str(path))
    assert "float32 [N, D]" in refused(path)


def test_unnormalised_output(tmp_path):
    message = refused(build_model(tmp_path / "m.onnx", normalise=False))
    assert "not L2-normalised" in message


def test_all_zero_output(tmp_path):
    model = onnx.load(str(build_model(tmp_path / "base.onnx")))
    zeros = numpy_helper.from_array(np.zeros((3 * 8 * 8, DIM), np.float32), "projection")
    for tensor in model.graph.initializer:
        if tensor.name == "projection":
            tensor.CopyFrom(zeros)
    path = tmp_path / "zero.onnx"
    onnx.save(model, str(path))
    assert "breaks the contract" in refused(path)


def test_symbolic_output_dim_is_still_checked(tmp_path):
    # The graph only declares [batch, d]; onnxruntime's own shape inference or the probe run
    # must find 32 where the metadata says 64.
    model = onnx.load(str(build_model(tmp_path / "base.onnx", dim=32, metadata={PREFIX + "embedding_dim": "64"})))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "d"
    path = tmp_path / "symbolic.onnx"
    onnx.save(model, str(path))
    message = refused(path)
    assert "32" in message and "64" in message


def save_with_metadata(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    spec = ModelSpec(InputSpec(SIZE, SIZE, "stretch"), DIM, "hand-built", "synthetic", "fp32")
    helper.set_model_props(model, spec.to_metadata())
    onnx.save(model, str(path))
    return path


# --- not a model at all -------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an ONNX file\n", bytes(range(256)) * 8, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64],
    ids=["empty", "text", "binary", "png"],
)
def test_not_onnx(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    assert "not a loadable ONNX model" in refused(path, ModelError)


def test_missing_model_file(tmp_path):
    assert "not found" in refused(tmp_path / "absent.onnx", ModelError)


def test_directory_instead_of_model(tmp_path):
    refused(tmp_path, ModelError)


def test_contract_errors_are_model_errors():
    assert issubclass(ModelContractError, ModelError) and issubclass(ModelError, SnapmatchError)


# --- the runtime stays free of torch (and onnx) ---------------------------------------

_USE_EMBEDDER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import cv2
    from snapmatch import Embedder
    model, folder = sys.argv[1], sys.argv[2]
    photo = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    path = os.path.join(folder, "photo.png")
    cv2.imwrite(path, photo)
    embedder = Embedder(model, threads=1)
    vectors = embedder.embed([photo, path, open(path, "rb").read()])
    print(json.dumps({
        "shape": list(vectors.shape),
        "identical": bool((vectors == vectors[0]).all()),
        "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch"),
        "onnx": sorted(m for m in sys.modules if m.split(".")[0] == "onnx"),
    }))
    """
)


def test_embedder_never_imports_torch_or_onnx(tmp_path, model_path):
    # A stand-in `torch` package first on the path: any attempt to import torch, even one
    # wrapped in try/except ImportError, lands in sys.modules and leaves a mark on disk.
    tripwire = tmp_path / "tripwire"
    (tripwire / "torch").mkdir(parents=True)
    mark = tmp_path / "torch-was-imported"
    (tripwire / "torch" / "__init__.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tripwire), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _USE_EMBEDDER, str(model_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [3, DIM] and result["identical"]
    assert result["torch"] == [] and not mark.exists()
    assert result["onnx"] == []
