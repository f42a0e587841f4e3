"""`photos index`: scan folders, run the models on Ray, write the index."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from tqdm import tqdm

from jobs.options import index_option, resolve_index_dir
from models.weights import default_weights_dir
from pipeline.indexer import RunSummary, index_library
from pipeline.plan import RunPlan
from pipeline.settings import DEFAULT_TASKS, PRECISIONS, TASKS, IndexSettings, help_for

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
        self.bar = tqdm(total=len(plan.todo), unit="photo", file=_CurrentStderr(), disable=not self.enabled,
                        dynamic_ncols=True, smoothing=0.1)

    def skipped(self, tasks: dict[str, str]) -> None:
        for task, message in tasks.items():
            for line in warning_lines(task, message):
                click.secho(line, fg="yellow", err=True)

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


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=str))
@index_option
@click.option("--models", "tasks", default=",".join(DEFAULT_TASKS), callback=_parse_tasks, show_default=True,
              help=help_for("tasks"))
@click.option("--classifier", default=None, help=help_for("classifier"))
@click.option("--detector", default=None, help=help_for("detector"))
@click.option("--segmenter", default=None, help=help_for("segmenter"))
@click.option("--strict-models", is_flag=True, help=help_for("strict_models"))
@click.option("--weights-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help=help_for("weights_dir"))
@click.option("--address", default=None, help=help_for("address"))
@click.option("--batch-size", type=click.IntRange(1), default=None, help=help_for("batch_size"))
@click.option("--decode-batch-size", type=click.IntRange(1), default=IndexSettings.decode_batch_size,
              show_default=True, help=help_for("decode_batch_size"))
@click.option("--actors", "num_actors", type=click.IntRange(1), default=None, help=help_for("num_actors"))
@click.option("--gpus-per-actor", type=click.FloatRange(0, 1, min_open=True), default=IndexSettings.gpus_per_actor,
              show_default=True, help=help_for("gpus_per_actor"))
@click.option("--precision", type=click.Choice(PRECISIONS), default=IndexSettings.precision, show_default=True,
              help=help_for("precision"))
@click.option("--channels-last/--no-channels-last", default=IndexSettings.channels_last, show_default=True,
              help=help_for("channels_last"))
@click.option("--top-k", type=click.IntRange(1, 100), default=IndexSettings.top_k, show_default=True,
              help=help_for("top_k"))
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=IndexSettings.score_threshold,
              show_default=True, help=help_for("score_threshold"))
@click.option("--mask-size", type=click.IntRange(16, 4096), default=IndexSettings.mask_size, show_default=True,
              help=help_for("mask_size"))
@click.option("--image-size", type=click.IntRange(32, 4096), default=None, help=help_for("image_size"))
@click.option("--ray-min-photos", type=click.IntRange(0), default=IndexSettings.ray_min_photos,
              show_default=True, help=help_for("ray_min_photos"))
@click.option("--num-cpus", "ray_num_cpus", type=click.IntRange(1), default=None, help=help_for("ray_num_cpus"))
@click.option("--commit-rows", type=click.IntRange(1), default=IndexSettings.commit_rows, show_default=True,
              help=help_for("commit_rows"))
@click.option("--max-pixels", type=click.IntRange(1), default=IndexSettings.max_pixels, show_default=True,
              help=help_for("max_pixels"))
@click.option("--keep-deleted", is_flag=True, help=help_for("keep_deleted"))
@click.option("--retry-errors", is_flag=True, help=help_for("retry_errors"))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def index(roots: tuple[str, ...], index_dir: Path | None, tasks: tuple[str, ...], classifier: str | None,
          detector: str | None, segmenter: str | None, strict_models: bool,
          weights_dir: Path | None, address: str | None, batch_size: int | None, decode_batch_size: int, num_actors: int | None,
          gpus_per_actor: float, precision: str, channels_last: bool, top_k: int,
          score_threshold: float, mask_size: int, image_size: int | None,
          ray_min_photos: int, ray_num_cpus: int | None, commit_rows: int, max_pixels: int, keep_deleted: bool,
          retry_errors: bool, quiet: bool) -> None:
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
    settings = IndexSettings(
        roots=roots, index_dir=resolve_index_dir(index_dir), tasks=tasks, classifier=classifier,
        detector=detector, segmenter=segmenter, strict_models=strict_models,
        score_threshold=score_threshold, mask_size=mask_size, image_size=image_size,
        weights_dir=weights_dir or default_weights_dir(), address=address, batch_size=batch_size, decode_batch_size=decode_batch_size,
        num_actors=num_actors, gpus_per_actor=gpus_per_actor, precision=precision,
        channels_last=channels_last, top_k=top_k, ray_min_photos=ray_min_photos, ray_num_cpus=ray_num_cpus, commit_rows=commit_rows,
        max_pixels=max_pixels, keep_deleted=keep_deleted, retry_errors=retry_errors,
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
        f"\nRun {s.run_id} {s.status} in {s.seconds:.1f} s ({s.images_per_s:.1f} photos/s)\n"
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
    shown = s.failures[:10]
    for path, stage, reason in shown:
        click.echo(f"  ! {path}: {reason} ({stage})")
    if len(s.failures) > len(shown):
        click.echo(f"  ... and {len(s.failures) - len(shown)} more: `photos errors`")
