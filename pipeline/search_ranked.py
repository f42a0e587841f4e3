"""Best first: search read from the per-concept scores, stopping once the top is known.

The same results as summing label rows (:mod:`pipeline.search`), found a cheaper way when
at least one term is a vocabulary word with stored scores (:mod:`pipeline.concept_scores`)
or a custom label:

- one term (the *driver*) is read from ``ix_concept_scores_rank`` (a custom label: from
  ``ix_labels_label_score``, its one row per photo), best first: of the terms read that
  way, the one with the fewest photos;
- every other term is looked up per candidate photo: a stored score by primary key, a
  full-text term by summing that photo's few label rows; excluded words the same way;
- the driver is read in bands of falling score (1,000 rows, then 2,000, 4,000, ...).
  Every factor of a photo's score is at most 1, so a photo whose driver score is below a
  band's floor scores below it too: once ``limit`` photos scoring at least the floor
  have been found, no later band can beat them and the search stops.

A one-word search reads about ``limit`` index entries; three broad words read the driver
until enough photos have all three. Box and person filters, and sorting by date, need
every match: those searches read the driver in one band.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, bindparam, func, literal, select
from sqlalchemy.sql import Select

from pipeline.concept_scores import bits_of, concept_scores
from pipeline.store import labels, photos

FIRST_BAND = 1000
"""Driver rows in the first band (at least 50 per photo asked for)."""
BAND_GROWTH = 4
"""Each band reads this many times the rows of the one before."""
ABOVE_ANY = 2.0
"""An upper bound above every score (scores are at most 1): the first band's."""


@dataclass(frozen=True)
class RankedTerm:
    """An included term: its labels, and the stored concept that scores it (None: sum labels)
    with its number of photos; or the custom label whose rows score it (one per photo)."""

    found: frozenset[str]
    concept: int | None
    photos: int = 0
    custom: str | None = None

    @property
    def banded(self) -> bool:
        """Readable best first: from its stored scores or its custom label's rows."""
        return self.concept is not None or self.custom is not None


@dataclass(frozen=True)
class Row:
    id: int
    path: str
    width: int
    height: int
    score: float


def label_score(found: Collection[str], photo_id: Any) -> Any:
    """One photo's term score, summed from its label rows: the best source's capped sum (or NULL).

    The best group first and only it (not max() over a derived table, which could not see
    the outer photo)."""
    summed = func.min(1.0, func.sum(labels.c.score))
    return (select(summed).where(labels.c.photo_id == photo_id, labels.c.label.in_(sorted(found)))
            .group_by(labels.c.source).order_by(summed.desc()).limit(1)
            .correlate_except(labels).scalar_subquery())


def summed_scores(found: Collection[str], min_score: float, within: Any = None) -> Select[Any]:
    """photo_id, s: the best source's capped sum of scores over ``found``, if >= min_score.

    ``within``: a select of the only photo ids that can match (the filters), so only their
    labels are summed."""
    per_source = (
        select(labels.c.photo_id, func.min(1.0, func.sum(labels.c.score)).label("s"))
        .where(labels.c.label.in_(sorted(found)),
               *([labels.c.photo_id.in_(within)] if within is not None else []))
        .group_by(labels.c.photo_id, labels.c.source)
        .subquery()
    )
    return (select(per_source.c.photo_id, func.max(per_source.c.s).label("s"))
            .group_by(per_source.c.photo_id).having(func.max(per_source.c.s) >= min_score))


def ranked_search(conn: Connection, terms: Sequence[RankedTerm], excluded: frozenset[str], limit: int,
                  min_score: float, extra: Sequence[Any] = (), restrict: Sequence[ColumnElement[bool]] = (),
                  order: Sequence[Any] = (), within: Any = None) -> list[Row]:
    """Photos matching every term, best first (or by ``order`` first), at most ``limit``.

    ``extra``: joined subqueries (photo_id, s) that must match and multiply the score
    (box and person filters, :mod:`pipeline.search`); ``restrict``: conditions on photos;
    ``within``: the photo ids ``restrict`` allows, for a full-text driver's sums.
    """
    driver = _choose_driver(conn, terms)
    banded = terms[driver].banded and not order and not extra
    query = _query(terms, driver, excluded, min_score, extra, restrict, order, limit, within)
    upper = ABOVE_ANY
    found: dict[int, Row] = {}
    size = max(FIRST_BAND, 50 * limit)
    while True:
        floor = _band_floor(conn, terms[driver], min_score, upper, size) if banded else min_score
        for r in conn.execute(query, {"floor": floor, "upper": upper}):
            found[r.id] = Row(r.id, r.path, r.width, r.height, float(r.score))
        if not banded:
            return list(found.values())
        best = sorted(found.values(), key=lambda row: (-row.score, row.path))[:limit]
        if floor <= min_score or (len(best) == limit and best[-1].score >= floor):
            return best
        upper, size = floor, size * BAND_GROWTH


