"""Export a PyTorch embedding network to a snapmatch ONNX model (the contract in DESIGN.md).

The network must take uint8 RGB images [N, H, W, 3] and return L2-normalised
float32 embeddings [N, D], doing its own cast, normalisation and layout change.
Export writes the graph with input "images" and output "embedding" (dynamic
batch), then stamps the ModelSpec metadata the runtime requires, with a model
id derived from the weights.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from snapmatch.sdk.errors import SnapmatchError
from snapmatch.sdk.model.model_spec import InputSpec, ModelSpec

if TYPE_CHECKING:  # torch and onnx are the train extra: imported where used
    import onnx
    import torch

INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
ID_HASH_CHARS = 16
PARITY_TOLERANCE = 1e-3  # max |ONNX - PyTorch| on the export probe; float reordering stays far below


class ExportError(SnapmatchError):
    """A network cannot be exported as a snapmatch model (wrong input/output contract or exporter failure)."""


@dataclass(frozen=True)
class ExportSpec:
    """What export writes into the model's metadata beside what it derives itself (model id, dim)."""

    input: InputSpec  # input size and resize policy the network was trained with
    data_fingerprint: str  # id of the training data (snapmatch.training.data.fingerprint)
    name: str = ""  # human-readable model name for the model card
    id_prefix: str = "snapmatch"  # readable start of the model id, e.g. "mnv3s"
    embedding_dim: int | None = None  # None: taken from the network's output; else checked against it
    default_threshold: float | None = None  # identify() threshold the model card recommends
    training_split: dict | None = None  # the run's split (snapmatch.training.splits.Split.to_dict)

    def model_spec(self, *, model_id: str, embedding_dim: int, quantization: str = "fp32") -> ModelSpec:
        return ModelSpec(
            input=self.input,
            embedding_dim=embedding_dim,
            model_id=model_id,
            data_fingerprint=self.data_fingerprint,
            quantization=quantization,
            default_threshold=self.default_threshold,
            name=self.name,
            training_split=self.training_split,
        )


def export_onnx(
    model: "torch.nn.Module",
    path: str | os.PathLike,
    *,
    spec: ExportSpec,
    opset: int = 17,
) -> Path:
    """Write `model` as a snapmatch ONNX model at `path`; returns the path.

    >>> export_onnx(net, "mnv3s.onnx", spec=ExportSpec(InputSpec(224, 224), data_fingerprint="...", id_prefix="mnv3s"))
    """
    import onnx
    import torch

    path = Path(path)
    height, width = spec.input.height, spec.input.width
    # Traced at batch 2 (never 1, which exporters like to specialise on) and
    # checked against PyTorch at batch 3: a batch size baked into the graph fails.
    rng = np.random.default_rng(0)
    probe = torch.from_numpy(rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8))
    check = torch.from_numpy(rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = _probe_output(model, check, spec)
            proto = _trace(model, probe, opset)
    finally:
        model.train(was_training)

    dim = expected.shape[1]
    _declare_output_shape(proto, dim)
    model_id = weights_model_id(proto, prefix=spec.id_prefix, input_spec=spec.input)
    set_metadata(proto, spec.model_spec(model_id=model_id, embedding_dim=dim).to_metadata())
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {str(exc).splitlines()[0]}") from None
    _check_against_torch(proto, check.numpy(), expected)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def _probe_output(model: "torch.nn.Module", probe: "torch.Tensor", spec: ExportSpec) -> np.ndarray:
    try:
        out = model(probe)
    except Exception as exc:  # the network's own error, whatever its type
        raise ExportError(
            f"the network cannot embed uint8 images of shape {tuple(probe.shape)} ([N, H, W, 3]): {exc}"
        ) from exc
    if not hasattr(out, "dtype") or out.ndim != 2 or out.shape[0] != probe.shape[0]:
        raise ExportError(f"the network must return embeddings of shape [N, D], returned {getattr(out, 'shape', out)}")
    out = out.detach().float().cpu().numpy()
    norms = np.linalg.norm(out, axis=1)
    if not np.isfinite(out).all() or np.max(np.abs(norms - 1.0)) > 1e-3:
        raise ExportError("the network's embeddings are not L2-normalised: end its forward with F.normalize")
    if spec.embedding_dim is not None and spec.embedding_dim != out.shape[1]:
        raise ExportError(f"the network returns {out.shape[1]}-d embeddings, the spec declares {spec.embedding_dim}")
    return out


def _trace(model: "torch.nn.Module", probe: "torch.Tensor", opset: int) -> "onnx.ModelProto":
    import onnx
    import torch

    buffer = io.BytesIO()
    # The TorchScript exporter (dynamo=False): the dynamo exporter needs onnxscript,
    # which is not a dependency, and gains nothing for a static CNN graph.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Tracer warnings name Python ints taken from shapes (e.g. TF "SAME" padding
        # from H and W): H and W are fixed by the contract, and the batch size is
        # checked after export at a size other than the traced one.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        try:
            torch.onnx.export(
                model,
                (probe,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # torch.onnx raises several unrelated types
            raise ExportError(f"torch.onnx.export failed: {str(exc).strip().splitlines()[0]}") from exc
    return onnx.load_from_string(buffer.getvalue())


def _declare_output_shape(proto: "onnx.ModelProto", dim: int) -> None:
    # The exporter leaves D symbolic after F.normalize's Expand; the contract is [batch, D].
    shape = proto.graph.output[0].type.tensor_type.shape
    del shape.dim[:]
    shape.dim.add().dim_param = "batch"
    shape.dim.add().dim_value = dim


def _check_against_torch(proto: "onnx.ModelProto", probe: np.ndarray, expected: np.ndarray) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
    worst = float(np.max(np.abs(got - expected)))
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"the ONNX graph disagrees with PyTorch by up to {worst:.3g} on the export probe")


def weights_model_id(proto: "onnx.ModelProto", *, prefix: str, input_spec: InputSpec) -> str:
    """`prefix-<16 hex>`: sha256 of every constant tensor of the graph and of the declared preprocessing.

    The id names the function image -> embedding: the same weights exported twice
    get the same id; other weights, or the same weights fed another input size or
    resize policy (which yields other embeddings), get another one.
    """
    from onnx import numpy_helper

    tensors = {tensor.name: tensor for tensor in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    tensors[node.output[0]] = attribute.t
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = numpy_helper.to_array(tensors[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(
        f"input={input_spec.height}x{input_spec.width}|{input_spec.resize}|{input_spec.crop_fraction!r}".encode()
    )
    return f"{prefix}-{digest.hexdigest()[:ID_HASH_CHARS]}"


def set_metadata(proto: "onnx.ModelProto", props: dict[str, str]) -> None:
    """Replace the model's `metadata_props` entries for these keys, keeping any others."""
    kept = [(entry.key, entry.value) for entry in proto.metadata_props if entry.key not in props]
    del proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A model file's `metadata_props` as a dict (weights are not loaded)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}
