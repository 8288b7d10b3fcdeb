"""The `snapmatch` command. Sub-commands live in snapmatch/commands/ and are imported only when run.

Errors are turned into one line on stderr and a non-zero exit code here, in
one place: 1 for a failure, 2 for a usage error (click), 3 for a bulk job that
finished but skipped some inputs, 130 for Ctrl-C (`watch` ends on Ctrl-C by design:
it prints its summary and exits 0).
"""

from __future__ import annotations

import importlib

import click

EXIT_FAILURE = 1
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT

# name -> (module:attribute, one-line help shown without importing the module)
COMMANDS = {
    "catalog": ("snapmatch.commands.catalog:catalog", "Create, fill, inspect, calibrate and repair catalogs."),
    "search": ("snapmatch.commands.lookup:search", "The k best catalog products for each image."),
    "identify": ("snapmatch.commands.lookup:identify", "Name the product in each image, or say it is unknown."),
    "demo": ("snapmatch.commands.demo:demo", "Build a catalog from bundled photos and look products up."),
    "train": ("snapmatch.commands.train:train", "Fine-tune the embedding network (needs snapmatch[train])."),
    "evaluate": ("snapmatch.commands.train:evaluate", "Measure retrieval accuracy through the runtime."),
    "export": ("snapmatch.commands.export:export", "Export a checkpoint to ONNX, int8, parity report (needs snapmatch[train])."),
    "benchmark": ("snapmatch.commands.benchmark:benchmark", "Profile latency, accuracy, scale and memory on this machine."),
    "watch": ("snapmatch.commands.watch:watch", "Name the products a camera or video sees, live, as JSON events."),
    "serve": ("snapmatch.commands.serve:serve", "Serve a catalog over HTTP: identify, search, add and remove (needs snapmatch[serve])."),
}


class PartialSuccess(Exception):
    """Raised by a command that finished but skipped some of its inputs (exit code 3)."""


class Interrupted(Exception):
    """Raised by a command stopped by Ctrl-C that can say what it committed (exit code 130)."""


class CommandError(click.ClickException):
    """One line on stderr and an exit code: how every snapmatch error reaches a CLI user."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE, prefix: str = "error") -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; each error sets its own
        self.prefix = prefix

    def show(self, file=None) -> None:
        click.echo(f"{self.prefix}: {self.message}", err=True, file=file)


class LazyGroup(click.Group):
    """A group whose sub-commands import their module (numpy, onnxruntime, ...) only when used.

    `lazy` maps a sub-command's name to ("module:attribute", one-line help).
    """

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = COMMANDS if lazy is None else lazy

    def invoke(self, ctx: click.Context):
        from snapmatch.sdk.errors import SnapmatchError

        try:
            return super().invoke(ctx)
        except PartialSuccess as exc:
            raise CommandError(str(exc), exit_code=EXIT_PARTIAL, prefix="warning") from None
        except Interrupted as exc:
            raise CommandError(str(exc), exit_code=EXIT_INTERRUPTED) from None
        except SnapmatchError as exc:  # only snapmatch's own errors are the user's: anything else is a bug
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            # Every write is committed or rolled back as a unit, so what is on disk is as before or after it.
            raise CommandError("interrupted (Ctrl-C); work committed before it is kept", exit_code=EXIT_INTERRUPTED) \
                from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return None
        module, _, attribute = self.lazy[name][0].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, self.lazy[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snapmatch")
def cli() -> None:
    """snapmatch: on-device visual product search.

    \b
    snapmatch catalog create my-catalog --model model.onnx
    snapmatch catalog import my-catalog photos/        # one sub-folder per product
    snapmatch identify my-catalog frame.jpg
    """


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="snapmatch")


if __name__ == "__main__":
    main()
