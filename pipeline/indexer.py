"""`photos index` as a library call: scan, plan, run the Ray pipeline, commit, summarise.

This module orders the stages and owns the run's bookkeeping; each stage lives in its
own module and all Ray calls in ``pipeline/job.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from models.registry import choose_models, get_spec
from models.weights import fetch_weights
from pipeline.inference import ModelPlan
from pipeline.job import RaySession, run_pipeline
from pipeline.lock import index_lock
from pipeline.parquet_sink import parquet_dir, remove_orphan_parts
from pipeline.plan import RunPlan, plan_run
from pipeline.scan import check_roots, scan_library
from pipeline.settings import IndexSettings
from pipeline.store import IndexStore
from pipeline.writer import IndexWriter


@dataclass
class RunSummary:
    """What one run did, for the CLI's closing screen and for scripts."""

    run_id: int
    index_dir: Path
    models: dict[str, str]
    seen: int = 0
    indexed: int = 0
    unchanged: int = 0
    failed: int = 0
    seconds: float = 0.0
    status: str = "running"
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (path, stage, reason)

    @property
    def images_per_s(self) -> float:
        processed = self.indexed + self.failed
        return processed / self.seconds if self.seconds > 0 else 0.0


class ProgressListener(Protocol):
    """What the indexer tells its caller while it runs (the CLI draws a bar from it)."""

    def planned(self, plan: RunPlan, models: dict[str, str]) -> None: ...

    def advanced(self, photos: int) -> None: ...


class _Silent:
    def planned(self, plan: RunPlan, models: dict[str, str]) -> None:
        pass

    def advanced(self, photos: int) -> None:
        pass


def index_library(settings: IndexSettings, progress: ProgressListener | None = None) -> RunSummary:
    """Index ``settings.roots`` into ``settings.index_dir``; return the run's summary.

    Raises :class:`~pipeline.errors.PhotosError` subclasses for problems that stop the
    whole run (missing folder, locked or unwritable index, unknown model, missing weights);
    a bad photo never raises, it is counted in ``failed``.
    """
    progress = progress or _Silent()
    roots = [str(r) for r in check_roots(settings.roots)]
    overrides = {"classify": settings.classifier}
    for name in overrides.values():
        if name:
            get_spec(name)  # an unknown name fails before any scanning
    started = time.monotonic()
    with index_lock(settings.index_dir):
        store = IndexStore.open(settings.index_dir)
        try:
            remove_orphan_parts(parquet_dir(settings.index_dir), store.parquet_file_names())
            plan = plan_run(scan_library(roots), store.known_files())
            session = RaySession(settings)
            try:
                models = choose_models(settings.tasks, overrides, gpu=session.gpus() > 0)
                for name in models.values():  # verified (or downloaded) before any work starts
                    fetch_weights(get_spec(name), settings.weights_dir, offline=False)
                progress.planned(plan, models)
                run_id = store.begin_run(roots, models)
                summary = RunSummary(run_id, settings.index_dir, models, seen=plan.seen, unchanged=plan.unchanged)
                writer = IndexWriter(store, parquet_dir(settings.index_dir), run_id, models, settings.commit_rows)
                try:
                    writer.add_scan_errors((None, e) for e in plan.scan_errors)
                    plans = [ModelPlan(task, get_spec(name)) for task, name in models.items()]
                    for results in run_pipeline(plan.todo, settings, plans, session.gpus()):
                        writer.add(results)
                        progress.advanced(results.num_rows)
                    writer.flush()
                    summary.status = "done"
                except KeyboardInterrupt:
                    summary.status = "interrupted"
                    writer.flush()
                    raise
                finally:
                    if summary.status == "running":
                        summary.status = "failed"
                    summary.indexed, summary.failed = writer.indexed, writer.failed
                    summary.seconds = time.monotonic() - started
                    store.finish_run(
                        run_id, summary.status, seen=summary.seen, indexed=summary.indexed,
                        skipped=summary.unchanged, failed=summary.failed,
                        seconds=summary.seconds, images_per_s=summary.images_per_s,
                    )
                summary.failures = store.run_errors(run_id)
            finally:
                session.close()
        finally:
            store.close()
    return summary
