"""Shared fixtures: real ONNX models (built with onnx.helper) and synthetic product photos."""

from __future__ import annotations

import os
from pathlib import Path

# torch's default of one thread per core oversubscribes a busy 2-core CI box
# (measured: 4x the wall time of one thread); set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np
import pytest

from tests.model_factory import build_model, product_image


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def model_path(model_dir) -> Path:
    """A working snapmatch model: 32x32 input, 64-d output."""
    return build_model(model_dir / "model.onnx")


@pytest.fixture(scope="session")
def other_model_path(model_dir) -> Path:
    """A second working model with a different id (and weights)."""
    return build_model(model_dir / "other.onnx", seed=1)


@pytest.fixture()
def photo_dir(tmp_path) -> Path:
    """JPEG photos on disk: products 0-4, three photos each, in product_N/ sub-folders."""
    root = tmp_path / "photos"
    for product in range(5):
        folder = root / f"product_{product}"
        folder.mkdir(parents=True)
        for variant in range(3):
            cv2.imwrite(str(folder / f"{variant}.jpg"), product_image(product, variant=variant))
    return root


@pytest.fixture()
def image_of():
    """product_image(product, variant=...) as a fixture."""
    return product_image


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


_DATA_WORDS = ("grocery", "weights", "SNAPMATCH_DATA", "SNAPMATCH_WEIGHTS")


def pytest_terminal_summary(terminalreporter):
    """Say, once, why tests skipped for want of the development data, and how to run them."""
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if isinstance(report.longrepr, tuple) and any(word in str(report.longrepr[2]) for word in _DATA_WORDS)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) skipped for want of the development data: set SNAPMATCH_DATA to the Grocery "
            "Store Dataset folder and SNAPMATCH_WEIGHTS to the ImageNet MobileNetV3 weights folder "
            "(README, 'Tests'), or keep them in ../shared beside the clone", yellow=True)
