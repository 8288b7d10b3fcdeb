"""`snapmatch serve`: one catalog over HTTP (needs the serve extra: FastAPI, uvicorn)."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import click

from snapmatch.commands.output import threads_option
from snapmatch.sdk.errors import SnapmatchError

SERVE_EXTRA = ("fastapi", "uvicorn", "multipart", "prometheus_client")
GRACEFUL_SHUTDOWN_S = 30  # in-flight requests get this long to finish after SIGTERM


def require_serve_extra() -> None:
    missing = [module for module in SERVE_EXTRA if importlib.util.find_spec(module) is None]
    if missing:
        raise SnapmatchError(f"snapmatch serve needs the serve extra ({', '.join(missing)} not installed): "
                             "pip install 'snapmatch[serve]'")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), bound before the server starts so its real port can be printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this (Linux): without it a keep-alive client waits out Nagle's algorithm
    # against its own delayed ACK, about 40 ms on every response after the first.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SnapmatchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@click.command()
@click.argument("catalog", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; put TLS in front of it).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free one).")
@threads_option
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File whose first line is the bearer token writes need (else $SNAPMATCH_TOKEN; neither: no writes).")
@click.option("--auth-reads", is_flag=True, help="Lookups and listings need the token too.")
@click.option("--readonly", is_flag=True, help="Open the catalog as a reader: no writes, several servers can share it.")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=20.0, show_default=True,
              help="Largest request body; refused (413) while it streams in.")
@click.option("--max-images", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most images in one request.")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Lookup requests admitted at once; more get 503 with Retry-After.")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most images in one model call when batching concurrent lookups (1: no batching).")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="How long a lookup waits for others to share its model call.")
@click.option("--read-timeout", type=click.FloatRange(min=0.001), default=30.0, show_default=True,
              help="Seconds a request body may take to arrive (slower: 408), so stalled clients cannot hold the queue.")
@click.option("--wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds to wait for another writer to close the catalog.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level (info logs every request).")
def serve(catalog: Path, host: str, port: int, threads: int | None, token_file: Path | None, auth_reads: bool,
          readonly: bool, max_body_mb: float, max_images: int, max_queue: int, max_batch: int,
          batch_wait_ms: float, read_timeout: float, wait: float, log_level: str) -> None:
    """Serve a catalog over HTTP: identify and search photos, add and remove products.

    The API is under /v1 (OpenAPI docs at /docs, schema at /openapi.json),
    with /healthz, /readyz and Prometheus /metrics. Writes need a bearer
    token (--token-file or $SNAPMATCH_TOKEN); without one they are refused.
    SIGTERM or Ctrl-C stops it gracefully: requests in flight are answered,
    then the catalog is closed.

    \b
    openssl rand -hex 32 > token && chmod 600 token
    snapmatch serve my-catalog --port 8080 --token-file token
    curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' localhost:8080/v1/identify
    """
    require_serve_extra()
    import uvicorn

    from snapmatch.serve.app import create_app
    from snapmatch.serve.auth import TOKEN_ENV, load_token
    from snapmatch.serve.uploads import Limits

    try:
        token = load_token(token_file)
        limits = Limits(max_body_bytes=int(max_body_mb * 1_000_000), max_images=max_images, max_queue=max_queue,
                        max_batch=max_batch, batch_wait_ms=batch_wait_ms, read_timeout_s=read_timeout)
        app = create_app(catalog, token=token, auth_reads=auth_reads, limits=limits, threads=threads,
                         readonly=readonly, wait=wait)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if auth_reads and token is None:
        raise click.UsageError(f"--auth-reads needs a token: --token-file or ${TOKEN_ENV}")
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    search = app.state.search
    writes = "disabled (read-only catalog)" if readonly else "enabled (bearer token)" if token else \
        f"disabled (no token: --token-file or ${TOKEN_ENV})"
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"snapmatch serve: {search.folder} ({len(search.products())} products, model {search.model_id}) "
               f"listening on http://{shown}:{bound}; writes {writes}; micro-batching "
               f"{'on' if max_batch > 1 else 'off'}", err=True)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                            server_header=False, access_log=log_level in ("info", "debug"))
    uvicorn.Server(config).run(sockets=[sock])
