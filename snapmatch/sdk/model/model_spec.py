"""What a snapmatch model declares about itself in its ONNX `metadata_props`.

The model is the contract: everything the runtime needs to feed a model and
interpret its output travels inside the .onnx file, so training, calibration
and serving cannot drift apart. Export writes these keys; the Embedder reads
and validates them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from snapmatch.sdk.errors import InvalidArgumentError, ModelContractError

FORMAT_VERSION = 1
PREFIX = "snapmatch."
RESIZE_POLICIES = ("center_crop", "stretch", "letterbox")
QUANTIZATIONS = ("fp32", "int8", "fp16")
REQUIRED_KEYS = (
    "format_version",
    "input_size",
    "resize",
    "embedding_dim",
    "model_id",
    "data_fingerprint",
    "quantization",
)


@dataclass(frozen=True)
class InputSpec:
    """How a decoded image becomes the model's input."""

    height: int
    width: int
    resize: str = "center_crop"  # one of RESIZE_POLICIES
    crop_fraction: float = 0.875  # center_crop: the crop covers this share of the shorter side


@dataclass(frozen=True)
class ModelSpec:
    """The parsed, validated metadata of a snapmatch model."""

    input: InputSpec
    embedding_dim: int
    model_id: str
    data_fingerprint: str
    quantization: str
    format_version: int = FORMAT_VERSION
    default_threshold: float | None = None  # identify() threshold the model card recommends
    name: str = ""
    # How the training run split its data: the dataset's fingerprint, the query photos' seed and share,
    # and the products held out of training (snapmatch.training.splits.Split.to_dict). None: not recorded.
    training_split: dict | None = None

    def to_metadata(self) -> dict[str, str]:
        """The `metadata_props` that describe this model (export writes them)."""
        props = {
            "format_version": str(self.format_version),
            "input_size": f"{self.input.height},{self.input.width}",
            "resize": self.input.resize,
            "crop_fraction": repr(self.input.crop_fraction),
            "embedding_dim": str(self.embedding_dim),
            "model_id": self.model_id,
            "data_fingerprint": self.data_fingerprint,
            "quantization": self.quantization,
            "name": self.name,
        }
        if self.default_threshold is not None:
            props["default_threshold"] = repr(self.default_threshold)
        if self.training_split is not None:
            props["training_split"] = json.dumps(self.training_split, sort_keys=True)
        return {PREFIX + key: value for key, value in props.items()}

    @classmethod
    def from_metadata(cls, props: dict[str, str], *, source: str = "model") -> "ModelSpec":
        """Parse `metadata_props`; raise ModelContractError naming what is missing or wrong."""
        ours = {key[len(PREFIX):]: value for key, value in props.items() if key.startswith(PREFIX)}
        missing = [key for key in REQUIRED_KEYS if key not in ours]
        if missing:
            raise ModelContractError(
                f"{source} is not a snapmatch model: metadata_props lack "
                + ", ".join(PREFIX + key for key in missing)
            )
        try:
            version = int(ours["format_version"])
            height, width = (int(part) for part in ours["input_size"].split(","))
            dim = int(ours["embedding_dim"])
            crop = float(ours.get("crop_fraction", "0.875"))
            threshold = ours.get("default_threshold")
            threshold_value = float(threshold) if threshold not in (None, "") else None
            split = json.loads(ours["training_split"]) if ours.get("training_split") else None
            if split is not None and not isinstance(split, dict):
                raise InvalidArgumentError("training_split is not a JSON object")
        except ValueError as exc:
            raise ModelContractError(f"{source} has malformed snapmatch metadata: {exc}") from None
        if version < 1:
            raise ModelContractError(f"{source} declares an invalid model format version {version}")
        if version > FORMAT_VERSION:
            raise ModelContractError(
                f"{source} uses model format {version}; this snapmatch reads up to {FORMAT_VERSION}: upgrade snapmatch"
            )
        if ours["resize"] not in RESIZE_POLICIES:
            raise ModelContractError(f"{source} has unknown resize policy {ours['resize']!r}")
        if ours["quantization"] not in QUANTIZATIONS:
            raise ModelContractError(f"{source} has unknown quantization {ours['quantization']!r}")
        if not (8 <= height <= 4096 and 8 <= width <= 4096) or dim <= 0 or not 0.1 <= crop <= 1.0:
            raise ModelContractError(f"{source} declares an implausible input size, dim or crop fraction")
        if not ours["model_id"]:
            raise ModelContractError(f"{source} has an empty {PREFIX}model_id")
        return cls(
            input=InputSpec(height=height, width=width, resize=ours["resize"], crop_fraction=crop),
            embedding_dim=dim,
            model_id=ours["model_id"],
            data_fingerprint=ours["data_fingerprint"],
            quantization=ours["quantization"],
            format_version=version,
            default_threshold=threshold_value,
            name=ours.get("name", ""),
            training_split=split,
        )
