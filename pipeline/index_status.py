"""What the index holds and what happened in it: the read-only queries behind
`photos status`, `photos errors` and a run's summary.

Kept apart from ``pipeline/store.py``, which owns the schema and every write, so that
reporting can grow (new tables, new totals) without touching the commit path.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text

from pipeline.store import IndexStore, errors, labels, objects, photos, runs, segments


def run_errors(store: IndexStore, run_id: int | None = None) -> list[tuple[str, str, str]]:
    """(path, stage, reason) of every file that failed (in run ``run_id``, if given)."""
    query = select(errors.c.path, errors.c.stage, errors.c.reason).order_by(errors.c.path)
    if run_id is not None:
        query = query.where(errors.c.run_id == run_id)
    with store.engine.connect() as conn:
        return [(path, stage, reason) for path, stage, reason in conn.execute(query)]


def last_runs(store: IndexStore, limit: int = 10) -> list[dict[str, Any]]:
    """The most recent runs, newest first, as plain dicts."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).mappings()
        return [dict(r) for r in rows]


def counts(store: IndexStore) -> dict[str, int]:
    """Photos (live and marked deleted), labels, failed files, boxes and mask classes."""
    live = photos.c.deleted_at.is_(None)
    queries = {
        "photos": select(func.count()).select_from(photos).where(live),
        "deleted": select(func.count()).select_from(photos).where(~live),
        "labels": select(func.count()).select_from(labels),
        "errors": select(func.count()).select_from(errors),
        "objects": select(func.count()).select_from(objects),
        "segments": select(func.count()).select_from(segments),
    }
    with store.engine.connect() as conn:
        return {name: conn.execute(query).scalar_one() for name, query in queries.items()}


def task_coverage(store: IndexStore) -> dict[str, dict[str, int]]:
    """task -> {model: photos it ran on}, from each photo's ``models`` record."""
    query = text(
        "SELECT t.key, substr(t.value, 1, instr(t.value, '@') - 1), count(*) "
        "FROM photos, json_each(photos.models) AS t WHERE photos.deleted_at IS NULL GROUP BY 1, 2"
    )
    coverage: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        for task, model, n in conn.execute(query):
            coverage.setdefault(task, {})[model] = n
    return coverage
