"""`photos models`: which models exist and whether their weights are here."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from models.registry import DEFAULT_MODELS, all_specs, get_spec
from models.weights import default_weights_dir, download_weights, locate_weights, verify_weights
from pipeline.errors import WeightsMissingError


@click.group()
def models() -> None:
    """List models and fetch their weights."""


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


@models.command("download")
@click.argument("names", nargs=-1)
@click.option("--to", "target", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also copy the files here (a folder to carry to offline machines).")
def download(names: tuple[str, ...], target: Path | None) -> None:
    """Fetch weights into the torch hub cache (all models if no NAMES are given).

    Run it on a machine with internet; with --to, the files are also copied into one
    folder that offline machines use as --weights-dir.

    \b
    Example:
      photos models download --to ./weights && rsync -a ./weights cluster:/opt/photos-weights
    """
    specs = [get_spec(n) for n in names] if names else all_specs()
    failed = 0
    for spec in specs:
        try:
            path = locate_weights(spec, None) or download_weights(spec)
            verify_weights(spec, path)
        except WeightsMissingError as exc:
            click.echo(f"{spec.name}: FAILED: {exc}", err=True)
            failed += 1
            continue
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
            for name in (spec.file_name, *spec.companion_files):  # a TF.js graph is json + bin
                if not (target / name).exists():
                    shutil.copy2(path.parent / name, target / name)
            path = target / spec.file_name
        click.echo(f"{spec.name}: {path}")
    if failed:
        raise SystemExit(1)
