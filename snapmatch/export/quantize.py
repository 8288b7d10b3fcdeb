"""Static int8 quantization of a snapmatch fp32 model with onnxruntime's tools.

Calibration photos go through `snapmatch.sdk.preprocess.preprocess` with the
model's own InputSpec (read from its metadata), so the activation ranges are
measured on exactly what the runtime will feed. The result is a QDQ model
(uint8 activations, int8 per-channel weights) that keeps every metadata entry
of its source, with quantization "int8" and a model id of its own.
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

from snapmatch.export.onnx_export import ExportError, read_metadata, set_metadata, weights_model_id
from snapmatch.sdk.model_spec import PREFIX, InputSpec, ModelSpec
from snapmatch.sdk.preprocess import ImageInput, preprocess

CALIBRATION_METHODS = ("percentile", "entropy", "minmax")
# The first of these after the last convolution starts the head (pooled features onwards).
HEAD_START_OPS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "Flatten", "Gemm", "MatMul")
CALIBRATION_KEY = PREFIX + "calibration"  # provenance, ignored by ModelSpec


class QuantizationError(ExportError):
    """A model cannot be quantized (no calibration photos, unreadable model, onnxruntime failure)."""


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize; the defaults are the setting measured best on MobileNetV3-Small (see docs/BENCHMARKS.md)."""

    method: str = "percentile"  # activation range calibration: one of CALIBRATION_METHODS
    percentile: float = 99.999  # percentile method: share of |activations| the range covers
    per_channel: bool = True  # one weight scale per output channel (per-tensor wrecks depthwise convs)
    reduce_range: bool = False  # 7-bit weights: avoids U8S8 saturation on x86 CPUs without VNNI
    exclude_first_conv: bool = False  # keep the stem convolution in float
    exclude_head: bool = True  # keep pooling/projection/normalisation after the last conv in float
    exclude_last_conv: bool = False  # keep the last convolution (whose output is pooled into the embedding) in float
    float_nodes: tuple[str, ...] = ()  # keep nodes whose name contains any of these in float (mixed precision)
    optimize_graph: bool = True  # run onnxruntime's graph optimisation in quant_pre_process
    op_types: tuple[str, ...] | None = None  # op types to quantize; None: onnxruntime's default set
    batch_size: int = 8  # calibration images per calibrator pass (bounds the calibrator's memory)

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"unknown calibration method {self.method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError("percentile must be in (0, 100]")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


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
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from snapmatch.sdk.embedder import Embedder

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
        # Shape inference + onnxruntime's basic graph optimisation, as the
        # quantization docs ask: constant folding and fused ops give cleaner QDQ placement.
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
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ,
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
    onnx.save(proto, str(int8_path))
    Embedder(int8_path, threads=1)  # the runtime's own contract check: raises ModelContractError if broken
    return int8_path


def nodes_to_exclude(proto, config: QuantizeConfig) -> list[str]:
    """Names of the nodes the config keeps in float (the stem conv, the head after the last conv)."""
    nodes = list(proto.graph.node)  # ONNX graphs are stored in topological order
    convs = [index for index, node in enumerate(nodes) if node.op_type == "Conv"]
    if not convs:
        return []
    excluded = [node.name for node in nodes if any(pattern in node.name for pattern in config.float_nodes)]
    if config.exclude_first_conv:
        excluded.append(nodes[convs[0]].name)
    if config.exclude_last_conv:
        excluded.append(nodes[convs[-1]].name)
    if config.exclude_head:
        # The head (global pooling, projection, L2 normalisation) computes the
        # embedding itself: uint8 rounding there is rounding of the result, while
        # in float it costs a small share of the time.
        head = next((i for i in range(convs[-1] + 1, len(nodes)) if nodes[i].op_type in HEAD_START_OPS), None)
        if head is not None:
            excluded.extend(node.name for node in nodes[head:])
    return excluded


def _name_nodes(proto) -> None:
    taken = {node.name for node in proto.graph.node}
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
