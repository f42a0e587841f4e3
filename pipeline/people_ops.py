"""What `photos people ...` does, over the faces and people tables (``pipeline/people_store.py``).

Every change is one transaction, and every change that touches names or membership
rewrites the affected photos' ``people`` label rows in the same transaction, so search
never sees a half-applied rename or merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, text, update

from pipeline.errors import QueryError
from pipeline.people import GroupingSettings, group_new
from pipeline.people_scrub import scrub_embeddings
from pipeline.people_store import (
    ensure_tables,
    face_rejections,
    faces,
    from_blob,
    new_person,
    people,
    refresh_labels,
    set_person,
)
from pipeline.store import IndexStore, photos, table_exists


@dataclass(frozen=True)
class PersonSummary:
    id: int
    name: str | None
    faces: int
    photos: int
    sample: str  # a photo path: the one with this person's best-scored face


@dataclass
class GroupReport:
    """What a grouping pass did, and the faces it could not use (one line each)."""

    assigned: int = 0
    new_people: int = 0
    new_faces: int = 0
    unassigned: int = 0
    problems: list[str] = field(default_factory=list)


DEFAULT_GROUPING = GroupingSettings()


def regroup(store: IndexStore, settings: GroupingSettings = DEFAULT_GROUPING) -> GroupReport:
    """The nightly pass: new faces join people, leftovers form new people (``pipeline/people.py``).

    A face whose stored embedding is unreadable (wrong length, NaN, not a float16 blob) is
    skipped with one problem line; the pass goes on.
    """
    ensure_tables(store)
    report = GroupReport()
    with store.engine.begin() as conn:
        dims = _common_dimension(conn)
        # Streamed: faces with a person only add to their person's sum, so memory is one
        # vector per person plus the faces without one, not the whole index.
        sums: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        free_ids: list[int] = []
        free_vectors: list[np.ndarray] = []
        query = (select(faces.c.id, faces.c.embedding, faces.c.person_id)
                 .where(faces.c.state != "forgotten").order_by(faces.c.id))
        for r in conn.execution_options(yield_per=10_000).execute(query):
            vector = from_blob(r.embedding)
            if vector is None or len(vector) != dims:
                report.problems.append(f"face {r.id}: unreadable embedding in the index; skipped "
                                       "(re-index its photo to recompute it)")
                continue
            vector /= np.linalg.norm(vector)
            if r.person_id is None:
                free_ids.append(r.id)
                free_vectors.append(vector)
            else:
                sums[r.person_id] = sums.get(r.person_id, 0) + vector.astype(np.float64)
                counts[r.person_id] = counts.get(r.person_id, 0) + 1
        if not free_ids:
            return report
        person_ids = np.array(sorted(sums), np.int64)
        means = (np.stack([sums[p] / counts[p] for p in person_ids]).astype(np.float32) if len(person_ids)
                 else np.zeros((0, dims), np.float32))
        position = {fid: i for i, fid in enumerate(free_ids)}
        rejected: dict[int, set[int]] = {}
        for fid, pid in conn.execute(select(face_rejections.c.face_id, face_rejections.c.person_id)):
            if fid in position:
                rejected.setdefault(position[fid], set()).add(pid)
        result = group_new(np.stack(free_vectors), person_ids, means, settings, rejected)
        by_person: dict[int, list[int]] = {}
        for i, pid in result.assigned.items():
            by_person.setdefault(pid, []).append(free_ids[i])
        for pid, face_ids in by_person.items():
            set_person(conn, face_ids, pid)
        for members in result.new_people:
            set_person(conn, [free_ids[i] for i in members], new_person(conn))
        report.assigned = len(result.assigned)
        report.new_people = len(result.new_people)
        report.new_faces = sum(len(m) for m in result.new_people)
        report.unassigned = len(free_ids) - report.assigned - report.new_faces
        refresh_labels(conn)
    return report


def _common_dimension(conn: Connection) -> int:
    """The embedding length most faces have (a corrupt row is the odd one out)."""
    length = func.length(faces.c.embedding)
    row = conn.execute(select(length, func.count()).where(faces.c.embedding.is_not(None))
                       .group_by(length).order_by(func.count().desc()).limit(1)).first()
    return int(row[0]) // 2 if row else 0


def list_people(store: IndexStore) -> list[PersonSummary]:
    """Every person with at least one face, most photos first."""
    ensure_tables(store)
    query = (select(people.c.id, people.c.name, func.count(faces.c.id).label("faces"),
                    func.count(func.distinct(faces.c.path)).label("photos"))
             .select_from(people.join(faces, faces.c.person_id == people.c.id))
             .group_by(people.c.id))
    with store.engine.connect() as conn:
        found = conn.execute(query).all()
        samples = dict(conn.execute(
            select(faces.c.person_id, faces.c.path).where(faces.c.person_id.is_not(None))
            .order_by(faces.c.person_id, faces.c.score.desc(), faces.c.id.desc())).all())
    out = [PersonSummary(r.id, r.name, r.faces, r.photos, samples.get(r.id, "")) for r in found]
    return sorted(out, key=lambda p: (-p.photos, -p.faces, p.id))


def _person(conn: Connection, person_id: int) -> dict:
    row = conn.execute(select(people).where(people.c.id == person_id)).mappings().first()
    if row is None:
        raise QueryError(f"no person with id {person_id}; `photos people` lists them")
    return dict(row)


def name_person(store: IndexStore, person_id: int, name: str) -> None:
    """Give person ``person_id`` a name (unique, case-insensitively); names become search words."""
    ensure_tables(store)
    name = " ".join(name.split())
    if not name:
        raise QueryError("a name needs at least one visible character")
    with store.engine.begin() as conn:
        _person(conn, person_id)
        other = conn.execute(select(people.c.id).where(func.lower(people.c.name) == name.lower(),
                                                       people.c.id != person_id)).scalar()
        if other is not None:
            raise QueryError(f"{name!r} is already person {other}; use `photos people merge {other} {person_id}` "
                             "if they are the same person")
        if table_exists(conn, "custom_heads") and conn.execute(  # a search word already: both would match it
                text("SELECT 1 FROM custom_heads WHERE name = :n"), {"n": " ".join(name.lower().split())}).first():
            raise QueryError(f"{name!r} is a custom label (`photos labels`); choose another name")
        conn.execute(update(people).where(people.c.id == person_id).values(name=name))
        refresh_labels(conn, _photo_ids_of(conn, person_id))


def merge_people(store: IndexStore, keep_id: int, other_id: int) -> None:
    """Move every face of ``other_id`` to ``keep_id`` and delete ``other_id``.

    The kept person keeps its name; if only the other had one, the name moves with it.
    """
    ensure_tables(store)
    if keep_id == other_id:
        raise QueryError("give two different people to merge")
    with store.engine.begin() as conn:
        keep, other = _person(conn, keep_id), _person(conn, other_id)
        affected = _photo_ids_of(conn, other_id)
        conn.execute(update(faces).where(faces.c.person_id == other_id).values(person_id=keep_id))
        conn.execute(update(face_rejections).where(face_rejections.c.person_id == other_id)
                     .values(person_id=keep_id).prefix_with("OR IGNORE"))
        conn.execute(delete(face_rejections).where(face_rejections.c.person_id == other_id))
        conn.execute(delete(people).where(people.c.id == other_id))
        if keep["name"] is None and other["name"] is not None:
            conn.execute(update(people).where(people.c.id == keep_id).values(name=other["name"]))
        refresh_labels(conn, affected + _photo_ids_of(conn, keep_id))


def remove_face(store: IndexStore, face_id: int) -> int:
    """"This face is not X": take it out of its person and never group it there again.
    Returns the person it left."""
    ensure_tables(store)
    with store.engine.begin() as conn:
        row = conn.execute(select(faces.c.person_id, faces.c.path).where(faces.c.id == face_id)).first()
        if row is None:
            raise QueryError(f"no face with id {face_id}; `photos people show ID` prints face ids")
        if row.person_id is None:
            raise QueryError(f"face {face_id} belongs to nobody")
        conn.execute(insert(face_rejections).prefix_with("OR IGNORE").values(face_id=face_id, person_id=row.person_id))
        conn.execute(update(faces).where(faces.c.id == face_id).values(person_id=None, state="auto"))
        refresh_labels(conn, _photo_ids(conn, [row.path]))
        return int(row.person_id)


def forget_person(store: IndexStore, person_id: int, index_dir: Path | None = None) -> int:
    """Delete a person's name and its faces' embeddings; those faces are never grouped again
    (until :func:`unforget_faces`). With ``index_dir`` (the caller holds the index lock) the
    embeddings are removed from the Parquet parts too. Returns how many faces were forgotten."""
    ensure_tables(store)
    with store.engine.begin() as conn:
        _person(conn, person_id)
        affected = _photo_ids_of(conn, person_id)
        positions = [(r.path, r.n) for r in conn.execute(select(faces.c.path, faces.c.n)
                                                          .where(faces.c.person_id == person_id))]
        n = conn.execute(update(faces).where(faces.c.person_id == person_id)
                         .values(person_id=None, embedding=None, state="forgotten")).rowcount
        conn.execute(delete(face_rejections).where(face_rejections.c.person_id == person_id))
        conn.execute(delete(people).where(people.c.id == person_id))
        refresh_labels(conn, affected)
    if index_dir is not None:
        scrub_embeddings(store, index_dir, positions)
    return int(n)


def unforget_faces(store: IndexStore) -> int:
    """Let forgotten faces be grouped again once their photos are re-indexed (they have no
    embedding until then). Returns how many faces were released."""
    ensure_tables(store)
    with store.engine.begin() as conn:
        return int(conn.execute(update(faces).where(faces.c.state == "forgotten").values(state="auto")).rowcount)


@dataclass(frozen=True)
class FaceRow:
    id: int
    path: str
    box: tuple[float, float, float, float]
    score: float


def faces_of(store: IndexStore, person_id: int, limit: int = 200) -> list[FaceRow]:
    """A person's faces, best first."""
    ensure_tables(store)
    with store.engine.connect() as conn:
        _person(conn, person_id)
        rows = conn.execute(select(faces.c.id, faces.c.path, faces.c.x1, faces.c.y1, faces.c.x2, faces.c.y2,
                                   faces.c.score).where(faces.c.person_id == person_id)
                            .order_by(faces.c.score.desc(), faces.c.id).limit(limit)).all()
    return [FaceRow(r.id, r.path, (r.x1, r.y1, r.x2, r.y2), r.score) for r in rows]


def faces_in_photo(store: IndexStore, path: str) -> list[tuple[tuple[float, float, float, float], str | None]]:
    """(box, person name or None) of each face of the photo at index path ``path``."""
    ensure_tables(store)
    with store.engine.connect() as conn:
        rows = conn.execute(select(faces.c.x1, faces.c.y1, faces.c.x2, faces.c.y2, people.c.name, faces.c.person_id)
                            .select_from(faces.outerjoin(people, people.c.id == faces.c.person_id))
                            .where(faces.c.path == path).order_by(faces.c.n)).all()
    return [((r.x1, r.y1, r.x2, r.y2), r.name or (f"person {r.person_id}" if r.person_id else None)) for r in rows]


def _photo_ids_of(conn: Connection, person_id: int) -> list[int]:
    return list(conn.execute(select(photos.c.id).distinct()
                             .select_from(faces.join(photos, photos.c.path == faces.c.path))
                             .where(faces.c.person_id == person_id)).scalars())


def _photo_ids(conn: Connection, paths: Sequence[str]) -> list[int]:
    return list(conn.execute(select(photos.c.id).where(photos.c.path.in_(list(paths)))).scalars())
