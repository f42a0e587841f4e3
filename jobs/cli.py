"""The `photos` command: a thin Click layer over the library in ``pipeline/`` and ``models/``.

Commands parse options, build one settings object, call one library function and print.
Library errors (:class:`~pipeline.errors.PhotosError`) become a one-line message and exit
code 2, never a traceback.
"""

from __future__ import annotations

import click

from jobs.eval_cmd import evaluate
from jobs.index_cmd import index
from jobs.models_cmd import models
from jobs.people_cmd import people
from jobs.search_cmd import search
from jobs.show_cmd import show
from jobs.status_cmd import errors, status
from pipeline.errors import PhotosError


class CliError(click.ClickException):
    """A library error shown to the user: message on stderr, exit code 2."""

    exit_code = 2


class PhotosGroup(click.Group):
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
      photos show IMG_0042.jpg       draw its boxes and mask from the index
      photos models list             models and whether their weights are here
    """


cli.add_command(index)
cli.add_command(search)
cli.add_command(models)
cli.add_command(status)
cli.add_command(errors)
cli.add_command(show)
cli.add_command(evaluate)
cli.add_command(people)


def main() -> None:
    cli(prog_name="photos")
