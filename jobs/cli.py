"""The `photos` command: a thin Click layer over the library in ``pipeline/`` and ``models/``.

Commands parse options, build one settings object, call one library function and print.
Library errors (:class:`~pipeline.errors.PhotosError`) become a one-line message and exit
code 2, never a traceback.

Command modules load only when their command runs: `photos index` needs torch and Ray
(seconds to import), `photos search` must answer in a fraction of a second, so this module
names each command's module instead of importing it (:data:`COMMANDS`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from pipeline.errors import PhotosError

COMMANDS = {
    "index": "jobs.index_cmd:index",
    "search": "jobs.search_cmd:search",
    "models": "jobs.models_cmd:models",
    "status": "jobs.status_cmd:status",
    "errors": "jobs.status_cmd:errors",
    "show": "jobs.show_cmd:show",
    "eval": "jobs.eval_cmd:evaluate",
    "similar": "jobs.similar_cmd:similar",
    "duplicates": "jobs.duplicates_cmd:duplicates",
    "train": "jobs.train_cmd:train",
    "labels": "jobs.train_cmd:labels",
    "people": "jobs.people_cmd:people",
}
"""Command name -> "module:attribute" of its Click command."""


class CliError(click.ClickException):
    """A library error shown to the user: message on stderr, exit code 2."""

    exit_code = 2


class PhotosGroup(click.Group):
    """A group whose commands are imported on first use (see :data:`COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PhotosError as exc:
            raise CliError(str(exc)) from exc


@click.group(cls=PhotosGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="photos")
def cli() -> None:
    """Index a photo library with CNNs and search it.

    \b
      photos index ~/Pictures        classify, detect, segment; write Parquet + SQLite
      photos search beach            photos of beaches, best first
      photos search --year 2019 --place lisbon    by when and where
      photos show IMG_0042.jpg       draw its boxes and mask from the index
      photos models list             models and whether their weights are here
    """


def main() -> None:
    """The console script: run the command, then leave without the interpreter's teardown.

    Tearing down PyTorch, torchvision and timm's modules at exit took 1-3.5 s on this
    project's 2-core machine (3.4 s under load), after every result was committed and
    printed. Every command closes its files and its Ray itself (the index is fsynced
    batch by batch), so the process ends with ``os._exit`` once the output is flushed.
    Only the console script does this; ``cli`` called from Python (tests) returns as usual.
    """
    code: int
    try:
        cli(prog_name="photos")
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
