"""The HTTP API of one catalog: lookups, product changes, health and metrics (FastAPI; served by uvicorn).

Blocking work (decoding, the model, SQLite) runs in worker threads, never on
the event loop; lookups go through the LookupQueue (admission, micro-batching);
writes go straight to the catalog, whose writer this process is: a write is
answered only after it is durable, so a 2xx survives a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import snapmatch
from snapmatch.sdk.catalog.catalog import check_product_id
from snapmatch.sdk.errors import SnapmatchError
from snapmatch.sdk.types import Identification
from snapmatch.serve.auth import TokenCheck
from snapmatch.serve.batcher import Gate, LookupQueue
from snapmatch.serve.errors import HTTPProblem, error_body, status_of
from snapmatch.serve.metrics import CONTENT_TYPE, Metrics
from snapmatch.serve.uploads import Limits, Upload, read_upload

MAX_K = 1000
WRITE_THREADS = 2  # one writes while the next embeds its photos
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})

_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "one or more photos (every file part is an image, in order)"}}}},
        },
    }
}
_PRODUCT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "name": {"type": "string", "description": "the product's display name"}}}}},
    }
}


def create_app(catalog: Any, *, token: str | None = None, auth_reads: bool = False, limits: Limits | None = None,
               threads: int | None = None, readonly: bool = False, wait: float = 0.0) -> FastAPI:
    """The ASGI app serving one catalog.

    catalog: a catalog folder (opened now, closed when the app shuts down) or
    an open ProductSearch (the caller keeps and closes it). token: the bearer
    token writes need (None: writes are refused); auth_reads: lookups and
    listings need it too. limits: request sizes, lookup queue and micro-batching.
    threads: ONNX Runtime threads of a catalog opened here; readonly: open it
    as a reader (several servers can share one catalog; writes answer 403).

    >>> app = create_app("my-catalog", token=os.environ["SNAPMATCH_TOKEN"])  # uvicorn.run(app)
    """
    from snapmatch.sdk.product_search import ProductSearch

    limits = limits or Limits()
    auth = TokenCheck(token, reads=auth_reads)
    owned = not isinstance(catalog, ProductSearch)
    search = ProductSearch.open(catalog, readonly=readonly, threads=threads, wait=wait) if owned else catalog
    metrics = Metrics()
    lookups = LookupQueue(search, limits, metrics)
    # Each write holds up to a body in memory: bounded too. Writes take turns for the catalog's one
    # writer, and queued ones wait on their own limiter, not in the thread pool lookups need.
    writes = Gate(limits.max_queue, metrics, "write", gauge=metrics.write_depth)
    write_threads = anyio.CapacityLimiter(WRITE_THREADS)

    async def in_writer(function: Callable, *args):
        return await anyio.to_thread.run_sync(function, *args, limiter=write_threads)

    state = {"ready": True}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        try:
            yield
        finally:
            # uvicorn calls this after the last in-flight request is answered (SIGTERM, Ctrl-C).
            state["ready"] = False
            lookups.close()
            if owned:
                search.close()

    app = FastAPI(title="snapmatch", version=snapmatch.__version__, lifespan=lifespan,
                  description="Visual product search over one catalog: name the product in a photo, "
                              "add and remove products. Errors: {\"error\": {\"status\", \"type\", \"message\"}}.")
    app.state.search = search
    app.state.lookups = lookups
    app.state.metrics = metrics
    _install_error_handlers(app)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable):
        start = time.perf_counter()
        status = 500  # unless a response comes back: an exception no handler turned into one
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            endpoint = getattr(request.scope.get("route"), "path", "unmatched").replace(":path}", "}")
            method = request.method if request.method in METHODS else "other"  # a client picks it: bounded labels
            metrics.observe(endpoint, method, status, time.perf_counter() - start)

    # --- looking up -------------------------------------------------------------------

    async def lookup(request: Request, k: int) -> tuple[list[tuple[str, list | None, str | None]], Any, float]:
        """(image name, matches or None, error or None) per image of the request, the catalog's rule, and the
        request's ms."""
        auth.read(request)
        start = time.perf_counter()
        with lookups.admit() as ticket:
            upload = await read_upload(request, limits)
            # The rule is read in the worker thread too: it may refresh the catalog's state (SQLite, files).
            prepared, rule = await anyio.to_thread.run_sync(_preprocess_all, search, upload)
            good = [array for _, array, _ in prepared if array is not None]
            if not good:  # nothing could be read: the request itself is bad (its first image says why)
                raise next(error for _, _, error in prepared if error is not None)
            found = iter(await lookups.lookup(ticket, good, k))
        rows = [(name, next(found) if array is not None else None, None if error is None else str(error))
                for name, array, error in prepared]
        return rows, rule, (time.perf_counter() - start) * 1000.0

    @app.post("/v1/search", tags=["lookup"], openapi_extra=_IMAGE_BODY,
              summary="The k best products for each image (the shape of `snapmatch search --json`)")
    async def search_images(request: Request, k: int = Query(5, ge=1, le=MAX_K)) -> dict:
        rows, _, ms = await lookup(request, k)
        return {"k": k, "results": [
            {"image": name, "matches": None if matches is None else [m.to_dict() for m in matches],
             "error": error, "ms": round(ms, 2)} for name, matches, error in rows]}

    @app.post("/v1/identify", tags=["lookup"], openapi_extra=_IMAGE_BODY,
              summary="Name the product in each image, or say it is unknown (`snapmatch identify --json`)")
    async def identify(request: Request) -> dict:
        rows, rule, ms = await lookup(request, 1)
        results = []
        for name, matches, error in rows:
            answer = Identification.judge(matches[0] if matches else None, rule).to_dict() if error is None \
                else {"product": None, "best": None, "rule_value": None}
            results.append({"image": name, **answer, "error": error, "ms": round(ms, 2)})
        return {"threshold": rule.threshold, "margin_weight": rule.margin_weight, "rule": rule.describe(),
                "results": results}

    # --- products ------------------------------------------------------------------------

    @app.get("/v1/products", tags=["products"], summary="Every product: id, name, image count")
    async def list_products(request: Request) -> dict:
        auth.read(request)
        products = await anyio.to_thread.run_sync(search.products)
        return {"products": [product.to_dict() for product in products]}

    # Ids may hold "/" (the SDK allows any id without line breaks): the images route is matched first.
    @app.post("/v1/products/{product_id:path}/images", tags=["products"], openapi_extra=_IMAGE_BODY,
              summary="Add photos to a product in the catalog")
    async def add_images(request: Request, product_id: str) -> dict:
        auth.write(request)
        product_id = check_product_id(product_id)
        with writes.enter():
            upload = await read_upload(request, limits)
            keys = await in_writer(search.add_images, product_id, [data for _, data in upload.images])
            product = await in_writer(search.catalog.product, product_id)
        return {"product_id": product_id, "image_keys": keys, "product": product.to_dict()}

    @app.get("/v1/products/{product_id:path}", tags=["products"], summary="One product")
    async def get_product(request: Request, product_id: str) -> dict:
        auth.read(request)
        product = await anyio.to_thread.run_sync(search.catalog.product, check_product_id(product_id))
        return product.to_dict()

    @app.put("/v1/products/{product_id:path}", tags=["products"], status_code=201, openapi_extra=_PRODUCT_BODY,
             summary="Create a product from photos (multipart: image parts and a name field); 409 if it exists")
    async def put_product(request: Request, product_id: str, name: str | None = Query(None)) -> dict:
        auth.write(request)
        product_id = check_product_id(product_id)
        with writes.enter():
            upload = await read_upload(request, limits)
            return await in_writer(_create_product, search, product_id, upload, upload.fields.get("name", name))

    @app.delete("/v1/products/{product_id:path}", tags=["products"], summary="Remove a product and its photos")
    async def delete_product(request: Request, product_id: str) -> dict:
        auth.write(request)
        with writes.enter():
            removed = await in_writer(search.remove_product, check_product_id(product_id))
        return {"product_id": product_id, "removed_images": removed}

    # --- the catalog ------------------------------------------------------------------------

    @app.post("/v1/compact", tags=["catalog"], summary="Merge recent changes into a new base index")
    async def compact(request: Request, rebuild: bool = Query(False)) -> dict:
        auth.write(request)
        with writes.enter():
            changed = await in_writer(lambda: search.compact(rebuild=rebuild))
        return {"compacted": changed}

    @app.get("/v1/catalog", tags=["catalog"], summary="Model id, counts, decision rule (`snapmatch catalog info`)")
    async def catalog_info(request: Request) -> dict:
        auth.read(request)
        info = await anyio.to_thread.run_sync(search.info)
        info["catalog"] = Path(info["catalog"]).name  # the server's file system is not the client's business
        return {**info, "writes": auth.writes_enabled and not search.catalog.readonly,
                "limits": {name: getattr(limits, name) for name in limits.__dataclass_fields__}}

    # --- operations ------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Readiness: catalog open and model loaded")
    async def readyz() -> JSONResponse:
        ready = state["ready"] and not search.catalog.closed
        body = {"ready": ready, "model_id": search.model_id, "batching": lookups.batching}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


