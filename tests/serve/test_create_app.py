"""create_app as a library: an app mounted by someone else's code, over a ProductSearch it keeps."""

from __future__ import annotations

import anyio
import httpx

from snapmatch import ProductSearch
from snapmatch.serve import Limits, create_app
from tests.model_factory import product_image
from tests.serve.conftest import make_catalog, pid
from tests.serve.server import TOKEN, auth, jpeg


def test_an_app_over_an_open_product_search_answers_and_leaves_it_open(tmp_path, model_path):
    search = ProductSearch.open(make_catalog(tmp_path / "catalog", model_path))
    app = create_app(search, token=TOKEN, limits=Limits(max_images=2))

    async def talk() -> tuple[httpx.Response, ...]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return (await client.post("/v1/identify", content=jpeg(product_image(4))),
                    await client.put("/v1/products/mounted", content=jpeg(product_image(8)), headers=auth()),
                    await client.get("/v1/catalog"))

    identified, created, info = anyio.run(talk)
    assert identified.json()["results"][0]["product"]["product_id"] == pid(4)
    assert created.status_code == 201
    assert info.json()["limits"]["max_images"] == 2 and info.json()["products"] == 6
    assert search.identify(product_image(8)).product_id == "mounted"  # the caller's object saw the write
    search.close()
