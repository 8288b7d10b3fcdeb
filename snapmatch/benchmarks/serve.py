"""How `snapmatch serve` holds up: throughput and latency of /v1/identify under concurrent clients, micro-batching
on and off in the same run, and what survives kill -9 in the middle of writes.

Everything runs on this machine over loopback: a real server process
(`snapmatch serve`, started as a user starts it) and client threads with
keep-alive HTTP connections (the standard library's http.client, so this runs
from a plain `snapmatch[serve]` install). Clients share the CPU with the
server, equally in both modes, so compare the two modes, not single times.

    snapmatch benchmark serve --clients 1,8,32 --requests 300 --kills 20
    python -m snapmatch.benchmarks.serve
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from snapmatch.benchmarks.cpu_info import describe, usable_cores
from snapmatch.sdk.image.preprocess import cv2

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
START_TIMEOUT_S = 120
TOKEN = "benchmark-token-" + "0123456789abcdef"


class ServerProcess:
    """`snapmatch serve CATALOG --port 0 ARGS` in a child process, its output in `log`; .url once it listens."""

    def __init__(self, catalog: Path, log: Path, *args: str, token: str | None = None) -> None:
        env = {key: value for key, value in os.environ.items() if key != "SNAPMATCH_TOKEN"}
        if token is not None:
            env["SNAPMATCH_TOKEN"] = token
        self.log = log
        self._log_file = open(log, "ab")
        start = self._log_file.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "snapmatch", "serve", str(catalog), "--port", "0", "--log-level", "warning",
             *args], stdout=self._log_file, stderr=self._log_file, env=env)
        self.url = self._wait_listening(start)
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def _wait_listening(self, start: int) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = re.search(rb"listening on (http://[^\s;]+)", self.log.read_bytes()[start:])
            if found:
                return found.group(1).decode()
            if self.process.poll() is not None:
                raise RuntimeError(f"snapmatch serve exited ({self.process.returncode}): "
                                   f"{self.log.read_bytes()[start:].decode(errors='replace')}")
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"snapmatch serve did not start within {START_TIMEOUT_S} s")

    def connection(self, timeout: float = 60.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGKILL: a crash) and wait for the process; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log_file.close()


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


# --- throughput and latency -----------------------------------------------------------------------

def load(server: ServerProcess, photos: list[bytes], *, clients: int, requests: int,
         path: str = "/v1/identify") -> dict:
    """`requests` POSTs of the photos (in turn) from `clients` threads at once: req/s, latency, status counts."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []

    def client() -> None:
        conn = server.connection()
        try:
            while (n := next(counter)) < requests:
                start = time.perf_counter()
                try:
                    status, _ = request(conn, "POST", path, photos[n % len(photos)], {"Content-Type": "image/jpeg"})
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        errors.append(type(exc).__name__)
                    conn.close()
                    conn = server.connection()
                    continue
                took = time.perf_counter() - start
                with lock:
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if status == 200:
                        latencies.append(took)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    ms = np.array(latencies) * 1000.0 if latencies else np.array([np.nan])
    return {"clients": clients, "requests": requests, "statuses": statuses, "errors": len(errors),
            "seconds": round(seconds, 3), "requests_per_s": round(statuses.get("200", 0) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


# --- kill -9 during writes ---------------------------------------------------------------------------

def synthetic_photo(n: int, size: int = 128) -> bytes:
    """A JPEG unlike every other n's: blocks of colour drawn from n's own seed."""
    rng = np.random.default_rng(10_000 + n)
    blocks = rng.integers(0, 256, size=(8, 8, 3)).astype(np.uint8)
    image = cv2.resize(blocks, (size, size), interpolation=cv2.INTER_NEAREST)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def crash_writes(catalog: Path, workdir: Path, *, kills: int, writers: int = 4, seed: int = 0,
                 run_s: tuple[float, float] = (0.3, 1.5)) -> dict:
    """Start the server, let `writers` clients PUT new products, kill -9 it after a random time; `kills` times.

    Then start it once more and check every product whose PUT was answered 2xx:
    it must be listed and be the top match for its own photo. A PUT cut off
    by the kill may or may not have landed (its client never heard): those are
    counted, not required.
    """
    rng = random.Random(seed)
    counter = itertools.count()
    acknowledged: list[int] = []
    unanswered = 0
    lock = threading.Lock()
    log = workdir / "crash-server.log"

    for _ in range(kills):
        server = ServerProcess(catalog, log, "--threads", "1", token=TOKEN)
        stop = threading.Event()

        def writer(server: ServerProcess = server, stop: threading.Event = stop) -> None:
            nonlocal unanswered
            conn = server.connection(timeout=30)
            try:
                while not stop.is_set():
                    n = next(counter)
                    try:
                        status, _ = request(conn, "PUT", f"/v1/products/crash-{n}", synthetic_photo(n),
                                            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"})
                    except (OSError, http.client.HTTPException):
                        with lock:
                            unanswered += 1
                        return  # the server is gone
                    if 200 <= status < 300:
                        with lock:
                            acknowledged.append(n)
            finally:
                conn.close()

        threads = [threading.Thread(target=writer) for _ in range(writers)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(*run_s))
        server.stop(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join()

    server = ServerProcess(catalog, log, "--threads", "1", token=TOKEN)
    lost = []
    try:
        conn = server.connection()
        status, body = request(conn, "GET", "/v1/products")
        listed = {product["id"] for product in json.loads(body)["products"]}
        for n in acknowledged:
            status, body = request(conn, "POST", "/v1/search?k=1", synthetic_photo(n), {"Content-Type": "image/jpeg"})
            top = json.loads(body)["results"][0]["matches"] if status == 200 else None
            if f"crash-{n}" not in listed or not top or top[0]["product_id"] != f"crash-{n}":
                lost.append(f"crash-{n}")
        conn.close()
    finally:
        server.stop()
    return {"kills": kills, "writers": writers, "acknowledged_writes": len(acknowledged),
            "cut_off_writes": unanswered, "lost": len(lost), "lost_ids": lost[:20],
            "products_after": len(listed)}


# --- the whole benchmark ------------------------------------------------------------------------------

def demo_queries() -> list[bytes]:
    manifest = json.loads((DEMO_DIR / "photos.json").read_text())
    return [(DEMO_DIR / query["photo"]).read_bytes() for query in manifest["queries"]]


def run(*, clients: list[int] = (1, 8, 32), requests: int = 300, kills: int = 20, threads: int = 0,
        max_batch: int = 16, batch_wait_ms: float = 2.0, catalog: Path | None = None) -> dict:
    """Throughput of /v1/identify per client count, batching on then off (one server each), and crash_writes."""
    from snapmatch.benchmarks.watch import build_catalog

    photos = demo_queries()
    with tempfile.TemporaryDirectory(prefix="snapmatch-bench-serve-") as tmp:
        workdir = Path(tmp)
        lookup_catalog = catalog if catalog is not None else build_catalog(workdir / "demo-catalog")
        modes = []
        for name, batch in (("batching on", max_batch), ("batching off", 1)):
            server = ServerProcess(lookup_catalog, workdir / "load-server.log", "--readonly", "--threads",
                                   str(threads), "--max-batch", str(batch), "--batch-wait-ms", str(batch_wait_ms),
                                   "--max-queue", str(max(64, 2 * max(clients))))
            try:
                conn = server.connection()
                for photo in photos:  # warm up: first calls pay for allocations
                    request(conn, "POST", "/v1/identify", photo, {"Content-Type": "image/jpeg"})
                conn.close()
                rows = []
                for count in clients:
                    before = _batch_counts(server)
                    row = load(server, photos, clients=count, requests=requests)
                    after = _batch_counts(server)
                    calls = after[1] - before[1]
                    row["images_per_model_call"] = round((after[0] - before[0]) / calls, 2) if calls else None
                    rows.append(row)
            finally:
                server.stop()
            modes.append({"mode": name, "max_batch": batch, "batch_wait_ms": batch_wait_ms, "runs": rows})
        crash = None
        if kills:
            crash_catalog = build_catalog(workdir / "crash-catalog")
            crash = crash_writes(crash_catalog, workdir, kills=kills)
    return {"cpu": describe(), "usable_cores": usable_cores(), "threads_setting": threads or "all",
            "catalog": str(catalog or "demo"), "photos": len(photos), "modes": modes, "crash": crash}


def _batch_counts(server: ServerProcess) -> tuple[float, float]:
    """(images, model calls) so far, from the server's /metrics."""
    conn = server.connection()
    _, body = request(conn, "GET", "/metrics")
    conn.close()
    text = body.decode()
    found = [re.search(rf"^snapmatch_model_batch_images_{part} ([\d.e+]+)$", text, re.MULTILINE) for part in ("sum", "count")]
    return tuple(float(match.group(1)) if match else 0.0 for match in found)  # type: ignore[return-value]


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