def _choose_driver(conn: Connection, terms: Sequence[RankedTerm]) -> int:
    """The term with the fewest photos: a stored one by its count, a full-text one by its label
    rows, counted up to the fewest stored (so a broad one costs no more than that)."""
    if len(terms) == 1:
        return 0
    fewest = min(t.photos for t in terms if t.banded)
    rows = []
    for term in terms:
        if term.banded:
            rows.append(term.photos)
        else:
            capped = select(labels.c.photo_id).where(labels.c.label.in_(sorted(term.found))).limit(fewest + 1)
            rows.append(conn.execute(select(func.count()).select_from(capped.subquery())).scalar_one())
    # On a tie a stored term leads: it is read from its ranking, not summed.
    return min(range(len(terms)), key=lambda i: (rows[i], not terms[i].banded))


def _band_floor(conn: Connection, term: RankedTerm, min_score: float, upper: float, size: int) -> float:
    """The score ``size`` rows below ``upper`` in the term's ranking (min_score if fewer are left)."""
    if term.custom is not None:
        score, where = labels.c.score, [labels.c.label == term.custom]
    else:
        score, where = concept_scores.c.score, [concept_scores.c.concept_id == term.concept]
    query = (select(score).where(*where, score >= min_score, score < upper)
             .order_by(score.desc()).limit(1).offset(size))
    floor = conn.execute(query).scalar()
    return min_score if floor is None else max(float(floor), min_score)


def _query(terms: Sequence[RankedTerm], driver: int, excluded: frozenset[str], min_score: float,
           extra: Sequence[Any], restrict: Sequence[ColumnElement[bool]], order: Sequence[Any], limit: int,
           within: Any) -> Select[Any]:
    """A band: photos whose driver score is in [``:floor``, ``:upper``), scored by every factor."""
    lead: Any
    if terms[driver].concept is not None:
        lead = concept_scores.alias("lead")
        lead_score = lead.c.score
        conditions: list[Any] = [lead.c.concept_id == terms[driver].concept,
                                 lead.c.score >= bindparam("floor"), lead.c.score < bindparam("upper")]
        # Photos without a row of every other stored term fail here, in the index, unread.
        needed = 0
        for i, term in enumerate(terms):
            if i != driver and term.concept is not None:
                needed |= bits_of(term.concept)
        if needed:
            conditions.append(lead.c.mask.op("&")(needed) == needed)
    elif terms[driver].custom is not None:  # its rows are the scores: one per photo
        lead = select(labels.c.photo_id, labels.c.score).where(
            labels.c.label == terms[driver].custom, labels.c.score >= min_score,
            labels.c.score >= bindparam("floor"), labels.c.score < bindparam("upper")).subquery("lead")
        lead_score, conditions = lead.c.score, []
    else:  # a full-text term with fewer rows than any stored one: summed once, as before
        lead = summed_scores(terms[driver].found, min_score, within).subquery("lead")
        lead_score, conditions = lead.c.s, []
    conditions += [photos.c.id == lead.c.photo_id, photos.c.deleted_at.is_(None)]
    factors: list[Any] = []
    froms: list[Any] = [lead]
    for i, term in enumerate(terms):
        if i == driver:
            factors.append(lead_score)
        elif term.concept is not None:
            # "+ 0": never start from this term's ranking; look the photo's score up by primary key.
            other = concept_scores.alias(f"c{i}")
            froms.append(other)
            conditions += [other.c.photo_id == lead.c.photo_id, other.c.concept_id + 0 == term.concept,
                           other.c.score >= min_score]
            factors.append(other.c.score)
        else:
            summed = label_score(term.found, lead.c.photo_id)
            conditions.append(summed >= min_score)
            factors.append(summed)
    for sub in extra:
        conditions.append(sub.c.photo_id == lead.c.photo_id)
        froms.append(sub)
        factors.append(sub.c.s)
    if excluded:
        conditions.append(func.coalesce(label_score(excluded, lead.c.photo_id), -1.0) < min_score)
    score: Any = factors[0] if len(factors) == 1 else _product(factors)
    return (select(photos.c.id, photos.c.path, photos.c.width, photos.c.height, score.label("score"))
            .select_from(*froms, photos).where(and_(*conditions), *restrict)
            .order_by(*order, score.desc(), photos.c.path).limit(limit))


def _product(factors: Sequence[Any]) -> Any:
    """1.0 * f0 * f1 * ..., multiplied in the order :mod:`pipeline.search` does (same rounding)."""
    score: Any = literal(1.0)
    for f in factors:
        score = score * f
    return score
