"""The HTTP API against a real server process: answers equal the SDK's, product changes, health, metrics."""

from __future__ import annotations

import signal

import pytest

from snapmatch import ProductSearch
from tests.model_factory import product_image
from tests.serve.conftest import make_catalog, pid
from tests.serve.server import Server, auth, jpeg


def _sdk_answers(catalog, photos):
    with ProductSearch.open(catalog, readonly=True) as search:
        return [[m.to_dict() for m in search.search(photo, k=3)] for photo in photos], \
            [search.identification(photo).to_dict() for photo in photos], search.rule


def test_search_and_identify_answer_as_the_sdk_does(server, catalog):
    photos = [jpeg(product_image(product, variant=1)) for product in range(4)] + [jpeg(product_image(9))]
    searches, identifications, rule = _sdk_answers(catalog, photos)
    batch = server.client.post("/v1/search", params={"k": 3},
                               files=[("image", (f"{i}.jpg", photo, "image/jpeg")) for i, photo in enumerate(photos)])
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["k"] == 3
    assert [row["image"] for row in body["results"]] == [f"{i}.jpg" for i in range(5)]
    assert [row["matches"] for row in body["results"]] == searches
    assert all(row["error"] is None and row["ms"] > 0 for row in body["results"])

    for photo, expected in zip(photos, identifications):  # one image as the raw body
        answer = server.client.post("/v1/identify", content=photo, headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["threshold"] == rule.threshold and answer.json()["rule"] == rule.describe()
        (row,) = answer.json()["results"]
        assert {key: row[key] for key in ("product", "best", "rule_value")} == expected
    assert identifications[0]["product"]["product_id"] == pid(0)
    assert identifications[-1]["product"] is None  # product 9 is not in the catalog


def test_a_batch_answers_the_readable_images_and_names_the_unreadable_one(server):
    response = server.client.post("/v1/identify", files=[
        ("image", ("good.jpg", jpeg(product_image(1)), "image/jpeg")),
        ("image", ("notes.txt", b"not an image", "text/plain"))])
    assert response.status_code == 200
    good, bad = response.json()["results"]
    assert good["product"]["product_id"] == pid(1) and good["error"] is None
    assert bad["product"] is None and "notes.txt" in bad["error"]


def test_product_changes_change_what_search_finds(server):
    new = jpeg(product_image(7))
    top = lambda: server.client.post("/v1/search", params={"k": 1}, content=new).json()["results"][0]["matches"][0]
    assert top()["product_id"] != "new/7"

    created = server.client.put("/v1/products/new/7", headers=auth(),
                                files=[("image", ("a.jpg", new, "image/jpeg"))], data={"name": "Seven"})
    assert created.status_code == 201, created.text
    assert created.json()["product"] == {"id": "new/7", "name": "Seven", "image_count": 1}
    assert top()["product_id"] == "new/7"  # an id with a slash is an id, not a path
    assert server.client.get("/v1/products/new/7").json() == {"id": "new/7", "name": "Seven", "image_count": 1}
    assert "new/7" in [p["id"] for p in server.client.get("/v1/products").json()["products"]]

    more = server.client.post("/v1/products/new/7/images", headers=auth(), content=jpeg(product_image(7, variant=2)))
    assert more.status_code == 200 and more.json()["product"]["image_count"] == 2
    assert server.client.post("/v1/compact", headers=auth()).status_code == 200
    assert server.client.get("/v1/catalog").json()["products"] == 6

    deleted = server.client.delete("/v1/products/new/7", headers=auth())
    assert deleted.json() == {"product_id": "new/7", "removed_images": 2}
    assert top()["product_id"] != "new/7"
    assert server.client.get("/v1/products/new/7").status_code == 404


def test_catalog_info_health_readiness_metrics_and_openapi(server):
    info = server.client.get("/v1/catalog").json()
    assert info["catalog"] == "catalog" and info["writes"] is True and info["limits"]["max_images"] == 16
    assert server.client.get("/healthz").json() == {"status": "ok"}
    ready = server.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    server.client.post("/v1/identify", content=jpeg(product_image(0)))
    metrics = server.client.get("/metrics").text
    assert 'snapmatch_http_requests_total{endpoint="/v1/identify",method="POST",status="200"}' in metrics
    assert 'snapmatch_http_request_seconds_bucket{endpoint="/v1/identify"' in metrics
    assert "snapmatch_lookup_queue_depth 0.0" in metrics
    schema = server.client.get("/openapi.json").json()
    assert {"/v1/identify", "/v1/search", "/v1/products", "/v1/products/{product_id}", "/v1/compact",
            "/v1/catalog", "/healthz", "/readyz"} <= set(schema["paths"])


def test_writes_need_the_token_and_reads_may(tmp_path, model_path):
    catalog = make_catalog(tmp_path / "catalog", model_path)  # its own: the module's server holds the writer lock
    photo = jpeg(product_image(8))
    server = Server(catalog, tmp_path / "log", token=None)  # no token configured: no writes at all
    try:
        refused = server.client.put("/v1/products/x", content=photo, headers=auth())
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "WritesDisabled"
        assert server.client.get("/v1/catalog").json()["writes"] is False
        assert server.client.post("/v1/identify", content=photo).status_code == 200
    finally:
        server.stop()

    token_file = tmp_path / "token"
    token_file.write_text("a-file-token-abcdefghijklmnop\n")
    server = Server(catalog, tmp_path / "log2", "--token-file", str(token_file), "--auth-reads", token=None)
    try:
        assert server.client.post("/v1/identify", content=photo).status_code == 401
        missing = server.client.delete("/v1/products/x")
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        assert server.client.delete("/v1/products/x", headers=auth("wrong-token")).status_code == 403
        good = auth("a-file-token-abcdefghijklmnop")
        assert server.client.post("/v1/identify", content=photo, headers=good).status_code == 200
        assert server.client.put("/v1/products/x", content=photo, headers=good).status_code == 201
        assert server.client.delete("/v1/products/x", headers=good).status_code == 200
        assert server.client.get("/healthz").status_code == 200  # probes never need the token
    finally:
        server.stop()


def test_sigterm_closes_the_catalog_and_kill_9_does_not(tmp_path, model_path):
    catalog = make_catalog(tmp_path / "catalog", model_path)
    for sig, closed in ((signal.SIGKILL, False), (signal.SIGTERM, True)):
        server = Server(catalog, tmp_path / "log")
        put = server.client.put(f"/v1/products/by-{sig.name}", content=jpeg(product_image(6)), headers=auth())
        assert put.status_code == 201
        server.stop(sig)
        # SQLite removes the WAL when its last connection closes: only a closed catalog has none.
        assert (catalog / "catalog.sqlite-wal").exists() is not closed, sig.name
    with ProductSearch.open(catalog) as search:  # the lock is free and both writes are there
        assert {"by-SIGKILL", "by-SIGTERM"} <= {p.id for p in search.products()}


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "70000"),
    (["--max-queue", "0"], "max-queue"),
])
def test_bad_options_are_usage_errors(catalog, args, message):
    from click.testing import CliRunner

    from snapmatch.cli import cli

    result = CliRunner().invoke(cli, ["serve", str(catalog), *args])
    assert result.exit_code == 2 and message in result.output
