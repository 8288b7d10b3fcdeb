"""Export policy: a training checkpoint becomes a complete snapmatch model, or nothing.

Every file is written under a temporary name in the output folder and
renamed into place only once the model, its metadata (training split
included) and its calibrated default threshold are all there, so a killed
or failed export never leaves a model that `catalog create --model` would
take. The int8 model is calibrated on photos chosen by
`int8_calibration_photos`, the one function `benchmark accuracy` uses too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from snapmatch.sdk.errors import CalibrationError, DatasetError
from snapmatch.training.data import Dataset, Photo, load_dataset
from snapmatch.training.splits import Split, holdout_split

CALIBRATION_PHOTOS = 128  # photos an int8 model's activation ranges are calibrated on
ID_PREFIXES = {"small": "mnv3s", "large_minimalistic": "mnv3lm"}


def int8_calibration_photos(photos: list[Photo], count: int = CALIBRATION_PHOTOS) -> list[Path]:
    """Every k-th training photo (shop photos, in path order): spread over products, the same on every call."""
    shop = sorted((photo for photo in photos if not photo.catalog), key=lambda p: str(p.path)) or \
        sorted(photos, key=lambda p: str(p.path))
    step = max(1, len(shop) // count)
    return [photo.path for photo in shop[::step][:count]]


@dataclass
class ExportResult:
    fp32: Path
    int8: Path | None = None
    parity: dict | None = None
    default_threshold: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    int8_refused: list[str] = field(default_factory=list)  # why the int8 model failed the gate (then not written)

    def to_dict(self) -> dict:
        return {"fp32": str(self.fp32), "int8": str(self.int8) if self.int8 else None, "parity": self.parity,
                "int8_refused": self.int8_refused, "default_threshold": self.default_threshold,
                "warnings": self.warnings}


def run_dataset(state: dict, data: str | os.PathLike | None) -> tuple[Dataset, Split]:
    """The dataset a checkpoint was trained on (or `data`) and the split to calibrate on."""
    source = data or state["config"].get("data")
    if not source:
        raise DatasetError("this checkpoint names no dataset: give --data")
    if not Path(source).exists():
        raise DatasetError(f"the run's dataset {source} is not here: give --data")
    dataset = load_dataset(source)
    recorded = state.get("split")
    if recorded and recorded.get("dataset") == dataset.fingerprint():
        return dataset, Split.from_dict(recorded)
    return dataset, holdout_split(dataset, holdout=0)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    int8: bool = False,
    calibration_photos: int = CALIBRATION_PHOTOS,
    threshold_precision: float = 0.95,
    image_size: int | None = None,
    force_int8: bool = False,
    on_step: Callable[[str], None] = lambda step: None,
) -> ExportResult:
    """OUT/model.onnx (and with int8 OUT/model-int8.onnx, parity.json, parity.md), each complete or absent.

    The int8 model is written only when it passes the gate (parity.int8_verdict:
    as accurate and faster); otherwise `int8_refused` says why (force_int8 writes it anyway).
    """
    from snapmatch.training.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    dataset, split = run_dataset(state, data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".export-*"):  # what a killed export left
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        on_step("exporting fp32")
        fp32 = _export_fp32(state, staging / "model.onnx", image_size=image_size)
        result = ExportResult(fp32=fp32)
        staged = [fp32]
        training, catalog, queries = split.parts(dataset)
        if int8:
            from snapmatch.export.parity import format_report, parity_report
            from snapmatch.export.quantize import quantize_int8

            on_step("quantizing to int8")
            result.int8 = quantize_int8(fp32, staging / "model-int8.onnx",
                                        calibration_images=int8_calibration_photos(training, calibration_photos))
            staged.append(result.int8)
            on_step("measuring int8 against fp32")
            result.parity = parity_report(fp32, result.int8, gallery=[(p.path, p.product) for p in catalog],
                                          queries=[(p.path, p.product) for p in queries], threads=1)
            from snapmatch.export.parity import int8_verdict

            result.int8_refused = int8_verdict(result.parity)
            result.parity["int8_gate"] = {"passed": not result.int8_refused, "reasons": result.int8_refused,
                                          "forced": bool(result.int8_refused and force_int8)}
            (staging / "parity.json").write_text(json.dumps(result.parity, indent=2))
            (staging / "parity.md").write_text(format_report(result.parity) + "\n")
            if result.int8_refused and not force_int8:
                staged.remove(result.int8)
                (staging / "model-int8.onnx").unlink()
        for path in staged:
            on_step(f"calibrating {path.name}'s default threshold")
            try:
                threshold = default_threshold(path, catalog, queries, target_precision=threshold_precision)
            except CalibrationError as exc:
                result.warnings.append(f"{path.name} keeps no default threshold: {exc}")
                continue
            set_default_threshold(path, threshold)
            result.default_threshold[path.name] = threshold
        # Complete: move into place, the models last, so a model on disk always has its report beside it.
        moved = {}
        for name in ("parity.json", "parity.md", "model-int8.onnx", "model.onnx"):
            if (staging / name).exists():
                os.replace(staging / name, out / name)
                moved[name] = out / name
        result.fp32 = moved["model.onnx"]
        result.int8 = moved.get("model-int8.onnx")
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_fp32(state: dict, path: Path, *, image_size: int | None = None) -> Path:
    """Rebuild the network a checkpoint describes and write it as a snapmatch fp32 ONNX model.

    image_size: export at another input size than the run trained at (the network is convolutional).
    """
    from snapmatch.export.onnx_export import ExportSpec, export_onnx
    from snapmatch.sdk.model.model_spec import InputSpec
    from snapmatch.training.model import ModelConfig, build_model

    config = ModelConfig.from_dict(state["model_config"])
    model = build_model(config)
    model.load_state_dict(state["model"])
    size = image_size or state["config"]["image_size"]
    spec = ExportSpec(
        input=InputSpec(size, size, "center_crop", 0.875),
        data_fingerprint=state["data_fingerprint"],
        name=f"MobileNetV3-{config.backbone} {state['config']['loss']} ({config.head} head"
             + (", GeM)" if config.pooling == "gem" else ")"),
        id_prefix=ID_PREFIXES[config.backbone],
        training_split=state.get("split") or None,
    )
    return export_onnx(model, path, spec=spec)


def default_threshold(model: Path, catalog: list[Photo], queries: list[Photo], *, target_precision: float) -> float:
    """The plain-cosine identify() threshold for `target_precision`, a third of the products unknown."""
    from snapmatch.evaluation.embedding import embed
    from snapmatch.evaluation.open_set import recommended_threshold
    from snapmatch.sdk.model.embedder import Embedder

    if not queries:
        raise CalibrationError("the dataset has no query photos to calibrate on")
    embedder = Embedder(model, threads=None)
    return recommended_threshold(embed(embedder, catalog), embed(embedder, queries), embedder.model_id,
                                 target_precision=target_precision)


def set_default_threshold(path: Path, threshold: float) -> None:
    """Record the recommended identify() threshold in a model's metadata (the model id is unchanged)."""
    import onnx

    from snapmatch.export.onnx_export import set_metadata
    from snapmatch.sdk.model.model_spec import PREFIX

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props[PREFIX + "default_threshold"] = repr(round(threshold, 6))
    set_metadata(proto, props)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


