"""A catalog of the test model's products 0-4 (one photo each) and a real server over it."""

from __future__ import annotations

import pytest

from snapmatch import ProductSearch
from tests.model_factory import product_image
from tests.serve.server import Server

KNOWN = range(5)


def pid(product: int) -> str:
    return f"product-{product}"


def make_catalog(folder, model_path):
    with ProductSearch.create(folder, model=model_path) as search:
        for product in KNOWN:
            search.add_product(pid(product), [product_image(product)], name=f"Product {product}")
    return folder


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, model_path):
    return make_catalog(tmp_path_factory.mktemp("serve") / "catalog", model_path)


@pytest.fixture(scope="module")
def server(catalog, tmp_path_factory):
    running = Server(catalog, tmp_path_factory.mktemp("logs") / "server.log")
    yield running
    running.stop()
