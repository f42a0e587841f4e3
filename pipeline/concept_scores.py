"""Per-concept scores: a search word's term score for each photo, written at index time.

Search scores a term per photo as the best source's sum of the term's label scores, capped
at 1 (:mod:`pipeline.search`). For a broad word that sum runs over many label rows ("dog"
is 119 labels, "animal" 407, "retriever" 5 breeds): at a million photos, summing every
match per query took 0.1-1 s. So the writer also stores the sum once per photo for each
*concept*: a label set that a one-word search stands for (:func:`concept_sets`):

- the set of every vocabulary word ("dog": the breeds and "dog"; ``vocabulary.json``);
- the set a word of the labels' names finds by full text when it finds several labels
  ("retriever": golden, Labrador, ...; "terrier": 18 breeds).

A term whose labels are exactly a stored concept's reads its scores, best first, from
``ix_concept_scores_rank`` (:mod:`pipeline.search_ranked`); any other term sums label
rows as before. Concepts are keyed by their label set, so when the labels a word finds
change (a new model, a vocabulary edit) the word no longer finds its old concept, and
search sums rows until the next `photos index` stores the new set.

Tables, created on first use in their own metadata (an index without them still works):

- ``concepts``: one row per label set; ``labels``, its sorted JSON list, is the key;
  ``photos`` about how many photos have a score (search starts from the rarest word);
- ``concept_labels``: (label, concept) pairs, to sum a photo's labels per concept in SQL;
- ``concept_scores``: (photo, concept) -> score, deleted with the photo; ``mask`` has two
  bits set for every concept the photo has a row for (:data:`MASK_BITS`; the same on each of
  the photo's rows), so a search for "dog beach" reads "dog"'s ranking and skips, without a
  lookup, the photos that have no "beach" row;
- ``concept_state``: ``covered_through``, the highest photo id scored. A photo above it
  was committed without the writer's hook (by an older photos, or a caller of
  ``IndexStore.commit`` alone), and search then sums label rows until the next run;
  ``label_names``, how many label names there were when the concepts were made.

Rows of the ``people`` and ``custom`` sources are left out: they change outside the
writer (naming a person, training a label). A person or custom label named like one of a
concept's labels (a person called "dog") is rare, and search checks for it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from pipeline import vocabulary
from pipeline.store import IndexStore, label_names, photos

OUTSIDE_WRITER = ("people", "custom")
"""Label sources written outside the writer (people_store.PEOPLE_SOURCE, custom_labels.SOURCE)."""
TABLES = ("concepts", "concept_labels", "concept_scores", "concept_state")
MASK_BITS = (63, 61)
"""``mask`` is a Bloom filter: concept c sets bits c % 63 and (29c + 7) % 61 (0-62, so it
stays a positive SQLite integer). ~270 concepts share them; with ~5 concepts a photo, 2
hashes let through a third as many photos without the concept as one would (measured)."""
STORED_MIN = 0.05
"""Scores below this are not stored (a fifth of the rows: top-5 tails). It is search's
default ``min_score``; a search with a lower one sums label rows."""
_WORD = re.compile(r"\w+", re.UNICODE)

_metadata = MetaData()
concepts = Table(
    "concepts", _metadata,
    Column("id", Integer, primary_key=True),
    Column("labels", Text, nullable=False, unique=True),  # JSON, sorted: the key
    Column("photos", Integer, nullable=False, default=0),  # rows it has (photos deleted since still count)
)
concept_labels = Table(
    "concept_labels", _metadata,
    Column("label", Text, primary_key=True),
    Column("concept_id", Integer, ForeignKey(concepts.c.id, ondelete="CASCADE"), primary_key=True),
    sqlite_with_rowid=False,
)
concept_scores = Table(
    "concept_scores", _metadata,
    Column("photo_id", Integer, ForeignKey(photos.c.id, ondelete="CASCADE"), primary_key=True),
    Column("concept_id", Integer, ForeignKey(concepts.c.id, ondelete="CASCADE"), primary_key=True),
    Column("score", Float, nullable=False),
    Column("mask", Integer, nullable=False),
    sqlite_with_rowid=False,
)
# Best first within a concept, with the mask, so a search reads the ranking without the table.
Index("ix_concept_scores_rank", concept_scores.c.concept_id, concept_scores.c.score.desc(), concept_scores.c.mask)
concept_state = Table(
    "concept_state", _metadata,
    Column("id", Integer, primary_key=True),  # a single row, id 1
    Column("covered_through", Integer, nullable=False),
    Column("label_names", Integer, nullable=False),  # label names the concepts were last made from
)
log = logging.getLogger(__name__)

# A photo's concept scores and mask, for the photos ``photo_filter`` names: the same sum as
# pipeline.search_ranked.summed_scores, per concept. ``concept_filter`` limits the concepts.
_SCORE_SQL = """
WITH per_source AS (
    SELECT labels.photo_id AS photo_id, concept_labels.concept_id AS concept_id,
           min(1.0, sum(labels.score)) AS s
    FROM labels JOIN concept_labels ON concept_labels.label = labels.label
    WHERE {photo_filter} AND {concept_filter} AND labels.source NOT IN """ + repr(OUTSIDE_WRITER) + """
    GROUP BY labels.photo_id, concept_labels.concept_id, labels.source),
