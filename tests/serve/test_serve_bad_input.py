"""Every bad request gets its 4xx and a JSON error naming the problem, and the server keeps answering."""

from __future__ import annotations

import select
import socket
import struct
import zlib

import httpx

import pytest

from snapmatch.sdk import errors as sdk_errors
from snapmatch.serve.errors import STATUS
from tests.model_factory import product_image
from tests.serve.conftest import pid
from tests.serve.server import auth, jpeg

PHOTO = jpeg(product_image(2))


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def _chunks(total: int, size: int = 1 << 20):
    for _ in range(0, total, size):
        yield b"\0" * size


BAD = {
    "no body": (dict(method="POST", url="/v1/identify"), 400, "NoImage"),
    "not an image": (dict(method="POST", url="/v1/identify", content=b"hello, world"), 422, "InvalidImageError"),
    "truncated": (dict(method="POST", url="/v1/identify", content=PHOTO[:len(PHOTO) // 2]), 422, "InvalidImageError"),
    "decompression bomb": (dict(method="POST", url="/v1/identify", content=_png_header(60000, 60000)), 413,
                           "ImageTooLargeError"),
    "declared over the limit": (dict(method="POST", url="/v1/identify", content=b"\0" * 3_000_001), 413,
                                "PayloadTooLarge"),
    # chunked: no Content-Length, so the limit is found while the body streams in
    "streamed over the limit": (dict(method="POST", url="/v1/identify", content=_chunks(50_000_000)), 413,
                                "PayloadTooLarge"),
    "too many images": (dict(method="POST", url="/v1/identify",
                             files=[("image", (f"{i}.jpg", PHOTO, "image/jpeg")) for i in range(5)]), 413,
                        "TooManyImages"),
    "malformed multipart": (dict(method="POST", url="/v1/search", content=b"--x\r\nno headers",
                                 headers={"Content-Type": "multipart/form-data; boundary=zzz"}), 400,
                            "MalformedMultipart"),
    "multipart without boundary": (dict(method="POST", url="/v1/search", content=b"x",
                                        headers={"Content-Type": "multipart/form-data"}), 400, "MalformedMultipart"),
    "multipart cut before its closing boundary": (dict(method="POST", url="/v1/identify", content=(
        b"--zzz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
        b"Content-Type: image/jpeg\r\n\r\n" + PHOTO), headers={"Content-Type": "multipart/form-data; boundary=zzz"}),
        400, "MalformedMultipart"),
    "multipart without files": (dict(method="POST", url="/v1/identify", files={"name": (None, "x")}), 400, "NoImage"),
    "k of 0": (dict(method="POST", url="/v1/search?k=0", content=PHOTO), 422, "InvalidParameter"),
    "k not a number": (dict(method="POST", url="/v1/search?k=many", content=PHOTO), 422, "InvalidParameter"),
    "unknown product": (dict(method="GET", url="/v1/products/nope"), 404, "ProductNotFoundError"),
    "delete unknown product": (dict(method="DELETE", url="/v1/products/nope", headers=auth()), 404,
                               "ProductNotFoundError"),
    "photos for unknown product": (dict(method="POST", url="/v1/products/nope/images", content=PHOTO,
                                        headers=auth()), 404, "ProductNotFoundError"),
    "duplicate product": (dict(method="PUT", url=f"/v1/products/{pid(0)}", content=PHOTO, headers=auth()), 409,
                          "ProductExistsError"),
    "blank product id": (dict(method="PUT", url="/v1/products/%20", content=PHOTO, headers=auth()), 400,
                         "InvalidArgumentError"),
    "product id too long": (dict(method="PUT", url="/v1/products/" + "x" * 300, content=PHOTO, headers=auth()), 400,
                            "InvalidArgumentError"),
    "product from a non-image": (dict(method="PUT", url="/v1/products/fresh", content=b"GIF89a...",
                                      headers=auth()), 422, "InvalidImageError"),
    "missing token": (dict(method="PUT", url="/v1/products/fresh", content=PHOTO), 401, "Unauthorized"),
    "wrong token": (dict(method="DELETE", url=f"/v1/products/{pid(0)}", headers=auth("not-the-token-at-all")),
                    403, "Forbidden"),
    "not a bearer token": (dict(method="DELETE", url=f"/v1/products/{pid(0)}", headers={"Authorization": "Basic eA=="}),
                           401, "Unauthorized"),
    "unknown route": (dict(method="GET", url="/v1/nothing"), 404, "NotFound"),
    "wrong method": (dict(method="GET", url="/v1/identify"), 405, "MethodNotAllowed"),
}


@pytest.fixture(scope="module")
def strict_server(catalog, tmp_path_factory):
    from tests.serve.server import Server

    running = Server(catalog, tmp_path_factory.mktemp("logs") / "server.log", "--max-body-mb", "3",
                     "--max-images", "4")
    yield running
    running.stop()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_request_gets_its_status_and_a_json_error(strict_server, case):
    request, status, kind = BAD[case]
    response = strict_server.client.request(**request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["type"] == kind and error["message"]
    # ... and the server still answers
    follow = strict_server.client.post("/v1/identify", content=PHOTO)
    assert follow.status_code == 200 and follow.json()["results"][0]["product"]["product_id"] == pid(2)


def test_an_upload_over_the_limit_is_answered_before_it_is_all_sent(strict_server):
    """A raw chunked upload of up to 50 MB, sent 256 KB at a time: the 413 comes while most is still unsent."""
    url = httpx.URL(strict_server.url)
    chunk = b"\0" * (256 * 1024)
    sent = 0
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        while sent < 50_000_000 and not select.select([sock], [], [], 0.01)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server closed the connection after answering
                break
            sent += len(chunk)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert sent < 20_000_000, f"{sent:,} bytes went out before the answer (the limit is 3 MB)"


def test_nothing_bad_input_did_reached_the_catalog(strict_server):
    ids = {p["id"] for p in strict_server.client.get("/v1/products").json()["products"]}
    assert ids == {pid(product) for product in range(5)}


def test_every_snapmatch_error_has_its_own_status():
    classes = {obj for obj in vars(sdk_errors).values()
               if isinstance(obj, type) and issubclass(obj, sdk_errors.SnapmatchError)}
    assert classes == set(STATUS)
    assert all(400 <= status < 600 for status in STATUS.values())
