"""`photos status` and `photos errors`: what the index holds and what failed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from models.tasks import DEFAULT_TASKS, TASKS
from pipeline import index_status
from pipeline.store import IndexStore


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


@click.command()
@index_option
@click.option("--runs", "n_runs", type=click.IntRange(1), default=5, show_default=True, help="Runs to show.")
def status(index_dir: Path | None, n_runs: int) -> None:
    """Library totals, how many photos each task has covered, and the last runs.

    A task below 100% had its weights missing in some run: run `photos index` again with
    the weights (--weights-dir) and it runs on just those photos.
    """
    with IndexStore.open(resolve_index_dir(index_dir), create=False) as store:
        counts = index_status.counts(store)
        coverage = index_status.task_coverage(store)
        runs = index_status.last_runs(store, n_runs)
    click.echo(f"Index {store.path.parent}")
    click.echo(f"  photos {counts['photos']}   labels {counts['labels']}   objects {counts['objects']}   "
               f"segments {counts['segments']}   failed files {counts['errors']}"
               + (f"   marked deleted {counts['deleted']}" if counts["deleted"] else ""))
    click.echo("\nTASK      COVERED  MODELS")
    for task in TASKS:
        models = coverage.get(task, {})
        done = sum(models.values())
        share = f"{done / counts['photos']:.0%}" if counts["photos"] else "-"
        click.echo(f"{task:<9} {done:>5} {share:>4}  "
                   + (", ".join(f"{m} ({n})" for m, n in models.items()) or _never_run(task)))
    click.echo("\nRUN  STARTED           ENDED             STATUS         SEEN     NEW  CHANGED  MOVED  DELETED"
               "  FAILED  PHOTOS/S  MODELS")
    for r in runs:
        run_models = ",".join(json.loads(r["models"]).values())
        click.echo(
            f"{r['id']:>3}  {_when(r['started_at']):<16}  {_when(r['finished_at']):<16}  {r['status']:<11}"
            f"{r['seen']:>8} {r['new']:>7}  {r['changed']:>7}  {r['moved']:>5}  {r['deleted']:>7}"
            f"  {r['failed']:>6}  {r['images_per_s'] or 0:>8.1f}  {run_models}"
        )


def _never_run(task: str) -> str:
    if task in DEFAULT_TASKS:
        return "never run (weights missing? see `photos models list`)"
    return (f"off by default (`photos index ... --models {','.join((*DEFAULT_TASKS, task))}`), "
            "or its weights were missing (`photos models list`)")


@click.command()
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, stage, reason}.")
def errors(index_dir: Path | None, as_json: bool) -> None:
    """Files that could not be indexed, with the stage and the reason."""
    with IndexStore.open(resolve_index_dir(index_dir), create=False) as store:
        failures = index_status.run_errors(store)
    if as_json:
        click.echo(json.dumps([{"path": p, "stage": s, "reason": r} for p, s, r in failures], indent=2))
        return
    if not failures:
        click.echo("No failed files.")
    for path, stage, reason in failures:
        click.echo(f"{path}\n    {stage}: {reason}")
