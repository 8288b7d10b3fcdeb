"""Static int8 quantization of a snapmatch fp32 model with onnxruntime's tools.

Calibration photos go through `snapmatch.sdk.image.preprocess.preprocess` with the
model's own InputSpec (read from its metadata), so the activation ranges are
measured on exactly what the runtime will feed. The result is a QDQ model
(uint8 activations, int8 per-channel weights) that keeps every metadata entry
of its source, with quantization "int8" and a model id of its own.

Why the defaults (MobileNetV3-Small, ImageNet weights, 224 px; Grocery val
queries against train photos, 132 calibration photos; fp32 Recall@1 0.645):

- Everything int8, as onnxruntime quantizes by default (percentile 99.999,
  per-channel): Recall@1 0.456, cosine to fp32 0.74.
- Two places carry most of the error. The stem's uint8 output feeds the first
  depthwise conv, whose large weights (|w| up to 47) amplify its rounding
  noise; and the squeeze-excitation gates (a 1x1 bottleneck on pooled
  features) turn small rounding errors into per-channel scale errors.
  Keeping the stem + first block and the SE branches in float: cosine 0.96.
- Clipping the ranges at the 99.95th percentile of |x| instead of 99.999:
  cosine 0.98, Recall@1 0.628, MAP@R 0.258 vs 0.261, at 0.95x fp32 latency.
  MinMax (0.90) and entropy (0.95) calibration measured worse, and so did
  float depthwise convs (0.91).
- 7-bit weights (`reduce_range`). On a CPU with AVX-512 VNNI, full 8-bit
  weights measured slightly better (cosine 0.98 vs 0.95). On an AVX2 CPU
  without VNNI, onnxruntime's U8S8 kernels add pairs of uint8 x int8
  products in 16 bits, which saturates with full-range weights: a
  stand-in network's int8 cosine to fp32 fell from 0.99 to 0.78. A model
  ships to CPUs we do not know, so weights are 7-bit by default.
The parity report (snapmatch.export.parity) re-measures this for every model.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from snapmatch.export.onnx_export import (
    ExportError,
    read_metadata,
    set_metadata,
    weights_model_id,
)
from snapmatch.sdk.errors import InvalidArgumentError, SnapmatchError
from snapmatch.sdk.image.preprocess import ImageInput, preprocess
from snapmatch.sdk.model.model_spec import PREFIX, InputSpec, ModelSpec

CALIBRATION_METHODS = ("percentile", "entropy", "minmax")
QUANT_FORMATS = ("qdq", "qoperator")
# The first of these after the last convolution starts the head (pooled features onwards).
HEAD_START_OPS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "Flatten", "Gemm", "MatMul")
CALIBRATION_KEY = PREFIX + "calibration"  # provenance, ignored by ModelSpec


class QuantizationError(ExportError):
    """A model cannot be quantized (no calibration photos, unreadable model, onnxruntime failure)."""


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize; the defaults are the setting measured best on MobileNetV3-Small (module docstring)."""

    method: str = "percentile"  # activation range calibration: one of CALIBRATION_METHODS
    percentile: float = 99.95  # percentile method: share of |activations| the range covers
    per_channel: bool = True  # one weight scale per output channel (per-tensor wrecks depthwise convs)
    reduce_range: bool = True  # 7-bit weights: full-range U8S8 saturates on x86 CPUs without VNNI (see above)
    float_first_convs: int = 3  # keep the graph up to its k-th convolution in float (the stem and first block)
    float_squeeze_excitation: bool = True  # keep squeeze-excitation branches (pool, 2 convs, gate, Mul) in float
    exclude_head: bool = True  # keep pooling/projection/normalisation after the last conv in float
    float_nodes: tuple[str, ...] = ()  # also keep nodes whose name contains any of these in float
    optimize_graph: bool = False  # onnxruntime's graph optimisation before quantizing (it splits HardSwish)
    op_types: tuple[str, ...] | None = None  # op types to quantize; None: onnxruntime's default set
    batch_size: int = 8  # calibration images per calibrator pass (bounds the calibrator's memory)
    quant_format: str = "qdq"  # "qdq" (QuantizeLinear/DequantizeLinear pairs) or "qoperator" (QLinearConv nodes)

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            choices = ", ".join(CALIBRATION_METHODS)
            raise InvalidArgumentError(f"unknown calibration method {self.method!r}; choose one of {choices}")
        if not 0.0 < self.percentile <= 100.0:
            raise InvalidArgumentError("percentile must be in (0, 100]")
        if self.batch_size < 1:
            raise InvalidArgumentError("batch_size must be >= 1")
        if self.float_first_convs < 0:
            raise InvalidArgumentError("float_first_convs must be >= 0")
        if self.quant_format not in QUANT_FORMATS:
            raise InvalidArgumentError(f"unknown quant_format {self.quant_format!r}; choose one of "
                                       f"{', '.join(QUANT_FORMATS)}")


