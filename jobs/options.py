"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.settings import default_index_dir, help_for


class _IndexPath(click.Path):
    """click.Path, but a name the OS cannot take (a NUL byte) is a usage error, not a crash."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except ValueError as exc:  # os.stat: "embedded null byte"
            self.fail(f"{value!r} cannot be a folder name: {exc}", param, ctx)


def index_option(func):
    """``--index DIR`` (env PHOTOS_INDEX) on every command that reads or writes an index."""
    return click.option(
        "--index", "index_dir", type=_IndexPath(path_type=Path, file_okay=False),
        default=None, help=help_for("index_dir") + " Default: ~/.local/share/photos.",
    )(func)


def resolve_index_dir(index_dir: Path | None) -> Path:
    return index_dir if index_dir is not None else default_index_dir()
