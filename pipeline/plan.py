"""Decide what a run must do, from the scan and what the index already holds.

For each scanned file:

- same path, size and mtime, and every selected task done by the selected model and
  weights: **unchanged**, never opened;
- same path, size and mtime, but a task missing or done by another model or weights
  version: **re-run** only those tasks;
- same path, other size or mtime: **changed**, indexed again from scratch;
- new path whose content fingerprint matches an indexed photo that vanished under the
  scanned roots: **moved**, results kept (tasks re-run only if models changed);
- any other new path: **new**;
- an indexed photo under the scanned roots that the scan did not see: **deleted**.

A file that failed before with the same size and mtime is skipped unless
``retry_errors``: it would fail the same way.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pipeline.records import FileError, ScannedFile


@dataclass(frozen=True)
class KnownPhoto:
    """What the index holds about one photo, as far as planning needs."""

    size: int
    mtime_ns: int
    fingerprint: str
    models: str  # JSON {task: "model@weights file"}
    deleted: bool = False


@dataclass(frozen=True)
class WorkItem:
    """One file to commit: the tasks to run on it, and the indexed path it updates."""

    file: ScannedFile
    tasks: tuple[str, ...]
    previous_path: str | None = None


@dataclass
class RunPlan:
    """The work of one run."""

    todo: list[WorkItem] = field(default_factory=list)  # through the models
    moves: list[WorkItem] = field(default_factory=list)  # results kept, no model to run
    deleted: list[str] = field(default_factory=list)
    vanished_errors: list[str] = field(default_factory=list)  # failed files that are gone
    scan_errors: list[FileError] = field(default_factory=list)
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    rerun: int = 0
    moved_rerun: int = 0  # moved, and a task to re-run with a new model: in ``todo``

    @property
    def moved(self) -> int:
        """Moved photos: those that only moved and those that moved and need a model re-run."""
        return len(self.moves) + self.moved_rerun

    @property
    def seen(self) -> int:
        return len(self.todo) + len(self.moves) + self.unchanged + len(self.scan_errors)


@functools.lru_cache(maxsize=1024)
def _done(models_json: str) -> dict[str, str]:
    return json.loads(models_json)


def tasks_to_run(models_json: str, wanted: Mapping[str, str]) -> tuple[str, ...]:
    """The selected tasks whose stored model key differs from the wanted one."""
    done = _done(models_json)
    return tuple(task for task, key in wanted.items() if done.get(task) != key)


def under_roots(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def plan_run(
    scanned: Iterable[ScannedFile | FileError],
    known: Mapping[str, KnownPhoto],
    known_errors: Mapping[str, tuple[int, int]],
    wanted: Mapping[str, str],
    roots: Sequence[str],
    *,
    retry_errors: bool = False,
    keep_deleted: bool = False,
    fingerprint_of: Callable[[str], str] | None = None,
    threads: int = 8,
) -> RunPlan:
    """Split the scan into work items, moves, deletions and unchanged files.

    ``wanted`` maps each selected task to its model key ("model@weights file").
    ``fingerprint_of`` is only called for new files, and only when some indexed photo
    vanished (a move is possible).

    Nothing is deleted under a folder the scan could not list, nor under a root where
    the scan found nothing although photos are indexed there (an unmounted drive looks
    like an empty folder): both are reported as scan errors instead. A scan error seen
    before is not reported again, so one broken link does not fail every night's run.
    """
    plan = RunPlan()
    all_tasks = tuple(wanted)
    seen: set[str] = set()
    unlisted: list[str] = []
    new_files: list[ScannedFile] = []
    for item in scanned:
        seen.add(item.path)
        if isinstance(item, FileError):
            if item.folder:
                unlisted.append(item.path)
            if item.path in known_errors and not retry_errors:
                plan.unchanged += 1
            else:
                plan.scan_errors.append(item)
            continue
        photo = known.get(item.path)
        failed_before = known_errors.get(item.path) == (item.size, item.mtime_ns) and not retry_errors
        if photo is not None and (photo.size, photo.mtime_ns) == (item.size, item.mtime_ns) and not photo.deleted:
            missing = tasks_to_run(photo.models, wanted)
            if missing and not failed_before:
                plan.todo.append(WorkItem(item, missing, previous_path=item.path))
                plan.rerun += 1
            else:
                plan.unchanged += 1
        elif photo is not None:
            plan.todo.append(WorkItem(item, all_tasks))
            plan.changed += 1
        elif failed_before:
            plan.unchanged += 1
        else:
            new_files.append(item)
    for root in roots:
        indexed_here = sum(1 for p in known if under_roots(p, [root]))
        if indexed_here and not any(under_roots(p, [root]) for p in seen):
            unlisted.append(root)
            plan.scan_errors.append(FileError(root, "scan", (
                f"no photos found, but {indexed_here} are indexed under this folder; kept them "
                "(is a drive or share not mounted?)"), folder=True))
    vanished = [p for p, photo in known.items()
                if p not in seen and under_roots(p, roots) and not under_roots(p, unlisted)
                and not (photo.deleted and keep_deleted)]
    plan.vanished_errors = [p for p in known_errors
                            if p not in seen and under_roots(p, roots) and not under_roots(p, unlisted)]
    by_fingerprint = {known[p].fingerprint: p for p in vanished}
    if by_fingerprint and new_files and fingerprint_of is not None:
        with ThreadPoolExecutor(threads) as pool:
            prints = list(pool.map(lambda f: _safe(fingerprint_of, f.path), new_files))
        remaining, moved = [], set()
        for item, print_ in zip(new_files, prints):
            old = by_fingerprint.pop(print_, None) if print_ else None
            if old is None:
                remaining.append(item)
                continue
            moved.add(old)
            missing = tasks_to_run(known[old].models, wanted)
            (plan.todo if missing else plan.moves).append(WorkItem(item, missing, previous_path=old))
            plan.moved_rerun += bool(missing)
        new_files = remaining
        vanished = [p for p in vanished if p not in moved]
    plan.deleted = sorted(vanished)
    plan.todo.extend(WorkItem(f, all_tasks) for f in new_files)
    plan.new = len(new_files)
    return plan


def _safe(fingerprint_of: Callable[[str], str], path: str) -> str | None:
    try:
        return fingerprint_of(path)
    except OSError:
        return None  # unreadable now: indexed as new, and decode will say why
