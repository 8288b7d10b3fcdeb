"""Fixtures shared by the ProductSearch tests: a small catalog of the test model's products."""

from __future__ import annotations

import shutil

import pytest

from snapmatch import ProductSearch
from tests.model_factory import product_image

KNOWN = range(5)  # products in the catalog (variant 0 is their catalog photo)
UNKNOWN = range(5, 10)  # products never added
TOL = 1e-4


def pid(product: int) -> str:
    return f"product-{product}"


@pytest.fixture()
def folder(tmp_path):
    return tmp_path / "my-catalog"


@pytest.fixture(scope="module")
def search_template(tmp_path_factory, model_path):
    """A catalog of products 0-4, one photo each (variant 0), built once; `search` opens a copy."""
    folder = tmp_path_factory.mktemp("template") / "my-catalog"
    with ProductSearch.create(folder, model=model_path) as created:
        for product in KNOWN:
            created.add_product(pid(product), [product_image(product)], name=f"Product {product}")
    return folder


@pytest.fixture()
def search(search_template, folder):
    """A writer over a fresh copy of the template catalog, at `folder`."""
    shutil.copytree(search_template, folder)
    with ProductSearch.open(folder) as opened:
        yield opened