# TrainConfig fields that `snapmatch train` takes as flags, beyond the ones every card names.
_RECIPE_FLAGS = {"catalog_pairs": "--catalog-pairs", "colour_classes": "--colour-classes", "pooling": "--pooling",
                 "freeze_blocks": "--freeze-blocks", "distill": "--distill", "l2sp": "--l2sp",
                 "batch_size": "--batch-size", "image_size": "--image-size", "backbone_lr": "--backbone-lr",
                 "lr": "--lr", "proxy_lr": "--proxy-lr", "dim": "--dim"}


def train_arguments(recipe: dict) -> str:
    """The `snapmatch train` flags that remake a run's recipe (its TrainConfig as a dict), data and split aside."""
    from snapmatch.training.train import TrainConfig

    default = TrainConfig()
    weights = Path(str(recipe.get("pretrained") or "IMAGENET.pt")).name  # the starting weights' file, by name
    args = [f"--loss {recipe['loss']} --epochs {recipe['epochs']} --seed {recipe['seed']} "
            f"--backbone {recipe['backbone']} --head {recipe['head']} --pretrained {weights}"]
    for key, flag in _RECIPE_FLAGS.items():
        if key in recipe and recipe[key] != getattr(default, key):
            args.append(f"{flag} {recipe[key]:g}" if isinstance(recipe[key], float) else f"{flag} {recipe[key]}")
    camera = recipe.get("augment", {}).get("camera", 0.0)
    if camera:
        args.append(f"--camera {camera:g}")
    return " ".join(args)


