"""Plain records that flow between the pipeline's stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScannedFile:
    """A candidate photo found by the scan: identity for incremental runs is (path, size, mtime)."""

    path: str  # index text: see pipeline/pathnames.py
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileError:
    """A file that could not be indexed, and why; stored as an error row, never raised.

    ``folder`` marks a folder that could not be listed: what the index holds under it
    is kept, since the scan could not see whether those photos are still there.
    """

    path: str
    stage: str
    reason: str
    folder: bool = False


@dataclass(frozen=True)
class IndexRow:
    """One row a photo's record adds to a SQLite table (``labels``, ``objects``, ...).

    ``values`` are the table's columns but ``photo_id``, which the store fills in from
    ``path`` inside the commit that inserts the photo.
    """

    table: str
    path: str
    values: dict[str, Any]