def _preprocess_all(search, upload: Upload) -> tuple[list[tuple[str, Any, SnapmatchError | None]], Any]:
    """(name, model input or None, error or None) per image (one unreadable image does not fail the others),
    and the catalog's decision rule."""
    prepared: list[tuple[str, Any, SnapmatchError | None]] = []
    for name, data in upload.images:
        try:
            prepared.append((name, search.embedder.preprocess(data), None))
        except SnapmatchError as exc:
            prepared.append((name, None, type(exc)(str(exc).replace("image bytes", f"image {name!r}"))))
    return prepared, search.rule


def _create_product(search, product_id: str, upload: Upload, name: str | None) -> dict:
    keys = search.add_product(product_id, [data for _, data in upload.images], name=name)
    return {"product_id": product_id, "image_keys": keys, "product": search.catalog.product(product_id).to_dict()}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SnapmatchError)
    async def snapmatch_error(_: Request, exc: SnapmatchError) -> JSONResponse:
        status = status_of(exc)
        return JSONResponse(error_body(status, type(exc).__name__, str(exc)), status_code=status)

    @app.exception_handler(HTTPProblem)
    async def http_problem(_: Request, exc: HTTPProblem) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.kind, exc.message), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(_: Request, exc: RequestValidationError) -> JSONResponse:
        message = "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors())
        return JSONResponse(error_body(422, "InvalidParameter", message), status_code=422)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> JSONResponse:
        # Not the client's fault and not a known failure: a bug. Answered as JSON; Starlette then re-raises it
        # so that the server (uvicorn) logs its traceback.
        return JSONResponse(error_body(500, "InternalError", f"the server failed ({type(exc).__name__}); "
                                       "its log has the details"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return JSONResponse(error_body(exc.status_code, kind, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

