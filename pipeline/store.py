"""The SQLite index, through SQLAlchemy Core: the only module that writes it.

Tables: ``runs`` (one row per `photos index`), ``photos`` (one per indexed file),
``labels`` (photo, label, score, source model), ``errors`` (one per file that failed,
with stage and reason), ``parquet_files`` (the Parquet parts that belong to the index)
and ``label_fts``, an FTS5 table over the distinct label names that search matches words
against (porter stemming, so "dogs" finds "dog"). Detection and segmentation add
``objects`` (one row per box: label, score, box in original-image pixels, area fraction)
and ``segments`` (one row per class present in a photo's mask: pixel fraction, mean
confidence). ``photo_meta`` holds what EXIF says (date taken, camera, GPS and the place
names found for it) and ``photo_places`` one row per folded place name, for search's
date, camera and place filters. ``photos.models`` records which model and weights ran each task on the
photo, which is how a later run knows what to re-run.

The database runs in WAL mode, so `photos search` reads a consistent snapshot while a
nightly run writes; each batch of results is one transaction (:meth:`IndexStore.commit`).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DatabaseError, OperationalError

from pipeline.errors import IndexStoreError
from pipeline.plan import KnownPhoto
from pipeline.records import IndexRow

DB_NAME = "index.sqlite"
SCHEMA_VERSION = 1

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("status", Text, nullable=False),  # running | done | failed | interrupted
    Column("roots", Text, nullable=False),  # JSON list
    Column("models", Text, nullable=False),  # JSON {task: model}
    Column("seen", Integer, nullable=False, default=0),
    Column("indexed", Integer, nullable=False, default=0),  # photos committed by the models
    Column("new", Integer, nullable=False, default=0),
    Column("changed", Integer, nullable=False, default=0),  # new content, or models re-run
    Column("moved", Integer, nullable=False, default=0),
    Column("deleted", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),  # unchanged
    Column("failed", Integer, nullable=False, default=0),
    Column("seconds", Float),
    Column("images_per_s", Float),
)

photos = Table(
    "photos", metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False, unique=True),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("fingerprint", Text, nullable=False),  # finds moved files; see pipeline/fingerprint.py
    Column("models", Text, nullable=False),  # {task: "model@weights file"}: what produced the results
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("indexed_at", Float, nullable=False),
    Column("parquet_file", Text, nullable=False),
    Column("deleted_at", Float),  # set instead of deleting with --keep-deleted
    Index("ix_photos_fingerprint", "fingerprint"),
    Index("ix_photos_parquet_file", "parquet_file"),
)

labels = Table(
    "labels", metadata,
    Column("photo_id", Integer, ForeignKey("photos.id", ondelete="CASCADE"), nullable=False),
    Column("label", Text, nullable=False),
    Column("score", Float, nullable=False),
    Column("source", Text, nullable=False),  # the task: classify | ...
    Column("model", Text, nullable=False),
    Index("ix_labels_label_score", "label", "score"),
    Index("ix_labels_photo", "photo_id"),
)

errors = Table(
    "errors", metadata,
    Column("path", Text, primary_key=True),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("stage", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("at", Float, nullable=False),
)

parquet_files = Table(
    "parquet_files", metadata,
    Column("name", Text, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

label_names = Table("label_names", metadata, Column("label", Text, primary_key=True))

objects = Table(
    "objects", metadata,
    Column("photo_id", Integer, ForeignKey("photos.id", ondelete="CASCADE"), nullable=False),
    Column("label", Text, nullable=False),
    Column("score", Float, nullable=False),
    Column("x1", Float, nullable=False),  # original-image pixels, after EXIF rotation
    Column("y1", Float, nullable=False),
    Column("x2", Float, nullable=False),
    Column("y2", Float, nullable=False),
    Column("area", Float, nullable=False),  # box area / photo area
    Column("model", Text, nullable=False),
    Index("ix_objects_label_score", "label", "score"),
    Index("ix_objects_photo", "photo_id"),
)

segments = Table(
    "segments", metadata,
    Column("photo_id", Integer, ForeignKey("photos.id", ondelete="CASCADE"), nullable=False),
    Column("label", Text, nullable=False),
    Column("fraction", Float, nullable=False),  # of the photo's pixels
    Column("score", Float, nullable=False),  # mean confidence over those pixels
    Column("model", Text, nullable=False),
    Index("ix_segments_label_fraction", "label", "fraction"),
    Index("ix_segments_photo", "photo_id"),
)

# -- photo metadata: date taken, camera, position and place (pipeline/metadata.py) -----------
# One row per photo that has any; deleted with its photo. ``taken`` is the local time the
# camera wrote ("2019-07-14 18:03:22", sortable text), ``taken_offset`` its UTC offset.
photo_meta = Table(
    "photo_meta", metadata,
    Column("photo_id", Integer, ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
    Column("taken", Text),
    Column("taken_offset", Text),
    Column("date_source", Text),  # DateTimeOriginal | DateTimeDigitized | DateTime
    Column("camera", Text),  # make and model as one name: "Apple iPhone 12 Pro"
    Column("lens", Text),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("altitude", Float),
    Column("city", Text),
    Column("region", Text),
    Column("country", Text),
    Index("ix_photo_meta_taken", "taken"),
    Index("ix_photo_meta_position", "latitude", "longitude"),
)

photo_places = Table(
    "photo_places", metadata,
    Column("photo_id", Integer, ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
    Column("name", Text, primary_key=True),  # folded: "lisbon", "portugal" (pipeline/places.py)
    Index("ix_photo_places_name", "name", "photo_id"),
)
# Search reads (photo_id, source, score) of every row of a term's labels; with them in the
# index it never visits the table (benchmarks/search_scale.py: 3.5x faster at 1M photos).
Index("ix_labels_label_cover", labels.c.label, labels.c.photo_id, labels.c.source, labels.c.score)
# -- end of photo metadata ------------------------------------------------------------------

@dataclass(frozen=True)
class PartRewrite:
    """A Parquet part replaced by a new version without some rows (``new`` None: no row left)."""

    old: str
    new: str | None
    rows: int


@dataclass(frozen=True)
class Batch:
    """Everything one commit writes, recorded in one SQLite transaction.

    ``photos``: the ``photos`` columns the pipeline knows (path, size, mtime_ns, width,
    height, fingerprint, models). ``errors``: path, size, mtime_ns, stage and reason.
    ``rows``: the rows the photos add to other tables (labels, objects, segments,
    photo_meta, photo_places: each task's ``index_rows``). ``parquet_name`` is the new
    part holding the photos and ``rewrites`` the parts rewritten without replaced rows;
    all files are written before the commit. Photos of every path in ``superseded`` or
    ``photos`` are replaced; an error row replaces only the path's error row. ``hooks``
    (a task's own tables, e.g. faces: ``ModelWrapper.commit_hook``) run last in the same
    transaction, with the new photos' path -> id.
    """

    photos: Sequence[dict[str, Any]] = ()
    errors: Sequence[dict[str, Any]] = ()
    rows: Sequence[IndexRow] = ()
    parquet_name: str | None = None
    rewrites: Sequence[PartRewrite] = ()
    superseded: Sequence[str] = ()
    hooks: Sequence[Callable[[Any, dict[str, int]], None]] = ()


def table_exists(conn: Any, table: str) -> bool:
    """Whether the index has ``table`` (tables of optional features are made on first use)."""
    return conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t"),
                        {"t": table}).first() is not None


def label_row(path: str, label: str, score: float, source: str, model: str) -> IndexRow:
    """A ``labels`` row: one searchable label of a photo, from ``source`` (a task)."""
    return IndexRow("labels", path, {"label": label, "score": score, "source": source, "model": model})

_FTS_DDL = "CREATE VIRTUAL TABLE IF NOT EXISTS label_fts USING fts5(label, tokenize='porter unicode61')"


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the nightly writer
    # FULL: a commit is on disk when it returns, so SQLite never lists a Parquet part
    # that a power loss took back (one fsync per batch of photos).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class IndexStore:
    """The index database of one index folder."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.engine = engine
        self.path = path

    @classmethod
    def open(cls, index_dir: Path, create: bool = True) -> IndexStore:
        """Open (and with ``create``, make) the index in ``index_dir``.

        Raises :class:`IndexStoreError` when the folder is not writable, the database is
        missing (``create=False``) or is not a SQLite database.
        """
        path = Path(index_dir) / DB_NAME
        try:  # every OS error about the path (too long, a file in the way, no access) is ours
            if not create and not path.exists():
                raise IndexStoreError(f"no index at {index_dir}: run `photos index FOLDER` first")
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(f"sqlite:///{path}")
            event.listen(engine, "connect", _on_connect)
            event.listen(engine, "handle_error", functools.partial(_on_corruption, path))
            store = cls(engine, path)
            if create:
                store._create_schema()
            else:
                store.schema_version()
        except (OSError, ValueError, OperationalError, DatabaseError) as exc:  # ValueError: a NUL byte
            raise IndexStoreError(f"cannot open the index database {path}: {_reason(exc)}") from exc
        return store

    def _create_schema(self) -> None:
        with self.engine.begin() as conn:
            version = conn.execute(text("PRAGMA user_version")).scalar_one()
            if version > SCHEMA_VERSION:
                raise IndexStoreError(
                    f"index {self.path} was written by a newer photos (schema {version}); upgrade photos"
                )
            metadata.create_all(conn)
            conn.execute(text(_FTS_DDL))
            if version != SCHEMA_VERSION:  # an existing index is not written just by opening it
                conn.execute(text(f"PRAGMA user_version = {SCHEMA_VERSION}"))

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(text("PRAGMA user_version")).scalar_one()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------

    def begin_run(self, roots: Sequence[str], models: dict[str, str]) -> int:
        """Record a new run. Runs still marked running were killed: the caller holds the lock."""
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.status == "running").values(status="interrupted"))
            return conn.execute(
                insert(runs).values(
                    started_at=time.time(), status="running",
                    roots=json.dumps(list(roots)), models=json.dumps(models),
                ).returning(runs.c.id)
            ).scalar_one()

    def models_run(self) -> dict[str, set[str]]:
        """task -> the names of the models earlier runs chose for it."""
        used: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for (models,) in conn.execute(select(runs.c.models)):
                for task, name in json.loads(models).items():
                    used.setdefault(task, set()).add(name)
        return used

    def finish_run(self, run_id: int, status: str, **counts: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs).where(runs.c.id == run_id).values(
                    finished_at=time.time(), status=status, **counts
                )
            )

    # -- what is already indexed ----------------------------------------------------------

    def known_photos(self) -> dict[str, KnownPhoto]:
        """path -> what planning needs to know of every indexed photo."""
        with self.engine.connect() as conn:
            return {
                r.path: KnownPhoto(r.size, r.mtime_ns, r.fingerprint, r.models, r.deleted_at is not None)
                for r in conn.execute(select(
                    photos.c.path, photos.c.size, photos.c.mtime_ns, photos.c.fingerprint,
                    photos.c.models, photos.c.deleted_at,
                ))
            }

    def indexed(self, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
        """path -> (the Parquet part holding its row, its stored ``models`` JSON), for those
        of ``paths`` that are indexed; in path order."""
        found: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(paths)):
                query = select(photos.c.path, photos.c.parquet_file, photos.c.models).where(photos.c.path.in_(chunk))
                found.update((path, (part, models)) for path, part, models in conn.execute(query))
        return found

    def known_errors(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every file that failed."""
        with self.engine.connect() as conn:
            return {r.path: (r.size, r.mtime_ns)
                    for r in conn.execute(select(errors.c.path, errors.c.size, errors.c.mtime_ns))}

    def parquet_file_names(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(parquet_files.c.name)).scalars())

    # -- writing ----------------------------------------------------------------------

    def commit(self, run_id: int, batch: Batch) -> None:
        """Record one :class:`Batch` in one transaction."""
        now = time.time()
        replaced = sorted({*batch.superseded, *(r["path"] for r in batch.photos)})
        failed = sorted({r["path"] for r in batch.errors} - set(replaced))
        ids: dict[str, int] = {}
        with self.engine.begin() as conn:
            for rw in batch.rewrites:
                conn.execute(delete(parquet_files).where(parquet_files.c.name == rw.old))
                if rw.new:
                    conn.execute(insert(parquet_files).values(name=rw.new, run_id=run_id, rows=rw.rows, created_at=now))
                    conn.execute(update(photos).where(photos.c.parquet_file == rw.old).values(parquet_file=rw.new))
            for chunk in _chunks(replaced):
                conn.execute(delete(photos).where(photos.c.path.in_(chunk)))
                conn.execute(delete(errors).where(errors.c.path.in_(chunk)))
            for chunk in _chunks(failed):  # a photo that only failed to scan keeps its results
                conn.execute(delete(errors).where(errors.c.path.in_(chunk)))
            if batch.photos:
                inserted = conn.execute(
                    insert(photos).returning(photos.c.id, photos.c.path, sort_by_parameter_order=True),
                    [{**r, "run_id": run_id, "indexed_at": now, "parquet_file": batch.parquet_name}
                     for r in batch.photos],
                )
                ids = {path: id_ for id_, path in inserted}
                self._add_rows(conn, ids, batch.rows)
                conn.execute(insert(parquet_files).values(
                    name=batch.parquet_name, run_id=run_id, rows=len(batch.photos), created_at=now))
            if batch.errors:
                conn.execute(insert(errors), [{**r, "run_id": run_id, "at": now} for r in batch.errors])
            for hook in batch.hooks:
                hook(conn, ids)

    def mark_deleted(self, paths: Sequence[str]) -> None:
        """Keep vanished photos' rows but mark them; search skips them (``--keep-deleted``)."""
        with self.engine.begin() as conn:
            for chunk in _chunks(list(paths)):
                conn.execute(update(photos).where(photos.c.path.in_(chunk)).values(deleted_at=time.time()))

    def forget_errors(self, paths: Sequence[str]) -> None:
        """Drop the error rows of files that no longer exist."""
        with self.engine.begin() as conn:
            for chunk in _chunks(list(paths)):
                conn.execute(delete(errors).where(errors.c.path.in_(chunk)))

    def parts_holding(self, paths: Iterable[str]) -> dict[str, list[str]]:
        """Parquet part name -> the given paths whose rows it holds."""
        return by_part(self.indexed(paths))

    @classmethod
    def _add_rows(cls, conn, ids: dict[str, int], rows: Sequence[IndexRow]) -> None:
        by_table: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_table.setdefault(row.table, []).append({**row.values, "photo_id": ids[row.path]})
        for name, values in by_table.items():
            if name not in metadata.tables:
                raise ValueError(f"no table {name!r} in the index schema")
            conn.execute(insert(metadata.tables[name]), values)
        if "labels" in by_table:
            cls._add_label_names(conn, {v["label"] for v in by_table["labels"]})

    @staticmethod
    def _add_label_names(conn, names: set[str]) -> None:
        existing = set(conn.execute(select(label_names.c.label).where(label_names.c.label.in_(names))).scalars())
        new = sorted(names - existing)
        if new:
            conn.execute(insert(label_names), [{"label": n} for n in new])
            conn.execute(text("INSERT INTO label_fts(label) VALUES (:label)"), [{"label": n} for n in new])

def by_part(indexed: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """:meth:`IndexStore.indexed`'s answer as Parquet part name -> the paths it holds."""
    held: dict[str, list[str]] = {}
    for path, (part, _models) in indexed.items():
        held.setdefault(part, []).append(path)
    return held


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    """Slices small enough for SQLite's limit on bound parameters."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _on_corruption(path: Path, context: ExceptionContext) -> None:
    """A damaged page surfaces at whichever query reads it, long after :meth:`IndexStore.open`:
    translate it there too, so every command says the same thing instead of a traceback."""
    message = str(context.original_exception)
    if "malformed" in message or "not a database" in message:
        raise IndexStoreError(f"cannot read the index database {path}: {_reason(context.original_exception)}")


def _reason(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", exc))
    if "not a database" in message or "malformed" in message:
        return f"{message} (the file is corrupt; move it away and run `photos index` again to rebuild)"
    return message
