"""The README documents every command and every option of the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click

from jobs.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")


def test_every_command_and_option_is_in_the_readme() -> None:
    missing = []
    for name, command in _commands(cli, "photos"):
        if name not in README:
            missing.append(name)
        for param in command.params:
            for flag in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if flag.startswith("--") and flag != "--help" and flag not in README:
                    missing.append(f"{name} {flag}")
    assert not missing, "not in README.md: " + ", ".join(missing)
