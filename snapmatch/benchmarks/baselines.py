"""The models a latency benchmark compares, each as `run(batch) -> embeddings` on preprocessed uint8 NHWC batches.

- ONNX Runtime sessions at a given thread count, set up as the runtime's
  Embedder sets them up (so a baseline differs from the runtime only in model);
- the int8 model: given, or quantized here from the fp32 one with
  `snapmatch.export.quantize` (needs the `onnx` package) on the benchmark's photos;
- PyTorch eager fp32, the network of the model card's recipe (or of a
  checkpoint), imported only here: the runtime never imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from snapmatch.sdk.errors import SnapmatchError
from snapmatch.sdk.model.model_spec import InputSpec

MODEL_CARD = Path(__file__).resolve().parent.parent / "models" / "default.json"

Runner = Callable[[np.ndarray], np.ndarray]


class BaselineUnavailable(SnapmatchError):
    """A baseline cannot be built here (torch or onnx not installed, unusable checkpoint)."""


@dataclass
class Baseline:
    """One compared model: how to run it, and where it came from (for the report)."""

    name: str  # "onnx_fp32", "onnx_int8", "torch_eager"
    run: Runner
    source: str  # file, or how it was made
    close: Callable[[], None] = lambda: None


def onnx_baseline(name: str, path: str | os.PathLike, *, threads: int, source: str | None = None) -> Baseline:
    """A fresh ORT session of `path` with `threads` intra-op threads (a new thread pool per session)."""
    import onnxruntime as ort

    from snapmatch.benchmarks.ort_profile import session_options

    session = ort.InferenceSession(os.fspath(path), session_options(threads), providers=["CPUExecutionProvider"])
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: batch})[0]

    return Baseline(name, run, source or str(path))


def quantize_here(fp32: str | os.PathLike, out: str | os.PathLike, calibration_images: Sequence) -> Path:
    """The int8 model of `fp32`, calibrated on `calibration_images` (BaselineUnavailable without onnx)."""
    try:
        import onnx  # noqa: F401  (quantize_int8 needs it; fail here with a clear reason)
    except ImportError:
        raise BaselineUnavailable('quantizing to int8 needs the onnx package (pip install "snapmatch[train]"); '
                                  "or pass --int8 PATH") from None
    from snapmatch.export.quantize import quantize_int8

    return quantize_int8(fp32, out, calibration_images=list(calibration_images))


def card_recipe() -> tuple[dict, str]:
    """(ModelConfig fields, where they came from) of the shipped model card's training recipe."""
    try:
        recipe = json.loads(MODEL_CARD.read_text())["recipe"]
    except (OSError, ValueError, KeyError):
        return {"backbone": "small", "head": "pooled"}, "MobileNetV3-Small pooled (no model card found)"
    fields = {"backbone": recipe["backbone"], "head": recipe["head"], "dim": recipe.get("dim") or None,
              "freeze_bn": recipe.get("freeze_bn", True)}
    return fields, f"model card recipe ({MODEL_CARD.name}: {recipe['backbone']}, {recipe['head']} head)"


def torch_baseline(spec: InputSpec, *, threads: int, checkpoint: str | os.PathLike | None = None) -> Baseline:
    """PyTorch eager fp32 of the recipe's network at the model's input size, on `threads` threads.

    Weights only change the numbers, not the time: without a checkpoint the
    network keeps its random initialisation. BaselineUnavailable without torch.
    """
    try:
        import torch

        from snapmatch.training.model import ModelConfig, build_model
    except ImportError:
        raise BaselineUnavailable('PyTorch eager needs torch (pip install "snapmatch[train]")') from None
    fields, source = card_recipe()
    state = None
    if checkpoint is not None:
        from snapmatch.sdk.errors import CheckpointError
        from snapmatch.training.checkpoint import load_checkpoint

        try:
            state = load_checkpoint(checkpoint)
        except CheckpointError as exc:
            raise BaselineUnavailable(str(exc)) from None
        fields, source = state["model_config"], f"checkpoint {checkpoint}"
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict(fields))
    if state is not None:
        model.load_state_dict(state["model"])
    model.eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    source += f", {'checkpoint weights' if state is not None else 'random weights'}, {spec.height}x{spec.width}"
    return Baseline("torch_eager", run, source, close=lambda: torch.set_num_threads(previous))
