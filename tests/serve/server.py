"""A real `snapmatch serve` process on a free loopback port, with an httpx client, for the tests."""

from __future__ import annotations

import signal
from pathlib import Path

import cv2
import httpx
import numpy as np

from snapmatch.benchmarks.serve import ServerProcess

TOKEN = "test-token-0123456789abcdef"


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


class Server(ServerProcess):
    """`snapmatch serve CATALOG --port 0 --threads 1 ...`; .client talks to it."""

    def __init__(self, catalog: Path, log: Path, *args: str, token: str | None = TOKEN) -> None:
        super().__init__(catalog, log, "--threads", "1", *args, token=token)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.client.close()
        return super().stop(sig)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
