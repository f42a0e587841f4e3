"""`photos models`: which models exist and whether their weights are here."""

from __future__ import annotations

from pathlib import Path

import click

from models.registry import DEFAULT_MODELS, all_specs
from models.weights import default_weights_dir, locate_weights


@click.group()
def models() -> None:
    """List models and their weights."""


@models.command("list")
@click.option("--weights-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder with weight files. Env: PHOTOS_WEIGHTS_DIR.")
def list_models(weights_dir: Path | None) -> None:
    """Every model, its task, pinned weights and where its weight file is (or "missing")."""
    weights_dir = weights_dir or default_weights_dir()
    defaults = {name: f"default on {device}" for task in DEFAULT_MODELS.values() for device, name in task.items()}
    rows = []
    for spec in all_specs():
        path = locate_weights(spec, weights_dir)
        rows.append((spec.name, spec.task, spec.weights_name, str(path) if path else "missing",
                     defaults.get(spec.name, "")))
    widths = [max(len(r[i]) for r in rows + [("MODEL", "TASK", "WEIGHTS", "FILE", "")]) for i in range(4)]
    header = ("MODEL", "TASK", "WEIGHTS", "FILE", "")
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + ("  " + row[4] if row[4] else ""))
