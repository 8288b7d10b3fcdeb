"""Embed images with a snapmatch ONNX model: one onnxruntime session per model."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from snapmatch.sdk.cores import usable_cores
from snapmatch.sdk.errors import (
    EmbeddingError,
    ImageError,
    InvalidArgumentError,
    ModelContractError,
    ModelError,
)
from snapmatch.sdk.image.preprocess import ImageInput, image_batch, preprocess
from snapmatch.sdk.model.model_spec import ModelSpec

NORM_TOLERANCE = 1e-2  # |‖e‖ - 1| allowed; int8 models land within 1e-4


class Embedder:
    """Loads a snapmatch model and turns images into L2-normalised float32 embeddings.

    >>> embedder = Embedder("model.onnx", threads=1)
    >>> embedder.embed(["a.jpg", frame_bgr]).shape
    (2, 576)
    """

    def __init__(self, model: str | os.PathLike, *, threads: int | None = None, batch_size: int = 16) -> None:
        import onnxruntime as ort

        self.path = Path(model)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        if threads is not None:
            if threads < 0:
                raise InvalidArgumentError("threads must be >= 0 (0 means all cores)")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path} is not a loadable ONNX model: {first_line}") from None
        try:
            props = self._session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError as exc:  # bytes that are not UTF-8 text: a damaged file (a corruption sweep found it)
            raise ModelError(f"{self.path} has metadata that is not UTF-8 text (byte {exc.start} of a value): "
                             "the file is damaged") from None
        self.spec = ModelSpec.from_metadata(props, source=str(self.path))
        self.batch_size = max(1, batch_size)
        self.threads = threads
        # Decoding and resizing run in OpenCV without the GIL: a batch's images are prepared on
        # as many cores as inference may use (one thread: in the caller, as before).
        workers = threads if threads else usable_cores()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="snapmatch-preprocess") if workers > 1 else None
        self._check_signature()
        self._check_output()

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def dim(self) -> int:
        return self.spec.embedding_dim

    def _check_signature(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        where = str(self.path)
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelContractError(f"{where} must have one input and one output, has {len(inputs)} and {len(outputs)}")
        (inp,), (out,) = inputs, outputs
        if inp.type != "tensor(uint8)":
            raise ModelContractError(f"{where} input must be uint8 RGB images, is {inp.type}")
        if len(inp.shape) != 4 or inp.shape[3] != 3:
            raise ModelContractError(f"{where} input must have shape [N, H, W, 3], has {inp.shape}")
        for axis, expected in ((1, self.spec.input.height), (2, self.spec.input.width)):
            if isinstance(inp.shape[axis], int) and inp.shape[axis] != expected:
                raise ModelContractError(
                    f"{where} input shape {inp.shape} disagrees with its metadata input size "
                    f"{self.spec.input.height}x{self.spec.input.width}"
                )
        if out.type != "tensor(float)" or len(out.shape) != 2:
            raise ModelContractError(f"{where} output must be float32 [N, D], is {out.type} {out.shape}")
        if isinstance(out.shape[1], int) and out.shape[1] != self.dim:
            raise ModelContractError(f"{where} output dim {out.shape[1]} disagrees with its metadata ({self.dim})")
        self._input_name, self._output_name = inp.name, out.name

    def _check_output(self) -> None:
        # One forward pass on a fixed synthetic image proves the output really is
        # an L2-normalised vector of the declared size before any catalog uses it.
        spec = self.spec.input
        rng = np.random.default_rng(0)
        probe = rng.integers(0, 256, size=(1, spec.height, spec.width, 3), dtype=np.uint8)
        out = self._run(probe)
        if out.shape != (1, self.dim):
            raise ModelContractError(f"{self.path} produced shape {out.shape}, expected (1, {self.dim})")
        try:
            _check_normalised(out)
        except EmbeddingError as exc:
            raise ModelContractError(f"{self.path} breaks the contract: {exc}") from None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run([self._output_name], {self._input_name: batch})[0]
        return np.asarray(out, dtype=np.float32)

    def preprocess(self, image: ImageInput) -> np.ndarray:
        """The model's input for one image (RGB uint8, H x W x 3)."""
        return preprocess(image, self.spec.input)

    def preprocess_many(self, images: Sequence[ImageInput]) -> list[np.ndarray | ImageError]:
        """Each image's model input, in order, prepared on several cores; an unreadable image gives its ImageError."""
        if self._pool is None or len(images) < 2:
            return [self._preprocess_or_error(image) for image in images]
        return list(self._pool.map(self._preprocess_or_error, images))

    def _preprocess_or_error(self, image: ImageInput) -> np.ndarray | ImageError:
        try:
            return self.preprocess(image)
        except ImageError as exc:
            return exc

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings of already preprocessed images, shape [N, H, W, 3] uint8."""
        if batch.dtype != np.uint8 or batch.ndim != 4:
            raise InvalidArgumentError("embed_batch takes a uint8 array of shape [N, H, W, 3]")
        out = self._run(batch)
        _check_normalised(out)
        return out

    def embed(self, images: ImageInput | Sequence[ImageInput] | Iterable[ImageInput], *,
              on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embeddings of images (paths, bytes or BGR arrays), shape [N, D]; one image gives [1, D].

        A list (or any iterable) of images, or a 4-D array, is a batch.
        on_progress(n) is called after each batch of n images.
        """
        listed, _ = image_batch(images)
        chunks = []
        for start in range(0, len(listed), self.batch_size):
            inputs = self.preprocess_many(listed[start:start + self.batch_size])
            arrays = [item for item in inputs if not isinstance(item, ImageError)]
            if len(arrays) < len(inputs):
                raise next(item for item in inputs if isinstance(item, ImageError))
            chunks.append(self.embed_batch(_batch(arrays)))
            if on_progress is not None:
                on_progress(len(inputs))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]

    def embed_preprocessed(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of images already through `preprocess`, in batches of batch_size."""
        if not len(inputs):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([self.embed_batch(_batch(list(inputs[i:i + self.batch_size])))
                               for i in range(0, len(inputs), self.batch_size)])

    def __repr__(self) -> str:
        return f"Embedder({str(self.path)!r}, model_id={self.model_id!r}, dim={self.dim}, {self.spec.quantization})"


def _batch(images: list[np.ndarray]) -> np.ndarray:
    # A camera frame comes one at a time: a view of it, not a copy (np.stack copies even one image).
    return images[0][None] if len(images) == 1 else np.stack(images)


def _check_normalised(vectors: np.ndarray) -> None:
    if not np.isfinite(vectors).all():
        raise EmbeddingError("the model produced NaN or infinite embeddings")
    norms = np.linalg.norm(vectors, axis=1)
    worst = float(np.max(np.abs(norms - 1.0))) if len(norms) else 0.0
    if worst > NORM_TOLERANCE:
        raise EmbeddingError(f"embeddings are not L2-normalised (a norm is off by {worst:.3g})")