best AS (SELECT photo_id, concept_id, max(s) AS score FROM per_source GROUP BY photo_id, concept_id
        HAVING max(s) >= {stored_min}),
bits AS (SELECT photo_id, sum(DISTINCT bit) AS mask FROM (
        SELECT photo_id, 1 << (concept_id % 63) AS bit FROM best
        UNION ALL SELECT photo_id, 1 << ((29 * concept_id + 7) % 61) FROM best) GROUP BY photo_id)
INSERT INTO concept_scores (photo_id, concept_id, score, mask)
SELECT best.photo_id, best.concept_id, best.score, bits.mask FROM best JOIN bits ON bits.photo_id = best.photo_id
"""


def key_of(label_set: Collection[str]) -> str:
    return json.dumps(sorted(label_set), ensure_ascii=False)


def bits_of(concept_id: int) -> int:
    """The concept's bits in ``mask`` (the SQL in :data:`_SCORE_SQL` sets the same)."""
    return (1 << (concept_id % MASK_BITS[0])) | (1 << ((29 * concept_id + 7) % MASK_BITS[1]))


def concept_sets(conn: Connection) -> dict[str, frozenset[str]]:
    """key -> label set: every vocabulary word's, and each word of the index's label names
    that finds two labels or more by full text (as :func:`pipeline.search.matching_labels` does)."""
    sets = [vocabulary.expand(word) for word in vocabulary.words()]
    names = conn.execute(text("SELECT label FROM label_names")).scalars().all()
    for word in sorted({w.lower() for name in names for w in _WORD.findall(name)}):
        found = conn.execute(text("SELECT label FROM label_fts WHERE label_fts MATCH :q"),
                             {"q": '"' + word + '"'}).scalars().all()
        if len(found) > 1:
            sets.append(frozenset(found))
    return {key_of(s): s for s in sets if s}


def has_tables(conn: Connection) -> bool:
    names = set(conn.execute(text(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
        "('concepts', 'concept_labels', 'concept_scores', 'concept_state')")).scalars())
    return names == set(TABLES)


def ensure_concept_scores(store: IndexStore) -> int:
    """Create and fill the tables, or bring them up to date (at the start of each run).

    Returns how many photos were scored: all of them the first time an index built before
    these tables is opened (about a minute per million photos), none when nothing changed.
    """
    with store.engine.begin() as conn:
        return sync(conn)


def sync(conn: Connection) -> int:
    """:func:`ensure_concept_scores` inside a transaction the caller holds."""
    _metadata.create_all(conn)
    new_ids = _sync_concepts(conn)
    covered = conn.execute(select(concept_state.c.covered_through)).scalar()
    first = covered or 0
    top = conn.execute(select(func.max(photos.c.id))).scalar() or 0
    scored = _count_photos(conn, first)
    if scored:  # photos never scored: all of them in an index from before these tables
        log.warning("photos: scoring %d photos for fast search (once; about a minute per million)", scored)
        _score(conn, "labels.photo_id > :first", {"first": first})
    if new_ids and first:  # concepts new to photos scored before: their rows, then those photos' masks
        _score(conn, "labels.photo_id <= :first", {"first": first}, new_ids)
        _refresh_masks(conn, new_ids)
    _recount(conn, None if scored else new_ids)
    _set_state(conn, covered_through=max(first, top))
    return scored


