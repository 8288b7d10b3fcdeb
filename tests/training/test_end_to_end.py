"""Train -> export -> quantize -> runtime, end to end on a few real products, plus the losses on easy data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from snapmatch.training.losses import LOSSES, build_criterion
from snapmatch.training.model import ModelConfig, build_model

from tests.dev_data import GROCERY as DATA, HAS_GROCERY, SMALL_WEIGHTS as WEIGHTS

needs_data = pytest.mark.skipif(not HAS_GROCERY, reason="needs the Grocery dataset ($SNAPMATCH_DATA)")


def separable_batch(rng: np.random.Generator, classes: int = 4, per_class: int = 4, size: int = 32):
    """Flat-colour images, one colour per class, with noise: trivially separable."""
    colours = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30]])[:classes]
    labels = np.repeat(np.arange(classes), per_class)
    images = colours[labels][:, None, None, :] + rng.normal(0, 25, (len(labels), size, size, 3))
    return torch.from_numpy(np.clip(images, 0, 255).astype(np.uint8)), torch.from_numpy(labels)


def test_the_cli_offers_every_loss():
    """`snapmatch train --loss` lists the names by hand (the CLI must load without torch): they must stay LOSSES."""
    from snapmatch.commands.train import train

    (option,) = [p for p in train.params if p.name == "loss"]
    assert tuple(option.type.choices) == LOSSES


@pytest.mark.parametrize("loss_name", LOSSES)
def test_each_loss_decreases_on_an_easy_separable_set(loss_name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(head="linear", dim=32, freeze_bn=False))  # random backbone: the loss does the work
    criterion = build_criterion(loss_name, num_classes=4, dim=32)
    optimiser = torch.optim.AdamW(list(model.parameters()) + criterion.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    model.train()
    losses = []
    for _ in range(25):
        images, labels = separable_batch(rng)
        loss = criterion(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def grocery_subset(root: Path, products: int = 4) -> Path:
    """A list file of the Grocery photos of its first `products` products (train + val + iconic), as a user lists."""
    from snapmatch.training.data import load_dataset

    dataset = load_dataset(DATA)
    chosen = set(dataset.products[::9][:products])
    lines = [f"{photo.path}, {photo.product}" for photo in dataset.photos if photo.product in chosen and not photo.catalog]
    listing = root / "photos.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


@needs_data
@pytest.mark.slow
def test_train_export_quantize_and_search_through_the_runtime(tmp_path):
    from click.testing import CliRunner

    from snapmatch.cli import cli
    from snapmatch.sdk.model.embedder import Embedder
    from snapmatch.sdk.product_search import ProductSearch
    from snapmatch.training.data import load_dataset

    photos = grocery_subset(tmp_path)
    run = tmp_path / "run"
    runner = CliRunner()
    args = ["train", str(photos), "--out", str(run), "--pretrained", str(WEIGHTS), "--epochs", "1", "--holdout", "0",
            "--image-size", "64", "--batch-size", "16", "--threads", "1", "--no-evaluate"]
    trained = runner.invoke(cli, args, catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1] and np.isfinite(log[0]["loss"])

    # --resume of a finished run trains nothing more and keeps the checkpoint usable.
    resumed = runner.invoke(cli, args + ["--resume"], catch_exceptions=False)
    assert resumed.exit_code == 0 and len((run / "log.jsonl").read_text().splitlines()) == 1

    exported = runner.invoke(cli, ["export", str(run / "last.pt"), "--int8", "--calibration-photos", "16",
                                   "--threshold-precision", "0.5", "--force-int8", "--json"], catch_exceptions=False)
    payload = json.loads(exported.stdout)
    # A one-epoch 64 px network may fail the int8 gate: then it says why (exit 3), and --force-int8 wrote it.
    assert exported.exit_code == (3 if payload["int8_refused"] else 0), exported.output
    assert payload["parity"]["int8_gate"]["passed"] == (not payload["int8_refused"])
    fp32, int8 = Embedder(payload["fp32"], threads=1), Embedder(payload["int8"], threads=1)
    assert (fp32.spec.quantization, int8.spec.quantization) == ("fp32", "int8")
    assert fp32.spec.input.height == 64 and fp32.spec.data_fingerprint.startswith("list-")
    assert fp32.model_id != int8.model_id
    assert fp32.spec.training_split == int8.spec.training_split and fp32.spec.training_split["unseen"] == []
    parity = payload["parity"]
    # The parity gate compared the two models on the same photos: int8 embeds them close to fp32.
    assert parity["cosine_mean"] > 0.85, parity
    assert abs(parity["fp32"]["recall_at_1"] - parity["int8"]["recall_at_1"]) <= 0.15

    # The PyTorch network and its ONNX export agree on real photos.
    from snapmatch.training.model import ModelConfig as Config, build_model as build

    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    net = build(Config.from_dict(state["model_config"]))
    net.load_state_dict(state["model"])
    net.eval()
    dataset = load_dataset(photos)
    sample = [p.path for p in dataset.photos[::10][:6]]
    batch = np.stack([fp32.preprocess(p) for p in sample])
    with torch.no_grad():
        reference = net(torch.from_numpy(batch)).numpy()
    cosine = (reference * fp32.embed(sample)).sum(axis=1)
    assert cosine.min() >= 0.999

    # The runtime uses the exported model: a catalog of the 4 products answers their photos.
    with ProductSearch.create(tmp_path / "catalog", model=payload["int8"]) as search:
        by_product: dict[str, list[Path]] = {}
        for photo in dataset.photos:
            by_product.setdefault(photo.product, []).append(photo.path)
        for product, paths in by_product.items():
            search.add_product(product, paths[:5])
        queries = [(product, path) for product, paths in by_product.items() for path in paths[10:15]]
        top = [search.search(path, k=1)[0].product_id for _, path in queries]
        assert np.mean([t == product for t, (product, _) in zip(top, queries)]) >= 0.5