class PhotoCalibrationReader:
    """Feeds calibration photos, preprocessed as the runtime does, in batches to onnxruntime's calibrator.

    Implements onnxruntime's CalibrationDataReader protocol, including the
    `__len__`/`set_range` pair that strided calibration uses.
    """

    def __init__(self, images: Sequence[ImageInput], spec: InputSpec, *, input_name: str, batch_size: int) -> None:
        self._input_name = input_name
        arrays = [preprocess(image, spec) for image in images]
        self._batches = [np.stack(arrays[i:i + batch_size]) for i in range(0, len(arrays), batch_size)]
        self.set_range(0, len(self._batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._pending, None)
        return None if batch is None else {self._input_name: batch}

    def __iter__(self):
        return iter(self.get_next, None)


def quantize_int8(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    *,
    calibration_images: Sequence[ImageInput],
    config: QuantizeConfig = QuantizeConfig(),
) -> Path:
    """Write the static int8 (QDQ, U8S8) version of a snapmatch fp32 model; returns `int8_path`.

    >>> quantize_int8("mnv3s.onnx", "mnv3s-int8.onnx", calibration_images=train_paths[:128])
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from snapmatch.sdk.model.embedder import Embedder

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if not calibration_images:
        raise QuantizationError("static quantization needs calibration photos; none were given")
    source_props = read_metadata(fp32_path)
    spec = ModelSpec.from_metadata(source_props, source=str(fp32_path))
    if spec.quantization != "fp32":
        raise QuantizationError(f"{fp32_path} is already quantized ({spec.quantization}); quantize the fp32 model")

    method = {
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
    }[config.method]
    with tempfile.TemporaryDirectory(prefix="snapmatch-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "quantized.onnx"
        # Shape inference, as onnxruntime's quantization docs ask. Its graph
        # optimisation step is off by default: it splits every HardSwish into
        # HardSigmoid * x, two more uint8 roundings per activation.
        quant_pre_process(str(fp32_path), str(prepared), skip_optimization=not config.optimize_graph)
        graph = onnx.load(str(prepared))
        _name_nodes(graph)  # nodes_to_exclude matches by name
        onnx.save(graph, str(prepared))
        input_name = graph.graph.input[0].name
        reader = PhotoCalibrationReader(
            calibration_images, spec.input, input_name=input_name, batch_size=config.batch_size
        )
        extra_options = {
            # One reader batch per calibrator pass: the histogram calibrators keep every
            # intermediate tensor of a pass in memory, so unbounded passes need GBs.
            "CalibStridedMinMax": 1,
            "CalibPercentile": config.percentile,
        }
        # onnxruntime's calibrators print progress to stdout; a library must not.
        with contextlib.redirect_stdout(io.StringIO()), _as_quantization_error():
            quantize_static(
                str(prepared),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                calibrate_method=method,
                nodes_to_exclude=nodes_to_exclude(graph, config),
                op_types_to_quantize=list(config.op_types) if config.op_types else None,
                extra_options=extra_options,
            )
        proto = onnx.load(str(quantized))

    base = spec.model_id.rsplit("-", 1)[0] if "-" in spec.model_id else spec.model_id
    model_id = weights_model_id(proto, prefix=f"{base}-int8", input_spec=spec.input)
    props = dict(source_props)
    props[PREFIX + "quantization"] = "int8"
    props[PREFIX + "model_id"] = model_id
    props[CALIBRATION_KEY] = json.dumps(
        {**asdict(config), "images": len(calibration_images), "source_model_id": spec.model_id}, sort_keys=True
    )
    del proto.metadata_props[:]
    set_metadata(proto, props)
    onnx.checker.check_model(proto)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    partial = int8_path.with_name(int8_path.name + ".partial")
    onnx.save(proto, str(partial))
    try:
        Embedder(partial, threads=1)  # the runtime's own contract check: raises ModelContractError if broken
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, int8_path)
    return int8_path


@contextlib.contextmanager
def _as_quantization_error():
    try:
        yield
    except SnapmatchError:
        raise
    except Exception as exc:  # onnxruntime raises untyped errors from its C++ core
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantizationError(f"onnxruntime could not quantize the model: {first_line}") from exc


def nodes_to_exclude(proto, config: QuantizeConfig) -> list[str]:
    """Names of the nodes the config keeps in float: leading convs, squeeze-excitation branches, the head."""
    nodes = list(proto.graph.node)  # ONNX requires nodes in topological order
    excluded = {node.name for node in nodes if any(pattern in node.name for pattern in config.float_nodes)}
    squeeze_excitation = squeeze_excitation_nodes(proto)
    if config.float_squeeze_excitation:
        excluded |= squeeze_excitation
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv" and node.name not in squeeze_excitation]
    if convs and config.float_first_convs:
        # The stem's output feeds the first depthwise conv, whose large weights
        # amplify its uint8 rounding noise; everything up to the k-th conv stays float.
        last = convs[min(config.float_first_convs, len(convs)) - 1]
        excluded |= {node.name for node in nodes[: last + 1]}
    if convs and config.exclude_head:
        # The head (global pooling, projection, L2 normalisation) computes the
        # embedding itself: uint8 rounding there is rounding of the result.
        last_conv = max(i for i, node in enumerate(nodes) if node.op_type == "Conv")
        head = next((i for i in range(last_conv + 1, len(nodes)) if nodes[i].op_type in HEAD_START_OPS), None)
        if head is not None:
            excluded |= {node.name for node in nodes[head:]}
    return [node.name for node in nodes if node.name in excluded]


def squeeze_excitation_nodes(proto, *, max_branch: int = 8) -> set[str]:
    """Nodes of squeeze-excitation branches: GlobalAveragePool(x) -> ... -> Mul(x, gate).

    A branch is the pool, every node reached from it within `max_branch` steps,
    and the Mul that multiplies the pool's own input by the result.
    """
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: set[str] = set()
    for pool in proto.graph.node:
        if pool.op_type != "GlobalAveragePool":
            continue
        source, branch, frontier, gate = pool.input[0], [pool], [pool], None
        while frontier and gate is None and len(branch) <= max_branch:
            node = frontier.pop(0)
            for consumer in (c for output in node.output for c in consumers.get(output, [])):
                if consumer.op_type == "Mul" and source in consumer.input:
                    gate = consumer
                elif consumer not in branch:
                    branch.append(consumer)
                    frontier.append(consumer)
        if gate is not None:
            found |= {node.name for node in branch} | {gate.name}
    return found


def _name_nodes(proto) -> None:
    taken = {node.name for node in proto.graph.node}
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