def ship(
    checkpoint: str | os.PathLike,
    name: str,
    result: ExportResult,
    *,
    data: str | os.PathLike | None = None,
    p2_model: str | os.PathLike | None = None,
    baseline: str | os.PathLike | None = None,
    previous: str | os.PathLike | None = None,
    threshold_precision: float = 0.95,
    models_dir: Path | None = None,
) -> Path:
    """Evaluate, choose int8 (within 1 point of fp32's Recall@1) or fp32, and install it with its model card."""
    from snapmatch.evaluation import evaluate
    from snapmatch.export.model_card import ship_model
    from snapmatch.sdk.product_search import MODELS_DIR
    from snapmatch.training.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    dataset, split = run_dataset(state, data)
    parity = result.parity
    chosen = result.fp32
    if parity and result.int8 and not result.int8_refused:
        chosen = result.int8  # it passed the gate: as accurate and faster
    protocols = ("P1", "FEW", "P3", "OPEN") + (("P2",) if p2_model else ())
    evaluation = {"model": evaluate(chosen, dataset, split=split, protocols=protocols, p2_model=p2_model,
                                    target_precision=threshold_precision, threads=1, adapt=True)}
    if baseline is not None:
        evaluation["imagenet_baseline"] = evaluate(baseline, dataset, split=split, protocols=("P1", "P3", "OPEN"),
                                                   target_precision=threshold_precision, threads=1, adapt=True)
    if previous is not None:  # the model this one replaces, measured the same way
        evaluation["previous_default"] = evaluate(previous, dataset, split=split, protocols=("P1", "FEW", "P3", "OPEN"),
                                                  target_precision=threshold_precision, threads=1, adapt=True)
    recipe = state["config"]
    train_args = train_arguments(recipe)
    commands = [  # the recipe, end to end (runs/ is any scratch folder; DATA the dataset)
        f"snapmatch train DATA --out runs/{name} {train_args} --holdout 0",
        f"snapmatch train DATA --out runs/{name}-heldout {train_args}",
        "snapmatch train DATA --out runs/imagenet --epochs 0 --pretrained mobilenet_v3_small-imagenet.pt --holdout 0",
        f"snapmatch export runs/{name}/last.pt --int8 --ship {name} --p2-model runs/{name}-heldout/model.onnx "
        "--baseline runs/imagenet/model.onnx --previous PREVIOUS.onnx",
    ]
    why = "int8" if chosen != result.fp32 else "fp32"
    speed = (parity["fp32"]["latency_ms_median"] / parity["int8"]["latency_ms_median"]) if parity else None
    notes = [f"shipped {why}: int8 Recall@1 "
             + (f"{parity['int8']['recall_at_1']:.3f} vs fp32 {parity['fp32']['recall_at_1']:.3f}, MAP@R "
                f"{parity['int8']['map_at_r']:.3f} vs {parity['fp32']['map_at_r']:.3f}, {speed:.2f}x as fast "
                "(ships int8 only when it passes the gate: Recall@1 within 1 point, MAP@R within 2, at least "
                "1.2x faster)" + (f"; refused: {'; '.join(result.int8_refused)}" if result.int8_refused else "")
                if parity else "not measured")]
    folder = models_dir or MODELS_DIR
    if chosen != result.fp32:  # training starts from the fp32 twin: int8 weights cannot seed a network
        shutil.copyfile(result.fp32, folder / f"{name}-fp32.onnx")
        notes.append(f"{name}-fp32.onnx beside it is the same network in fp32: `snapmatch train --pretrained default` "
                     "starts from it")
    return ship_model(Path(chosen), folder, name=name, recipe=recipe, commands=commands,
                      evaluation=evaluation, parity=parity, notes=notes)
