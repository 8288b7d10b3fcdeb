"""Check the MobileNetV3 port against the ImageNet-features baseline of the converted weights' README.

Embeds a dataset's query photos (Grocery: val) and its other shop photos (gallery) with
pooled, L2-normalised ImageNet features, reports Recall@1/5 by fine label
(nearest neighbour by cosine) for each backbone and padding, and times one
224x224 image through each backbone on one thread, in PyTorch and in ONNX
Runtime. On a shared machine read the minimum: medians swing with the load.

    python -m snapmatch.training.validate_backbone --data DIR --weights DIR [--threads 1] [--latency-only]

--data and --weights default to $SNAPMATCH_DATA and $SNAPMATCH_WEIGHTS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from snapmatch.sdk.image.preprocess import preprocess
from snapmatch.sdk.model.model_spec import InputSpec
from snapmatch.training.model import EmbeddingNet, ModelConfig, build_model

SPEC = InputSpec(224, 224, "center_crop", 0.875)  # shorter side 256, centre crop 224
WEIGHT_FILES = {
    "small": "mobilenet_v3_small-imagenet.pt",
    "large_minimalistic": "mobilenet_v3_large_minimalistic-imagenet.pt",
}
# (name, config, README's Recall@1 / Recall@5)
VARIANTS = [
    ("small, TF padding", ModelConfig("small", "pooled"), (0.622, 0.848)),
    ("small, symmetric padding", ModelConfig("small", "pooled", tf_padding=False), (0.585, 0.824)),
    ("small, 1024-d pre-logits, TF padding", ModelConfig("small", "prelogits"), (0.645, 0.865)),
    ("large-minimalistic, TF padding", ModelConfig("large_minimalistic", "pooled"), (0.595, 0.814)),
    ("large-minimalistic, symmetric padding", ModelConfig("large_minimalistic", "pooled", tf_padding=False), None),
]


@dataclass(frozen=True)
class Split:
    paths: list[Path]
    labels: np.ndarray  # product ids


def read_splits(data_dir: Path) -> tuple[Split, Split]:
    """(query photos, gallery shop photos) of a dataset, by its own query split or a seeded one."""
    from snapmatch.training.data import load_dataset
    from snapmatch.training.splits import holdout_split

    dataset = load_dataset(data_dir)
    _training, catalog, queries = holdout_split(dataset, holdout=0).parts(dataset)
    shop = [photo for photo in catalog if not photo.catalog]
    return (Split([p.path for p in queries], np.array([p.product for p in queries])),
            Split([p.path for p in shop], np.array([p.product for p in shop])))


@torch.no_grad()
def embed(models: list[EmbeddingNet], paths: list[Path], batch_size: int = 32) -> list[np.ndarray]:
    """Embeddings of `paths` by each model, decoding and resizing each batch once."""
    outputs: list[list[np.ndarray]] = [[] for _ in models]
    for start in range(0, len(paths), batch_size):
        batch = torch.from_numpy(np.stack([preprocess(p, SPEC) for p in paths[start:start + batch_size]]))
        for model, out in zip(models, outputs):
            out.append(model(batch).numpy())
    return [np.concatenate(out) for out in outputs]


def recall_at_k(queries: np.ndarray, q_labels: np.ndarray, gallery: np.ndarray, g_labels: np.ndarray,
                ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Share of queries with a same-label gallery item among their k nearest (cosine) neighbours."""
    order = np.argsort(-(queries @ gallery.T), axis=1)[:, :max(ks)]
    hits = g_labels[order] == q_labels[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


@torch.no_grad()
def time_forward(model: EmbeddingNet, repeats: int = 50, warmup: int = 10) -> tuple[float, float, float]:
    """Minimum, median and p95 milliseconds of one 224x224 image through `model`.

    On a shared machine the minimum is the steadiest of the three.
    """
    image = torch.randint(0, 256, (1, 224, 224, 3), dtype=torch.uint8)
    for _ in range(warmup):
        model(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(image)
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times), float(np.percentile(times, 95))


def time_onnx(model: EmbeddingNet, repeats: int = 50, warmup: int = 10) -> tuple[float, float, float]:
    """time_forward's numbers for `model` exported to ONNX and run by ONNX Runtime on one thread."""
    import tempfile
    import warnings

    import onnxruntime as ort

    image = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        path = f"{tmp}/model.onnx"
        torch.onnx.export(model, (torch.from_numpy(image),), path, input_names=["images"], opset_version=17,
                          dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        session.run(None, {"images": image})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"images": image})
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times), float(np.percentile(times, 95))


def check_recall(models: list[EmbeddingNet], data_dir: Path) -> None:
    """Print each variant's Recall@1/5 of val photos against train photos beside the README's."""
    val, train = read_splits(data_dir)
    start = time.perf_counter()
    val_emb, train_emb = embed(models, val.paths), embed(models, train.paths)
    print(f"embedded {len(val.paths)} val + {len(train.paths)} train photos with {len(models)} models "
          f"in {time.perf_counter() - start:.0f} s\n")

    print(f"{'features':40s} {'dim':>5s} {'R@1':>6s} {'R@5':>6s}   README R@1 / R@5")
    for (name, _, readme), model, q, g in zip(VARIANTS, models, val_emb, train_emb):
        r = recall_at_k(q, val.labels, g, train.labels)
        ref = f"{readme[0]:.3f} / {readme[1]:.3f}" if readme else "-"
        print(f"{name:40s} {model.embedding_dim:5d} {r[1]:6.3f} {r[5]:6.3f}   {ref}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("SNAPMATCH_DATA"))
    parser.add_argument("--weights", type=Path, default=os.environ.get("SNAPMATCH_WEIGHTS"))
    parser.add_argument("--threads", type=int, default=1, help="threads for embedding (latency always uses 1)")
    parser.add_argument("--latency-only", action="store_true", help="skip the retrieval check")
    args = parser.parse_args()
    if args.weights is None or (args.data is None and not args.latency_only):
        parser.error("give --data and --weights (or set SNAPMATCH_DATA and SNAPMATCH_WEIGHTS)")
    torch.set_num_threads(args.threads)

    models = [build_model(cfg, args.weights / WEIGHT_FILES[cfg.backbone]) for _, cfg, _ in VARIANTS]
    if not args.latency_only:
        check_recall(models, args.data)

    torch.set_num_threads(1)
    print("forward latency in ms, 1 image 224x224, 1 thread (uint8 in, unit vector out): min / median / p95")
    for (name, cfg, _), model in zip(VARIANTS, models):
        if cfg.head == "pooled":
            eager, onnx = time_forward(model), time_onnx(model)
            print(f"  {name:40s} PyTorch eager {eager[0]:6.2f} {eager[1]:6.2f} {eager[2]:6.2f}"
                  f"   ONNX Runtime {onnx[0]:6.2f} {onnx[1]:6.2f} {onnx[2]:6.2f}")


if __name__ == "__main__":
    main()
