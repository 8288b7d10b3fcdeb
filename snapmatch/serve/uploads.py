"""Reading the images of a request: a raw body or multipart parts, with size limits checked while it streams in.

A client may claim any Content-Length (or none, with chunked encoding), so the
limit is enforced on the bytes as they arrive: an upload over it is refused
(413) after at most limit + one chunk has been read, never held whole.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import anyio
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from snapmatch.serve.errors import HTTPProblem

MAX_FIELD_BYTES = 64 * 1024  # a text field (a product name) is small


@dataclass(frozen=True)
class Limits:
    """What one request may carry and how much inference work the server queues.

    max_body_bytes: the whole request body. max_images: images in one request.
    max_queue: lookup requests admitted at once (answered or waiting); one
    more gets 503 with Retry-After. max_batch and batch_wait_ms: micro-batching
    of concurrent lookups into one model call (max_batch 1: no batching, each
    request runs its own call). read_timeout_s: a body that takes longer to
    arrive is refused (408), so stalled clients cannot hold the queue.
    """

    max_body_bytes: int = 20_000_000
    max_images: int = 16
    max_queue: int = 64
    max_batch: int = 16
    batch_wait_ms: float = 2.0
    read_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_images", "max_queue", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be 0 or more, not {self.batch_wait_ms}")
        if self.read_timeout_s <= 0:
            raise ValueError(f"read_timeout_s must be above 0, not {self.read_timeout_s}")


@dataclass
class Upload:
    """A request's images, in the order sent, as (name, encoded bytes), and its text fields."""

    images: list[tuple[str, bytes]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def _too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(413, "PayloadTooLarge", f"the request body is over the limit of {limit:,} bytes")


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        yield chunk


async def read_upload(request: Request, limits: Limits) -> Upload:
    """The images of a request: multipart/form-data file parts, else the raw body as one image."""
    try:
        with anyio.fail_after(limits.read_timeout_s):
            return await _read_upload(request, limits)
    except TimeoutError:
        raise HTTPProblem(408, "RequestTimeout", f"the request body did not arrive within {limits.read_timeout_s:g} s"
                          ) from None
    except ClientDisconnect:
        raise HTTPProblem(499, "ClientDisconnected", "the client went away before its body arrived") from None


async def _read_upload(request: Request, limits: Limits) -> Upload:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits.max_body_bytes)  # refused before a byte of it is read
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/"):
        upload = await _read_multipart(request, limits)
    else:
        body = b"".join([chunk async for chunk in _limited(request, limits.max_body_bytes)])
        upload = Upload([("body", body)] if body else [])
    if not upload.images:
        raise HTTPProblem(400, "NoImage", "the request carries no image: send one as the body (Content-Type "
                                          "image/jpeg, ...) or as multipart/form-data file parts")
    return upload


async def _read_multipart(request: Request, limits: Limits) -> Upload:
    parser = _CompleteMultiPartParser(request.headers, _limited(request, limits.max_body_bytes),
                                      max_files=limits.max_images, max_fields=16, max_part_size=MAX_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if str(exc).startswith("Too many files"):
            raise HTTPProblem(413, "TooManyImages",
                              f"at most {limits.max_images} images in one request") from None
        raise HTTPProblem(400, "MalformedMultipart", f"the multipart body cannot be read: {exc}") from None
    if not parser.complete:  # a cut-off body would otherwise lose its last part without a word
        await form.close()
        raise HTTPProblem(400, "MalformedMultipart", "the multipart body ends before its closing boundary")
    upload = Upload()
    try:
        for key, value in form.multi_items():
            if isinstance(value, str):
                upload.fields[key] = value
            else:
                upload.images.append((value.filename or key, await value.read()))
    finally:
        await form.close()
    return upload


class _CompleteMultiPartParser(MultiPartParser):
    """Starlette's parser, noting whether the closing boundary arrived."""

    complete = False

    def on_end(self) -> None:
        self.complete = True
