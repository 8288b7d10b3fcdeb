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


def _held(photo: bytes, release: threading.Event):
    """The photo as a body whose last part is sent only once `release` is set: a request kept in flight."""
    half = len(photo) // 2
    yield photo[:half]
    assert release.wait(30)
    yield photo[half:]


def _slow(photo: bytes, parts: int = 5, pause_s: float = 0.15):
    """The photo as a body that takes parts x pause_s to arrive."""
    step = -(-len(photo) // parts)
    for start in range(0, len(photo), step):
        time.sleep(pause_s)
        yield photo[start:start + step]


def _post_in_threads(url: str, bodies: list, path: str = "/v1/identify", method: str = "POST",
                     headers: dict | None = None) -> tuple[list[threading.Thread], list[httpx.Response]]:
    answers: list[httpx.Response] = []

    def client(body) -> None:
        with httpx.Client(base_url=url, timeout=30) as own:
            answers.append(own.request(method, path, content=body, headers=headers))

    threads = [threading.Thread(target=client, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    return threads, answers


def _wait_for_depth(server: Server, depth: int, metric: str = "snapmatch_lookup_queue_depth") -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if f"{metric} {float(depth)}" in server.client.get("/metrics").text:
            return
        time.sleep(0.02)
    raise AssertionError(f"{metric} never reached {depth}")


def test_past_the_queue_limit_requests_get_503_with_retry_after(tmp_path, model_path):
    catalog = make_catalog(tmp_path / "catalog", model_path)
    server = Server(catalog, tmp_path / "log", "--max-queue", "2")
    try:
        # Two uploads held open take both places in the queue while ten more requests come.
        release = threading.Event()
        held_threads, held = _post_in_threads(server.url, [_held(PHOTOS[0], release), _held(PHOTOS[1], release)])
        _wait_for_depth(server, 2)
        quick, refused = _post_in_threads(server.url, PHOTOS * 2)
        for thread in quick:
            thread.join()
        release.set()
        for thread in held_threads:
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


def test_a_body_that_does_not_arrive_in_time_is_refused_and_frees_its_place(tmp_path, model_path):
    catalog = make_catalog(tmp_path / "catalog", model_path)
    server = Server(catalog, tmp_path / "log", "--max-queue", "1", "--read-timeout", "0.5")
    try:
        stalled = server.client.post("/v1/identify", content=_slow(PHOTOS[0], parts=4, pause_s=0.4))
        assert stalled.status_code == 408 and stalled.json()["error"]["type"] == "RequestTimeout"
        assert server.client.post("/v1/identify", content=PHOTOS[0]).status_code == 200
    finally:
        server.stop()


def test_sigterm_answers_requests_in_flight_then_exits(tmp_path, model_path):
    catalog = make_catalog(tmp_path / "catalog", model_path)
    server = Server(catalog, tmp_path / "log")
    release = threading.Event()
    threads, answers = _post_in_threads(server.url, [_held(photo, release) for photo in PHOTOS[:3]])
    _wait_for_depth(server, 3)  # the three are inside the server
    server.client.close()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the server is shutting down: it waits for them
    release.set()
    code = server.process.wait(timeout=30)
    server.stop()
    for thread in threads:
        thread.join()
    assert [response.status_code for response in answers] == [200, 200, 200]
    assert code in (0, -signal.SIGTERM)
    # SQLite removes the WAL when its last connection closes: the catalog was closed, not abandoned
    # (after kill -9 the WAL stays).
    assert not (catalog / "catalog.sqlite-wal").exists()
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
        release = threading.Event()
        threads, answers = _post_in_threads(server.url, [_held(PHOTOS[0], release)], "/v1/products/slow", "PUT",
                                            auth())
        _wait_for_depth(server, 1, "snapmatch_write_queue_depth")
        refused = server.client.put("/v1/products/quick", content=PHOTOS[1], headers=auth())
        release.set()
        for thread in threads:
            thread.join()
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert answers[0].status_code == 201
        assert server.client.put("/v1/products/quick", content=PHOTOS[1], headers=auth()).status_code == 201
    finally:
        server.stop()


def test_a_request_cancelled_in_the_queue_does_not_fail_the_others_in_its_batch(tmp_path, model_path):
    from concurrent.futures import Future

    from snapmatch import ProductSearch
    from snapmatch.serve.batcher import LookupQueue, _Job
    from snapmatch.serve.metrics import Metrics
    from snapmatch.serve.uploads import Limits
    from tests.model_factory import product_image

    with ProductSearch.open(make_catalog(tmp_path / "catalog", model_path)) as search:
        queue = LookupQueue(search, Limits(), Metrics())
        try:
            jobs = [_Job([search.embedder.preprocess(product_image(p, variant=1))], 1, Future()) for p in range(3)]
            assert jobs[1].future.cancel()  # its client went away while it waited
            queue._run(jobs)
            assert [jobs[i].future.result()[0][0].product_id for i in (0, 2)] == [pid(0), pid(2)]
        finally:
            queue.close()


def test_made_up_http_methods_share_one_metrics_label(server):
    for method in ("XAAA", "XBBB"):
        server.client.request(method, "/v1/identify")
    metrics = server.client.get("/metrics").text
    assert 'method="other"' in metrics and "XAAA" not in metrics