def _sync_concepts(conn: Connection) -> list[int]:
    """Make ``concepts`` the current :func:`concept_sets`: drop the others; return the new ids."""
    wanted = concept_sets(conn)
    have = dict(conn.execute(select(concepts.c.labels, concepts.c.id)).tuples().all())
    for key, id_ in have.items():
        if key not in wanted:  # its mask bits stay on the photos' rows: harmless, a lookup more
            conn.execute(delete(concept_scores).where(concept_scores.c.concept_id == id_))
            conn.execute(delete(concept_labels).where(concept_labels.c.concept_id == id_))
            conn.execute(delete(concepts).where(concepts.c.id == id_))
    new_ids = []
    for key in sorted(wanted.keys() - have.keys()):
        id_ = conn.execute(insert(concepts).values(labels=key).returning(concepts.c.id)).scalar_one()
        conn.execute(insert(concept_labels), [{"label": label, "concept_id": id_} for label in sorted(wanted[key])])
        new_ids.append(id_)
    _set_state(conn, label_names=_label_name_count(conn))
    return new_ids


def score_new_photos(conn: Connection, ids: Mapping[str, int]) -> None:
    """The writer's hook (one of the ``Batch.hooks`` of ``IndexStore.commit``): score the photos just committed.

    When the batch brought label names the index had not seen, a word of the names may
    now find more labels: the concepts are brought up to date too (mostly in a library's
    first run, while its first photos show the models' classes)."""
    if not ids:
        return
    fresh = sorted(ids.values())
    state = conn.execute(select(concept_state)).first() if has_tables(conn) else None
    if state is None or _count_photos(conn, state.covered_through, below=fresh[0]):
        sync(conn)  # a new index, or photos committed without this hook: score all that are missing
        return
    for i in range(0, len(fresh), 500):
        chunk = fresh[i:i + 500]
        _score(conn, "labels.photo_id IN :ids", {"ids": chunk})
        added = conn.execute(select(concept_scores.c.concept_id, func.count())
                             .where(concept_scores.c.photo_id.in_(chunk)).group_by(concept_scores.c.concept_id)).all()
        if added:
            conn.execute(update(concepts).where(concepts.c.id == bindparam("cid"))
                         .values(photos=concepts.c.photos + bindparam("n")), [{"cid": c, "n": n} for c, n in added])
    _set_state(conn, covered_through=max(state.covered_through, fresh[-1]))
    if _label_name_count(conn) != state.label_names:
        sync(conn)


def _score(conn: Connection, photo_filter: str, params: dict[str, object],
           concept_ids: Sequence[int] | None = None) -> None:
    """Insert the rows of the photos ``photo_filter`` selects, for ``concept_ids`` (None: all)."""
    if concept_ids is not None:
        params = {**params, "concepts": list(concept_ids)}
    statement = text(_SCORE_SQL.format(photo_filter=photo_filter, stored_min=repr(STORED_MIN),
                                       concept_filter=("concept_labels.concept_id IN :concepts"
                                                       if concept_ids is not None else "1")))
    lists: list[Any] = [bindparam(name, expanding=True) for name, value in params.items() if isinstance(value, list)]
    conn.execute(statement.bindparams(*lists) if lists else statement, params)


def _refresh_masks(conn: Connection, concept_ids: Sequence[int]) -> None:
    """Every row of each photo with a row of ``concept_ids`` gets the photo's whole mask."""
    conn.execute(text(
        "UPDATE concept_scores SET mask = (SELECT sum(DISTINCT bit) FROM ("
        " SELECT 1 << (c.concept_id % 63) AS bit FROM concept_scores AS c WHERE c.photo_id = concept_scores.photo_id"
        " UNION ALL SELECT 1 << ((29 * c.concept_id + 7) % 61) FROM concept_scores AS c"
        " WHERE c.photo_id = concept_scores.photo_id))"
        " WHERE photo_id IN (SELECT photo_id FROM concept_scores WHERE concept_id IN :concepts)"
    ).bindparams(bindparam("concepts", expanding=True)), {"concepts": list(concept_ids)})


