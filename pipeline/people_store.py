"""The faces and people tables of the SQLite index, and every write to them.

Tables (their own ``MetaData``, created in the index database on first use):

- ``people``: id (never reused: AUTOINCREMENT), name (unique, case-insensitively; null
  until someone names the person), created_at.
- ``faces``: id (never reused), path (the photo, as ``photos.path``), n (the face's
  position in the photo's Parquet ``faces`` list), box x1..y2 in photo pixels, score,
  blur, embedding (float16 little-endian blob; null once forgotten), person_id, state
  (``auto`` | ``confirmed`` | ``forgotten``).
- ``face_rejections``: (face_id, person_id) pairs from `photos people remove-face`:
  grouping never puts that face back into that person.

Named people are also label rows (source ``people``, score 1) of the photos their faces
are in, so a name is a search word like any label and combines with all of them.

Rows of a photo are replaced whenever the writer replaces the photo (:func:`face_hook`,
run inside the writer's transaction). A face that comes back with the same embedding
(the photo moved, or was re-indexed by the same models) keeps its id, person, state
and rejections, so names and corrections survive re-indexing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)

from pipeline.errors import QueryError
from pipeline.store import IndexStore, labels, photos

metadata = MetaData()

people = Table(
    "people", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text),
    Column("created_at", Float, nullable=False),
    sqlite_autoincrement=True,
)
Index("ux_people_name", func.lower(people.c.name), unique=True)

faces = Table(
    "faces", metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("n", Integer, nullable=False),
    Column("x1", Float, nullable=False),
    Column("y1", Float, nullable=False),
    Column("x2", Float, nullable=False),
    Column("y2", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("blur", Float, nullable=False),
    Column("embedding", LargeBinary),
    Column("person_id", Integer, ForeignKey("people.id", ondelete="SET NULL")),
    Column("state", Text, nullable=False, default="auto"),
    Index("ix_faces_path", "path"),
    Index("ix_faces_person", "person_id"),
    sqlite_autoincrement=True,
)

face_rejections = Table(
    "face_rejections", metadata,
    Column("face_id", Integer, ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True),
    Column("person_id", Integer, primary_key=True),
)

PEOPLE_SOURCE = "people"
"""``labels.source`` (and ``model``) of the rows that make names searchable."""
SAME_FACE = 0.98
"""Cosine similarity above which a re-indexed face is the same face as before."""


def ensure_tables(store: IndexStore) -> None:
    """Create the tables in ``store`` if missing (cheap; every entry point calls it)."""
    metadata.create_all(store.engine)


def to_blob(vector: Sequence[float] | np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f2").tobytes()


def from_blob(blob: bytes | None) -> np.ndarray | None:
    """The embedding of a blob, or None when it is missing, misshapen or not finite."""
    if not blob or len(blob) % 2:
        return None
    vector = np.frombuffer(blob, dtype="<f2").astype(np.float32)
    if not np.all(np.isfinite(vector)) or not np.linalg.norm(vector) > 0:
        return None
    return vector


@dataclass(frozen=True)
class _OldFace:
    id: int
    path: str
    box: tuple[float, float, float, float]
    embedding: np.ndarray | None
    person_id: int | None
    state: str


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_hook(records: Sequence[dict[str, Any]], superseded: Iterable[str],
              previous_paths: Mapping[str, str] | None = None) -> Callable[[Connection, Mapping[str, int]], None]:
    """What the writer runs inside its commit: replace the faces of ``superseded`` photos
    with those of ``records`` and refresh their people labels.

    ``previous_paths``: a record's path -> the path it had before (moves), for matching
    forgotten faces, which have no embedding left to match by.
    """
    superseded = sorted(set(superseded))
    moved_from = dict(previous_paths or {})

    def run(conn: Connection, ids: Mapping[str, int]) -> None:
        metadata.create_all(conn)
        old: list[_OldFace] = []
        for i in range(0, len(superseded), 500):
            chunk = superseded[i:i + 500]
            for r in conn.execute(select(faces).where(faces.c.path.in_(chunk))):
                old.append(_OldFace(r.id, r.path, (r.x1, r.y1, r.x2, r.y2), from_blob(r.embedding),
                                    r.person_id, r.state))
            conn.execute(delete(faces).where(faces.c.path.in_(chunk)))
        taken: set[int] = set()
        rows = []
        for record in records:
            for n, face in enumerate(record.get("faces") or ()):
                box = (face["x1"], face["y1"], face["x2"], face["y2"])
                vector = np.asarray(face["embedding"], np.float32)
                match = _match(old, taken, record["path"], moved_from.get(record["path"]), box, vector)
                row = {"path": record["path"], "n": n, "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
                       "score": face["score"], "blur": face["blur"], "embedding": to_blob(vector),
                       "person_id": None, "state": "auto"}
                if match is not None:
                    taken.add(match.id)
                    row.update(id=match.id, person_id=match.person_id, state=match.state)
                    if match.state == "forgotten":
                        row.update(embedding=None, person_id=None)
                rows.append(row)
        gone = [f.id for f in old if f.id not in taken]
        for i in range(0, len(gone), 500):
            conn.execute(delete(face_rejections).where(face_rejections.c.face_id.in_(gone[i:i + 500])))
        for row in rows:  # one at a time: some carry their old id, some get a new one
            conn.execute(insert(faces).values(**row))
        refresh_labels(conn, [ids[r["path"]] for r in records if r["path"] in ids])

    return run


def _match(old: Sequence[_OldFace], taken: set[int], path: str, previous: str | None,
           box: tuple[float, ...], vector: np.ndarray) -> _OldFace | None:
    best, best_sim = None, SAME_FACE
    for face in old:
        if face.id in taken:
            continue
        if face.embedding is not None and len(face.embedding) == len(vector):
            sim = float(face.embedding @ vector / (np.linalg.norm(face.embedding) * np.linalg.norm(vector) or 1))
            if sim >= best_sim:
                best, best_sim = face, sim
        elif face.embedding is None and face.path in (path, previous) and _iou(face.box, box) >= 0.5:
            return face
    return best


def refresh_labels(conn: Connection, photo_ids: Sequence[int] | None = None) -> None:
    """Rewrite the ``people`` label rows of ``photo_ids`` (None: of every photo)."""
    where = labels.c.source == PEOPLE_SOURCE
    chunks = [None] if photo_ids is None else [list(photo_ids)[i:i + 500] for i in range(0, len(photo_ids), 500)]
    for chunk in chunks:
        cond = where if chunk is None else and_(where, labels.c.photo_id.in_(chunk))
        conn.execute(delete(labels).where(cond))
        query = (select(photos.c.id, people.c.name).distinct()
                 .select_from(faces.join(photos, photos.c.path == faces.c.path)
                              .join(people, people.c.id == faces.c.person_id))
                 .where(people.c.name.is_not(None)))
        if chunk is not None:
            query = query.where(photos.c.id.in_(chunk))
        found = conn.execute(query).all()
        if found:
            conn.execute(insert(labels), [{"photo_id": pid, "label": name, "score": 1.0,
                                           "source": PEOPLE_SOURCE, "model": PEOPLE_SOURCE} for pid, name in found])
            IndexStore._add_label_names(conn, {name for _, name in found})


def new_person(conn: Connection, name: str | None = None) -> int:
    return int(conn.execute(insert(people).values(name=name, created_at=time.time())
                            .returning(people.c.id)).scalar_one())


def set_person(conn: Connection, face_ids: Sequence[int], person_id: int | None) -> None:
    for i in range(0, len(face_ids), 500):
        conn.execute(update(faces).where(faces.c.id.in_(list(face_ids[i:i + 500]))).values(person_id=person_id))


def person_named(store: IndexStore, name: str) -> int:
    """The id of the person called ``name`` (case-insensitive); :class:`QueryError` if none."""
    ensure_tables(store)
    with store.engine.connect() as conn:
        pid = conn.execute(select(people.c.id).where(func.lower(people.c.name) == " ".join(name.split()).lower())).scalar()
    if pid is None:
        raise QueryError(f"nobody is named {name!r}; `photos people` lists the people and their names")
    return int(pid)
