"""Decide what a run must do: which scanned files need the models and which do not.

A file whose path, size and mtime match the index (as a photo or as an error) is
unchanged and skipped without being opened; everything else is decoded again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.records import FileError, ScannedFile


@dataclass
class RunPlan:
    """The work of one run, from the scan and the index."""

    todo: list[ScannedFile] = field(default_factory=list)
    unchanged: int = 0
    scan_errors: list[FileError] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return len(self.todo) + self.unchanged + len(self.scan_errors)


def plan_run(scanned: Iterable[ScannedFile | FileError], known: Mapping[str, tuple[int, int]]) -> RunPlan:
    """Split the scan into files to (re)index, unchanged files and scan errors."""
    plan = RunPlan()
    for item in scanned:
        if isinstance(item, FileError):
            plan.scan_errors.append(item)
        elif known.get(item.path) == (item.size, item.mtime_ns):
            plan.unchanged += 1
        else:
            plan.todo.append(item)
    return plan
