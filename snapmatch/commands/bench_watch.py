"""`snapmatch benchmark watch`: sustained lookup rate and the delay before a product is named."""

from __future__ import annotations

import click

from snapmatch.commands.output import emit_json, json_option, thread_settings


@click.command()
@click.option("--threads", "threads", default="1,all", show_default=True, callback=thread_settings,
              help="Thread settings to compare (all: every core).")
@click.option("--pace", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Play the video at this multiple of real time in the live run (above 1: a faster camera).")
@click.option("--product-seconds", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="How long each product stays in view.")
@json_option
def watch(threads: tuple[int, ...], pace: float, product_seconds: float, as_json: bool) -> None:
    """Lookups per second of `watch`, and the delay from a product entering the frame to its event.

    Builds a catalog of the demo products, writes a 640x480 30 fps video in
    which each product is put down at a known frame, and watches it at each
    thread setting: once losslessly (every frame looked up: the sustained
    rate), once played like a live camera (dropped frames, appear delay).

    \b
    snapmatch benchmark watch --threads 1,all --json
    """
    from snapmatch.benchmarks.watch import run

    report = run(threads=list(threads), pace=pace, product_s=product_seconds)
    if as_json:
        emit_json(report)
        return
    video = report["video"]
    click.echo(f"video: {video['size']} at {video['fps']:.0f} fps, {video['frames']} frames, "
               f"{video['products']} products; {report['cpu_count']} cores")
    click.echo(f"{'threads':>7}  {'lookups/s':>9}  {'ms':>5}  {'live fps':>8}  {'dropped':>7}  "
               f"{'delay frames (med/max)':>22}  {'delay ms (med/max)':>18}  missed")
    for row in report["runs"]:
        live = row["live"]
        frames, ms = live["appear_delay_frames"], live["appear_delay_ms"]
        click.echo(f"{row['threads_setting']:>7}  {row['lookup_fps']:>9.1f}  {row['lookup_ms']:>5.1f}  "
                   f"{live['fps']:>8.1f}  {live['frames_dropped']:>7}  "
                   f"{str(frames['median']) + ' / ' + str(frames['max']):>22}  "
                   f"{str(ms['median']) + ' / ' + str(ms['max']):>18}  {', '.join(live['missed'] + live['wrong']) or '-'}")
