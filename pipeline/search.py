"""Search the index: words in, photos out, best first.

A query is a list of terms; a photo must match every term (AND), and a term written
``-word`` excludes photos that match it. A term matches a set of model labels:

- a vocabulary word (``vocabulary.json``) matches its concept's labels: "dog" -> the
  118 dog breeds, "beach" -> seashore, sandbar;
- any other term matches by full-text search over label names (FTS5, porter stemming):
  "retriever" -> golden retriever, Labrador retriever; "retrievers" the same.

Labels come from three sources (the ``labels.source`` column): the classifier (softmax
probabilities), the detector (per class, its best box's score) and segmentation (per
class covering at least 1% of the photo, the model's mean confidence over its pixels).

Ranking: for each source, the sum of the photo's scores for the labels the term matches,
capped at 1 (classifier scores are probabilities, so summing the breeds gives the
probability of "dog"); the term's score is the best of its sources, so a photo where the
detector saw a dog at 0.9 scores 0.9 for "dog" even if the classifier said "sofa", and
agreeing sources do not add up past certainty. A photo's score is the product of its term
scores. Filters on detected boxes: ``objects`` (each class must have a box) and
``min_count`` (each term must have that many boxes), counting boxes that cover at least
``min_area`` of the photo; a box filter multiplies the score by its best box's score.

Only word characters reach SQL, and always as bound parameters or quoted FTS strings,
so quotes, ``*``, ``NOT`` or ``;`` in a query are just characters that match nothing.

Speed: a term whose labels are a concept the writer stored scores for (a vocabulary word,
a word that finds several labels; :mod:`pipeline.concept_scores`) is read best first from
them (:mod:`pipeline.search_ranked`), with the same results; so is a custom label, from its
own rows; other terms sum label rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, select, text

from pipeline import vocabulary
from pipeline.concept_scores import StoredConcepts
from pipeline.errors import QueryError
from pipeline.search_ranked import RankedTerm, ranked_search, summed_scores
from pipeline.store import IndexStore, labels, objects, photos

MAX_TERMS = 16
"""More terms than this is not a photo search; refuse rather than build a huge query."""
DEFAULT_MIN_SCORE = 0.05
"""Below this a label is the model's noise, not evidence (top-5 tails are often 0.001)."""
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Term:
    """One search term: its words, and whether it excludes (``-word``)."""

    text: str
    words: tuple[str, ...]
    exclude: bool = False


@dataclass(frozen=True)
class SearchHit:
    """One matching photo with its score and the labels that made it match."""

    path: str
    score: float
    width: int
    height: int
    labels: list[dict[str, object]] = field(default_factory=list)  # {label, score, source}


def parse_query(raw_terms: Sequence[str]) -> list[Term]:
    """Terms from the command line; raises :class:`QueryError` when no term has a word."""
    terms = []
    for raw in raw_terms:
        exclude = raw.startswith("-")
        words = tuple(w.lower() for w in _WORD.findall(raw))
        if words:
            terms.append(Term(raw, words, exclude))
    if not terms:
        raise QueryError("give at least one search word, e.g. `photos search beach`")
    if len(terms) > MAX_TERMS:
        raise QueryError(f"too many search terms ({len(terms)}); at most {MAX_TERMS}")
    if all(t.exclude for t in terms):
        raise QueryError("a search needs at least one word that is not excluded with '-'")
    return terms


def matching_labels(store: IndexStore, term: Term) -> set[str]:
    """The label names a term stands for.

    A vocabulary word means exactly its concept's labels (plus a label spelled like the
    term, e.g. a detector's "dog"): full text would add "beach wagon" to "beach" and
    "Bernese mountain dog" to "mountain". Any other term is matched by full text.
    """
    if not term.words:  # "" or "--": FTS5 calls an empty MATCH a syntax error
        return set()
    phrase = " ".join(term.words)
    curated = vocabulary.expand(phrase)
    if curated:
        return set(curated) | {phrase}
    fts_query = " ".join('"' + w.replace('"', '""') + '"' for w in term.words)
    with store.engine.connect() as conn:
        return set(conn.execute(
            text("SELECT label FROM label_fts WHERE label_fts MATCH :q"), {"q": fts_query}
        ).scalars())


def _box_filter(found: set[str], min_count: int, min_area: float):
    """photo_id, s: photos with at least ``min_count`` boxes of ``found`` covering ``min_area``."""
    return (select(objects.c.photo_id, func.max(objects.c.score).label("s"))
            .where(objects.c.label.in_(sorted(found)), objects.c.area >= min_area)
            .group_by(objects.c.photo_id).having(func.count() >= min_count))


def _person_filter(name: str):
    """photo_id, s: photos with a face of the person called ``name`` (``people`` label rows)."""
    return (select(labels.c.photo_id, func.max(labels.c.score).label("s"))
            .where(labels.c.source == "people", func.lower(labels.c.label) == " ".join(name.split()).lower())
            .group_by(labels.c.photo_id))


