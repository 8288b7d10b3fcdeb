"""Under load: no errors below the queue limit, 503 with Retry-After (never a timeout or a crash) above it,
and SIGTERM answers the requests in flight before the server exits."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.model_factory import product_image
from tests.serve.conftest import make_catalog, pid
from tests.serve.server import Server, jpeg

PHOTOS = [jpeg(product_image(product, variant=1)) for product in range(5)]


def test_concurrent_clients_below_the_queue_limit_all_get_answers(server):
    from snapmatch.benchmarks.serve import load

    report = load(server, PHOTOS, clients=16, requests=160)
    assert report["statuses"] == {"200": 160} and report["errors"] == 0
    metrics = server.client.get("/metrics").text
    assert "snapmatch_lookup_queue_depth 0.0" in metrics
    # concurrent requests shared model calls: fewer calls than images
    calls = float(next(line.split()[1] for line in metrics.splitlines()
                       if line.startswith("snapmatch_model_batch_images_count")))
    assert calls < 160


def _slow(photo: bytes, parts: int = 5, pause_s: float = 0.15):
    """The photo as a body that takes parts x pause_s to arrive: a request that stays in flight that long."""
    step = -(-len(photo) // parts)
    for start in range(0, len(photo), step):
        time.sleep(pause_s)
        yield photo[start:start + step]


def _post_in_threads(url: str, bodies: list) -> tuple[list[threading.Thread], list[httpx.Response]]:
    answers: list[httpx.Response] = []

    def client(body) -> None:
        with httpx.Client(base_url=url, timeout=30) as own:
            answers.append(own.post("/v1/identify", content=body))

    threads = [threading.Thread(target=client, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    return threads, answers


def test_past_the_queue_limit_requests_get_503_with_retry_after(tmp_path, model_path):
    catalog = make_catalog(tmp_path / "catalog", model_path)
    server = Server(catalog, tmp_path / "log", "--max-queue", "2")
    try:
        # Two slow uploads hold both places in the queue while ten more requests come.
        slow, held = _post_in_threads(server.url, [_slow(PHOTOS[0]), _slow(PHOTOS[1])])
        time.sleep(0.3)
        quick, refused = _post_in_threads(server.url, PHOTOS * 2)
        for thread in slow + quick:
            thread.join()
        assert [response.status_code for response in held] == [200, 200]
        assert [response.status_code for response in refused] == [503] * 10
        assert all(response.headers["Retry-After"] == "1" and response.json()["error"]["type"] == "Overloaded"
                   for response in refused)
        answer = server.client.post("/v1/identify", content=PHOTOS[3])
        assert answer.json()["results"][0]["product"]["product_id"] == pid(3)
        metrics = server.client.get("/metrics").text
        rejected = next(line for line in metrics.splitlines() if line.startswith("snapmatch_rejected_requests_total"))
        assert float(rejected.split()[-1]) == 10
    finally:
        server.stop()


def test_sigterm_answers_requests_in_flight_then_exits(tmp_path, model_path):
    catalog = make_catalog(tmp_path / "catalog", model_path)
    server = Server(catalog, tmp_path / "log")
    threads, answers = _post_in_threads(server.url, [_slow(photo) for photo in PHOTOS[:3]])
    time.sleep(0.3)  # the uploads are under way
    code = server.stop(signal.SIGTERM)
    for thread in threads:
        thread.join()
    assert [response.status_code for response in answers] == [200, 200, 200]
    assert code in (0, -signal.SIGTERM)
    try:
        httpx.get(server.url + "/healthz", timeout=2)
        raise AssertionError("the server still answers after SIGTERM")
    except httpx.TransportError:
        pass


def test_writes_past_the_limit_get_503_too(tmp_path, model_path):
    from tests.serve.server import auth

    catalog = make_catalog(tmp_path / "catalog", model_path)
    server = Server(catalog, tmp_path / "log", "--max-queue", "1")
    try:
        answers: list[httpx.Response] = []

        def slow_put() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as own:
                answers.append(own.put("/v1/products/slow", content=_slow(PHOTOS[0]), headers=auth()))

        thread = threading.Thread(target=slow_put)
        thread.start()
        time.sleep(0.3)
        refused = server.client.put("/v1/products/quick", content=PHOTOS[1], headers=auth())
        thread.join()
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert answers[0].status_code == 201
        assert server.client.put("/v1/products/quick", content=PHOTOS[1], headers=auth()).status_code == 201
    finally:
        server.stop()
