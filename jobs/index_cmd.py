"""`photos index`: scan folders, run the models on Ray, write the index."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from jobs.options import index_option, resolve_index_dir
from models.tasks import DEFAULT_TASKS, TASKS
from models.weights import default_weights_dir
from pipeline.indexer import RunSummary, index_library
from pipeline.plan import RunPlan
from pipeline.settings import PRECISIONS, IndexSettings, help_for

EXIT_SOME_FAILED = 3
"""Exit code of a run that finished but could not index some files (see `photos errors`)."""


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when written to: Ray's start moves it (pipeline/ray_connect.py)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    @property
    def encoding(self) -> str:
        return getattr(sys.stderr, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return sys.stderr.isatty()

    def fileno(self) -> int:
        return sys.stderr.fileno()


class _ProgressBar:
    """Prints the plan, then a bar with rate and ETA on stderr while photos are processed."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None

    def planned(self, plan: RunPlan, models: dict[str, str]) -> None:
        click.echo(
            f"Scanned {plan.seen} files: {plan.new} new, {plan.changed} changed, {plan.rerun + plan.moved_rerun} to "
            f"re-run with new models, {plan.moved} moved, {len(plan.deleted)} deleted, {plan.unchanged} "
            f"unchanged, {len(plan.scan_errors)} unreadable. Models: "
            + ", ".join(f"{task}={name}" for task, name in models.items()),
            err=True,
        )
        self.bar = tqdm(total=len(plan.todo), unit="photo", file=_CurrentStderr(),
                        disable=not self.enabled or not plan.todo, dynamic_ncols=True, smoothing=0.1)

    def skipped(self, tasks: dict[str, str]) -> None:
        for task, message in tasks.items():
            for line in warning_lines(task, message):
                click.secho(line, fg="yellow", err=True)

    def substituted(self, tasks: dict[str, str]) -> None:
        for message in tasks.values():
            click.secho(f"NOTE: {message}.", fg="yellow", err=True)

    def advanced(self, photos: int) -> None:
        if self.bar is not None:
            self.bar.update(photos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def warning_lines(task: str, message: str) -> list[str]:
    """A skipped task's warning in two lines: what is missing, and the fix.

    ``message`` is the library's full :class:`WeightsMissingError` text (every folder
    looked in, the download error), which `photos models list` and --strict-models show.
    """
    found = re.match(r"weights for (\S+) \((\S+)\) not found", message)
    if not found:
        return [f"WARNING: skipping {task}: {message}"]
    name, file_name = found.groups()
    why = "download failed" if "download from" in message else "no download address"
    return [
        f"WARNING: skipping {task}: no weights for {name} here ({file_name}; {why}).",
        (f"  Fix: `photos models download {name} --to DIR` where there is internet, then --weights-dir DIR; "
         f"a later run adds {task} to these photos."),
    ]


def _parse_tasks(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    tasks = tuple(t.strip() for t in value.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise click.BadParameter(f"unknown task {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
    return tasks


def _option(setting: str, flag: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """``flag`` for the setting of that name: its help and default come from
    ``IndexSettings``, so each option is declared here once and nowhere else."""
    default = kwargs.pop("default", _DEFAULTS.get(setting))
    kwargs.setdefault("help", help_for(setting) if setting in _DEFAULTS else None)
    return click.option(flag, setting, default=default, show_default=default is not None and default is not False,
                        **kwargs)


_DEFAULTS = {f.name: f.default for f in fields(IndexSettings) if f.default is not MISSING}
_OPTIONS = [
    _option("tasks", "--models", default=",".join(DEFAULT_TASKS), callback=_parse_tasks),
    *(_option(task.model_option, "--" + task.model_option.replace("_", "-"), default=None, help=task.model_help)
      for task in TASKS.values()),
    _option("strict_models", "--strict-models", is_flag=True),
    _option("weights_dir", "--weights-dir", type=click.Path(path_type=Path, file_okay=False)),
    _option("address", "--address"),
    _option("batch_size", "--batch-size", type=click.IntRange(1)),
    _option("decode_batch_size", "--decode-batch-size", type=click.IntRange(1)),
    _option("num_actors", "--actors", type=click.IntRange(1)),
    _option("gpus_per_actor", "--gpus-per-actor", type=click.FloatRange(0, 1, min_open=True)),
    _option("actor_cpus", "--actor-cpus", type=click.FloatRange(0, min_open=True)),
    _option("model_threads", "--model-threads", type=click.IntRange(1)),
    _option("decode_cpus", "--decode-cpus", type=click.FloatRange(0, min_open=True)),
    _option("task_retries", "--task-retries", type=click.IntRange(0)),
    _option("precision", "--precision", type=click.Choice(PRECISIONS)),
    _option("channels_last", "--channels-last/--no-channels-last"),
    _option("top_k", "--top-k", type=click.IntRange(1, 100)),
    _option("score_threshold", "--score-threshold", type=click.FloatRange(0, 1)),
    _option("mask_size", "--mask-size", type=click.IntRange(16, 4096)),
    _option("image_size", "--image-size", type=click.IntRange(32, 4096)),
    _option("ray_min_photos", "--ray-min-photos", type=click.IntRange(0)),
    _option("ray_num_cpus", "--num-cpus", type=click.IntRange(1)),
    _option("commit_rows", "--commit-rows", type=click.IntRange(1)),
    _option("max_pixels", "--max-pixels", type=click.IntRange(1)),
    _option("keep_deleted", "--keep-deleted", is_flag=True),
    _option("retry_errors", "--retry-errors", is_flag=True),
]
"""Every setting but ``roots`` and ``index_dir`` (the argument and ``--index``); a test
checks that none is missing."""


def _with_options(func: Callable) -> Callable:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=str))
@index_option
@_with_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def index(roots: tuple[str, ...], index_dir: Path | None, quiet: bool, **options: Any) -> None:
    """Index the photos under ROOTS (folders or URIs like s3://bucket/photos, walked recursively).

    Each photo is decoded once and goes through the classifier, the object detector and
    the segmentation model (--models picks). Unchanged photos are skipped, moved photos
    keep their results, deleted photos leave the index, and a new model re-runs only its
    task: running it every night costs only what changed. A killed run resumes where it
    stopped. Files that cannot be read are recorded (see `photos errors`) and the run goes
    on; the exit code is then 3. A task whose weights are missing is skipped with a
    warning (an error with --strict-models); a later run with the weights runs just it.

    \b
    Examples:
      photos index ~/Pictures /mnt/nas/photos --index ~/photo-index
      photos index ~/Pictures --models classify,detect --weights-dir ./weights
      photos index s3://my-bucket/photos --address auto    # on a Ray cluster
    """
    chosen = {name: options.pop(task.model_option) for name, task in TASKS.items()}
    settings = IndexSettings(
        roots=roots, index_dir=resolve_index_dir(index_dir),
        models={task: model for task, model in chosen.items() if model},
        **{**options, "weights_dir": options["weights_dir"] or default_weights_dir()},
    )
    bar = _ProgressBar(enabled=not quiet)
    try:
        summary = index_library(settings, progress=bar)
    finally:
        bar.close()
    _print_summary(summary)
    if summary.failed:
        sys.exit(EXIT_SOME_FAILED)


def _print_summary(s: RunSummary) -> None:
    click.echo(
        f"\nRun {s.run_id} {s.status} in {s.seconds:.1f} s"
        + (f" ({s.images_per_s:.1f} photos/s)" if s.indexed or s.failed else ": nothing new to index") + "\n"
        f"  seen       {s.seen}\n"
        f"  indexed    {s.indexed}  ({s.new} new, {s.changed} changed or re-run)\n"
        f"  moved      {s.moved}\n"
        f"  deleted    {s.deleted}\n"
        f"  unchanged  {s.unchanged}\n"
        f"  failed     {s.failed}\n"
        f"  index      {s.index_dir}"
    )
    if s.people is not None:
        click.echo(f"  people     {s.people.assigned} faces joined people, {s.people.new_people} new people "
                   "(`photos people`)")
        for problem in s.people.problems[:10]:
            click.echo(f"  ! {problem}")
    for task in s.skipped_tasks:
        click.secho(f"  SKIPPED    {task}: weights missing (see the warning above; --weights-dir)", fg="yellow")
    for task in s.substituted_models:
        click.secho(f"  CPU MODEL  {task}: ran {s.models[task]}, the GPU default's weights are missing (see the note "
                    "above)", fg="yellow")
    shown = s.failures[:10]
    for path, stage, reason in shown:
        click.echo(f"  ! {path}: {reason} ({stage})")
    if len(s.failures) > len(shown):
        click.echo(f"  ... and {len(s.failures) - len(shown)} more: `photos errors`")