def _count_photos(conn: Connection, above: int, below: int | None = None) -> int:
    query = select(func.count()).select_from(photos).where(photos.c.id > above)
    if below is not None:
        query = query.where(photos.c.id < below)
    return int(conn.execute(query).scalar_one())


def _label_name_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(label_names)).scalar_one())


def _recount(conn: Connection, concept_ids: Sequence[int] | None) -> None:
    """Set ``concepts.photos`` of these concepts (None: all) from their rows."""
    if concept_ids is not None and not concept_ids:
        return
    query = update(concepts).values(photos=select(func.count()).where(
        concept_scores.c.concept_id == concepts.c.id).scalar_subquery())
    if concept_ids is not None:
        query = query.where(concepts.c.id.in_(list(concept_ids)))
    conn.execute(query)


def _set_state(conn: Connection, **values: int) -> None:
    if conn.execute(update(concept_state).where(concept_state.c.id == 1).values(**values)).rowcount == 0:
        conn.execute(insert(concept_state).values(**{"id": 1, "covered_through": 0, "label_names": 0, **values}))


@dataclass(frozen=True)
class StoredConcepts:
    """What search needs to know of the stored concepts, read once per search."""

    conn: Connection
    outside_names: frozenset[str]  # people and custom labels: their rows are not in the scores
    custom_names: frozenset[str] = frozenset()  # custom labels: one row per photo, read best first

    @classmethod
    def load(cls, conn: Connection, min_score: float) -> StoredConcepts | None:
        """None when the stored scores cannot answer: no tables, photos not scored yet, or
        ``min_score`` below :data:`STORED_MIN`."""
        if min_score < STORED_MIN or not has_tables(conn):
            return None
        covered = conn.execute(select(concept_state.c.covered_through)).scalar()
        top = conn.execute(select(func.max(photos.c.id))).scalar() or 0
        if covered is None or top > covered:
            return None
        present = set(conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('people', 'custom_heads')")).scalars())
        names: dict[str, set[str]] = {}
        for table in sorted(present):  # a fixed name from the line above, never user text
            names[table] = {n for n in conn.execute(text(f"SELECT name FROM {table}")).scalars() if n}  # noqa: S608
        custom = frozenset(names.get("custom_heads", ()))
        return cls(conn, frozenset().union(*names.values()), custom)

    def custom_label(self, label_set: frozenset[str]) -> tuple[str, int] | None:
        """(label, rows) when ``label_set`` is one custom label whose rows search can read best
        first: one row per photo (``custom_labels._apply`` replaces a photo's row in the same
        transaction), all from ``photos train``, so a row's score is the photo's.

        The source is checked, not assumed, in the pass that counts the rows (9 ms for 142,626):
        a person or a later model's label may share the name; such a label is summed like any
        other term."""
        if len(label_set) != 1 or not label_set <= self.custom_names:
            return None
        (label,) = label_set
        rows, others = self.conn.execute(text(
            "SELECT COUNT(*), COALESCE(SUM(source <> 'custom'), 0) FROM labels WHERE label = :l"), {"l": label}).one()
        return (label, int(rows)) if not others else None

    def concept_for(self, phrase: str, label_set: frozenset[str]) -> tuple[int, int] | None:
        """(id, photos) of the concept whose stored scores are the term's (``label_set``: what
        it matches), or None.

        None when no concept has exactly that set, when a person or custom label is named
        like one of its labels, or when a label spelled like the term itself ("puppy")
        exists outside the set: search sums that label's rows too.
        """
        if not label_set or label_set & self.outside_names:
            return None
        row = self.conn.execute(select(concepts.c.id, concepts.c.photos)
                                .where(concepts.c.labels == key_of(label_set))).first()
        if row is None:
            return None
        if phrase not in label_set and self.conn.execute(
                text("SELECT 1 FROM label_names WHERE label = :l"), {"l": phrase}).first():
            return None
        return int(row.id), int(row.photos)
