"""The model card: what a shipped model is, how it was made, and how well it does (JSON beside the .onnx)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from snapmatch.sdk.fsutil import file_sha256
from snapmatch.sdk.model.embedder import Embedder


def ship_model(
    model: Path,
    target_dir: Path,
    *,
    name: str,
    recipe: dict,
    commands: list[str],
    evaluation: dict,
    parity: dict | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Copy `model` to TARGET_DIR/NAME.onnx and write NAME.json, its model card; returns the card's path."""
    target_dir.mkdir(parents=True, exist_ok=True)
    shipped = target_dir / f"{name}.onnx"
    shutil.copyfile(model, shipped)
    spec = Embedder(shipped, threads=1).spec
    card = {
        "name": name,
        "file": shipped.name,
        "sha256": file_sha256(shipped),
        "model_id": spec.model_id,
        "quantization": spec.quantization,
        "input": {"height": spec.input.height, "width": spec.input.width, "resize": spec.input.resize,
                  "crop_fraction": spec.input.crop_fraction, "dtype": "uint8 RGB, NHWC"},
        "embedding_dim": spec.embedding_dim,
        "data_fingerprint": spec.data_fingerprint,
        "default_threshold": spec.default_threshold,
        "recipe": recipe,
        "commands": commands,
        "evaluation": evaluation,
        "parity_int8_vs_fp32": parity,
        "notes": notes or [],
        "licence": "Weights fine-tuned from Google's MobileNetV3 ImageNet release (Apache-2.0) on the Grocery "
                   "Store Dataset (MIT, Klasson et al., WACV 2019).",
    }
    card_path = target_dir / f"{name}.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path
