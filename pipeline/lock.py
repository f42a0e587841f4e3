"""One writer per index: a lock file that a crashed run cannot leave stuck.

``filelock`` takes an OS-level lock (``flock``) on ``<index>/index.lock``; the kernel drops
it when the holding process dies, even by ``kill -9``, so no stale-lock cleanup exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.errors import IndexLockedError, IndexStoreError

LOCK_NAME = "index.lock"


@contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index's writer lock, or raise :class:`IndexLockedError` at once."""
    try:
        Path(index_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndexStoreError(f"cannot create the index folder {index_dir}: {exc.strerror}") from exc
    lock = FileLock(str(Path(index_dir) / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise IndexLockedError(
            f"another `photos index` is writing to {index_dir}; wait for it to finish "
            "(searching during a run is fine)"
        ) from exc
    except OSError as exc:
        raise IndexStoreError(f"cannot lock the index folder {index_dir}: {exc.strerror}") from exc
    try:
        yield
    finally:
        lock.release()
