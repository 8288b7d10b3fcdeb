"""`snapmatch benchmark serve`: requests/s and latency of /v1/identify, micro-batching on vs off, and kill -9."""

from __future__ import annotations

from pathlib import Path

import click

from snapmatch.commands.output import emit_json, json_option, positive_ints


@click.command()
@click.option("--clients", default="1,8,32", show_default=True, callback=positive_ints,
              help="Concurrent client counts to measure, comma-separated.")
@click.option("--requests", "requests", type=click.IntRange(min=1), default=300, show_default=True,
              help="Requests per client count and mode.")
@click.option("--kills", type=click.IntRange(min=0), default=20, show_default=True,
              help="Times to kill -9 the server during writes (0: skip the crash check).")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="The server's inference threads (0: all cores).")
@click.option("--max-batch", type=click.IntRange(min=2), default=16, show_default=True,
              help="Most images in one model call with batching on.")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="How long a lookup waits for company with batching on.")
@click.option("--catalog", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Serve this catalog (read-only) for the lookups instead of the demo's.")
@json_option
def serve(clients: tuple[int, ...], requests: int, kills: int, threads: int, max_batch: int, batch_wait_ms: float,
          catalog: Path | None, as_json: bool) -> None:
    """Requests/s and p50/p99 latency of POST /v1/identify at each client count, with micro-batching on and
    off (one real server each, same run), then kill -9 during writes: acknowledged writes lost after restart.

    Clients run on this machine beside the server (loopback, keep-alive), the
    same in both modes: read the ratio of the modes, not single times.

    \b
    snapmatch benchmark serve --clients 1,8,32 --requests 300 --kills 20
    """
    from snapmatch.commands.serve import require_serve_extra

    require_serve_extra()
    from snapmatch.benchmarks.serve import run

    report = run(clients=list(clients), requests=requests, kills=kills, threads=threads, max_batch=max_batch,
                 batch_wait_ms=batch_wait_ms, catalog=catalog)
    if as_json:
        emit_json(report)
        return
    click.echo(f"{report['cpu'].get('model') or 'cpu'}; {report['usable_cores']} cores; server threads "
               f"{report['threads_setting']}; {report['photos']} query photos, {requests} requests per row")
    click.echo(f"{'mode':<13} {'clients':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'img/call':>8}  statuses")
    for mode in report["modes"]:
        for row in mode["runs"]:
            click.echo(f"{mode['mode']:<13} {row['clients']:>7} {row['requests_per_s']:>7.1f} {row['p50_ms']:>7.1f} "
                       f"{row['p99_ms']:>7.1f} {row['images_per_model_call'] or 0:>8.2f}  "
                       f"{row['statuses']}{' errors ' + str(row['errors']) if row['errors'] else ''}")
    crash = report["crash"]
    if crash:
        click.echo(f"kill -9 during writes: {crash['kills']} kills, {crash['acknowledged_writes']} acknowledged "
                   f"writes, {crash['lost']} lost ({crash['cut_off_writes']} writes cut off unanswered)")