def search(store: IndexStore, raw_terms: Sequence[str], limit: int = 20, min_score: float = DEFAULT_MIN_SCORE,
           objects_of: Sequence[str] = (), min_count: int = 0, min_area: float = 0.0,
           restrict: Sequence[ColumnElement[bool]] = (), order: Sequence[Any] = (),
           restrict_terms: bool = False, persons: Sequence[str] = (), stored: bool = True) -> list[SearchHit]:
    """Photos matching every term of ``raw_terms``, best first, at most ``limit``.

    A photo whose score for some term is below ``min_score`` does not match that term.
    ``objects_of``: classes (words, as in a term) the photo must have a detected box of;
    ``min_count``: boxes each term (and each of ``objects_of``) needs; ``min_area``: the
    fraction of the photo a box must cover to count. Terms may be empty if ``objects_of``
    is not. ``restrict``: more conditions on ``photos`` (date, camera and place filters, see
    :mod:`pipeline.search_filters`), which also allow a search with no terms; ``order``:
    sort keys that come before the score; ``restrict_terms``: apply ``restrict`` inside each
    term's label sums too (faster for a term that matches many photos, slower for a rare one).
    ``persons``: names (exact, any case) of people who must all be in the photo.
    ``stored``: read vocabulary words' scores from the per-concept table where the index
    has it (:mod:`pipeline.search_ranked`); False sums label rows, the reference the fast
    way is tested against.
    """
    # Terms without a word ("", "--") are nothing to search for: with filters they are ignored.
    worded = any(_WORD.search(raw) for raw in raw_terms)
    terms = parse_query(raw_terms) if worded or not (objects_of or restrict or persons) else []
    include = [(t, matching_labels(store, t)) for t in terms if not t.exclude]
    exclude = set().union(*(matching_labels(store, t) for t in terms if t.exclude))
    boxed = [matching_labels(store, t) for t in parse_query(objects_of)] if objects_of else []
    if any(not found for _, found in include) or any(not found for found in boxed):
        return []
    within = select(photos.c.id).where(*restrict) if restrict and restrict_terms else None
    box_needs = [(found, max(1, min_count)) for found in boxed]
    if min_count > 0:
        box_needs += [(found, min_count) for _, found in include]
    extra = [_box_filter(found, n, min_area).subquery(f"b{i}") for i, (found, n) in enumerate(box_needs)]
    extra += [_person_filter(name).subquery(f"p{i}") for i, name in enumerate(persons)]
    with store.engine.connect() as conn:
        concepts = StoredConcepts.load(conn, min_score) if stored and include else None
        ranked = [_ranked(concepts, t, found) for t, found in include]
        if any(t.banded for t in ranked):
            rows: Sequence[Any] = ranked_search(conn, ranked, frozenset(exclude), limit, min_score, extra, restrict,
                                                order, within)
        else:
            rows = conn.execute(_summed_query(include, exclude, extra, min_score, restrict, order, limit,
                                              within)).all()
        wanted = sorted(set().union(*(found for _, found in include), *boxed, set(persons)))
        found_rows: dict[int, list[tuple[float, str, str]]] = {row.id: [] for row in rows}
        if rows:
            # Sorted here, not by SQL: an ORDER BY score makes SQLite walk a one-label term's
            # (label, score) index through all its rows (120 ms for a custom label on 142,626
            # photos of 10^6) instead of looking the few photos up by (label, photo_id).
            for m in conn.execute(
                select(labels.c.photo_id, labels.c.label, labels.c.score, labels.c.source)
                .where(and_(labels.c.photo_id.in_(list(found_rows)), labels.c.label.in_(wanted)))
            ):
                found_rows[m.photo_id].append((m.score, m.label, m.source))
    matched = {photo: [{"label": label, "score": round(score, 4), "source": source}
                       for score, label, source in sorted(items, key=lambda item: (-item[0], item[1], item[2]))]
               for photo, items in found_rows.items()}
    return [SearchHit(r.path, float(r.score), r.width, r.height, matched[r.id]) for r in rows]


def _ranked(concepts: StoredConcepts | None, term: Term, found: set[str]) -> RankedTerm:
    """The term, with the stored concept that scores it if the index has one."""
    phrase = " ".join(term.words)
    stored = concepts.concept_for(phrase, vocabulary.expand(phrase) or frozenset(found)) if concepts else None
    if stored is None and concepts is not None and (custom := concepts.custom_label(frozenset(found))):
        return RankedTerm(frozenset(found), None, custom[1], custom[0])
    return RankedTerm(frozenset(found), *(stored or (None, 0)))


def _summed_query(include: Sequence[tuple[Term, set[str]]], exclude: set[str], extra: Sequence[Any],
                  min_score: float, restrict: Sequence[ColumnElement[bool]], order: Sequence[Any], limit: int,
                  within: Any) -> Any:
    """Every term's score summed from its label rows for every photo, then the best ``limit``."""
    term_scores = [summed_scores(found, min_score, within).subquery(f"t{i}") for i, (_, found) in enumerate(include)]
    score = literal(1.0)
    query = select(photos.c.id, photos.c.path, photos.c.width, photos.c.height).where(photos.c.deleted_at.is_(None))
    for sub in [*term_scores, *extra]:
        query = query.join(sub, sub.c.photo_id == photos.c.id)
        score = score * sub.c.s
    if exclude:
        excluded = summed_scores(exclude, min_score).subquery("excluded")
        query = query.where(photos.c.id.not_in(select(excluded.c.photo_id)))
    query = query.where(*restrict)
    return query.add_columns(score.label("score")).order_by(*order, score.desc(), photos.c.path).limit(limit)
