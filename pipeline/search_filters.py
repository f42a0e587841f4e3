"""When and where: date, camera, position and place filters on top of word search.

Filters come from options (``--from 2019-06 --to 2019-08``, ``--year``, ``--month``,
``--camera iphone``, ``--near 38.72,-9.14 --km 5``, ``--place lisbon``) or from the query
itself: a year ("beach 2019"), a date ("2019-07" or "2019-07-14"), a month name ("snow
january") or a place the index knows ("lisbon", "new york") is taken as a filter rather
than as a label to look for. A place word is a filter only when it names no label, so
"orange" stays the fruit. A place written as an excluded term ("beach -lisbon", or
quoted, "-new york") leaves out the photos taken there. What is left are the label words
of :mod:`pipeline.search`; a search may have filters and no words ("everything from 2019
in Lisbon").

Dates are the local time the camera wrote (``photo_meta.taken``), so ``--month 12``
is December where the photo was taken. ``--from`` and ``--to`` take a year, a month or
a day and include all of it: ``--to 2019`` runs to the end of 2019. ``--near`` uses a
flat-earth distance around the point (within 1% up to a few hundred km).

Every value is checked here and a bad one raises :class:`QueryError` naming what is
accepted; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select, text

from pipeline.common_words import drop_common_words
from pipeline.errors import QueryError
from pipeline.places import fold
from pipeline.search import SearchHit, Term, matching_labels, parse_query
from pipeline.search import search as search_words
from pipeline.store import IndexStore, labels, photo_meta, photo_places, photos

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")
_MONTH_WORDS = {**{m: i for i, m in enumerate(MONTHS, 1)},
                **{m[:3]: i for i, m in enumerate(MONTHS, 1) if m != "may"}, "sept": 9}
_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")
_WORDS = re.compile(r"\w+", re.UNICODE)
_YEAR_WORD = re.compile(r"^(18|19|20|21)\d\d$")
DATE_FORMATS = "YYYY, YYYY-MM or YYYY-MM-DD (e.g. 2019, 2019-07, 2019-07-14)"
SORTS = ("score", "date")
BROAD_TERM = 20_000
"""Label rows above which a term's sums are restricted to the filtered photos first."""
COMMON_PLACE = 5000
"""Photos at a place above which a filter checks each photo instead of listing the place's."""
MAX_PLACE_WORDS = 3
"""Longest place name recognised in a query, in words ("new york city")."""


@dataclass(frozen=True)
class Filters:
    """What a photo's metadata must satisfy; every field optional, all must hold."""

    date_from: str | None = None  # inclusive, "YYYY-MM-DD" (compared with photo_meta.taken)
    date_to: str | None = None  # exclusive
    month: int | None = None
    camera: str | None = None
    near: tuple[float, float, float] | None = None  # latitude, longitude, km
    places: tuple[str, ...] = field(default=())  # folded names
    not_places: tuple[str, ...] = field(default=())  # folded names of places excluded ("-lisbon")

    def __bool__(self) -> bool:
        return any(v not in (None, ()) for v in (self.date_from, self.date_to, self.month, self.camera,
                                                  self.near, self.places, self.not_places))


@dataclass(frozen=True)
class PhotoHit:
    """A search hit with what the index knows of when and where (``details``)."""

    hit: SearchHit
    details: dict[str, Any]


def date_range(value: str) -> tuple[str, str]:
    """``"2019-07"`` -> ("2019-07-01", "2019-08-01"): the half-open day range a date names."""
    match = _DATE.match(value.strip())
    if not match:
        raise QueryError(f"not a date: {value!r}; use {DATE_FORMATS}")
    year, month, day = (int(g) if g else None for g in match.groups())
    assert year is not None
    try:
        if month is None:
            return f"{year:04d}-01-01", f"{year + 1:04d}-01-01"
        if not 1 <= month <= 12:
            raise ValueError
        if day is None:
            end = f"{year + 1:04d}-01-01" if month == 12 else f"{year:04d}-{month + 1:02d}-01"
            return f"{year:04d}-{month:02d}-01", end
        import datetime as dt

        start = dt.date(year, month, day)
        return start.isoformat(), (start + dt.timedelta(days=1)).isoformat()
    except (ValueError, OverflowError):
        raise QueryError(f"not a date: {value!r}; use {DATE_FORMATS}") from None


def parse_month(value: str) -> int:
    """``"7"``, ``"07"``, ``"july"`` or ``"jul"`` -> 7."""
    text_value = value.strip().lower()
    if text_value.isdigit() and 1 <= int(text_value) <= 12:
        return int(text_value)
    if text_value in _MONTH_WORDS:
        return _MONTH_WORDS[text_value]
    raise QueryError(f"not a month: {value!r}; use 1-12 or a month name (january, jan, ...)")


def parse_near(value: str, km: float) -> tuple[float, float, float]:
    """``"38.72,-9.14"`` -> (38.72, -9.14, km)."""
    parts = value.replace(" ", "").split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise QueryError(f"not a position: {value!r}; use LAT,LON in degrees, e.g. --near 38.72,-9.14") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not (math.isfinite(lat) and math.isfinite(lon)):
        raise QueryError(f"position out of range: {value!r}; latitude is -90..90 and longitude -180..180")
    if not (0 < km <= 20_040):
        raise QueryError(f"--km must be above 0 and at most 20040 (half the earth), not {km}")
    return lat, lon, km


def build_filters(date_from: str | None = None, date_to: str | None = None, year: int | None = None,
                  month: str | None = None, camera: str | None = None, near: str | None = None,
                  km: float = 10.0, place: str | None = None) -> Filters:
    """Filters from the command line's values; :class:`QueryError` for a bad one."""
    lower = date_range(date_from)[0] if date_from else None
    upper = date_range(date_to)[1] if date_to else None
    filters = Filters(lower, upper)
    if year is not None:
        if not 1826 <= year <= 2100:
            raise QueryError(f"--year must be between 1826 and 2100, not {year}")
        filters = _and_dates(filters, *date_range(str(year)))
    if lower and upper and lower >= upper:
        raise QueryError(f"--from {date_from} is after --to {date_to}")
    places = (fold(place),) if place and fold(place) else ()
    if place is not None and not places:
        raise QueryError(f"not a place name: {place!r}; give a city, region or country, e.g. --place lisbon")
    if camera is not None and not camera.strip():
        raise QueryError("--camera needs some text of the camera's make or model, e.g. --camera iphone")
    return replace(filters, month=parse_month(month) if month else None, camera=camera.strip() if camera else None,
                   near=parse_near(near, km) if near else None, places=places)


def split_query(store: IndexStore, raw_terms: Sequence[str], filters: Filters) -> tuple[list[str], Filters]:
    """Take the years, dates, month names and places out of a query; return the rest and the filters."""
    rest: list[str] = []
    for raw in raw_terms:
        word = raw.strip().lower()
        if _DATE.match(word) and _YEAR_WORD.match(word[:4]):
            filters = _and_dates(filters, *date_range(word))
        elif word in MONTHS or (word in _MONTH_WORDS and len(word) > 3):
            filters = replace(filters, month=_MONTH_WORDS[word])
        else:
            rest.append(raw)
    if not has_metadata(store):
        return rest, filters
    words: list[str] = []
    i = 0
    while i < len(rest):
        for n in range(min(MAX_PLACE_WORDS, len(rest) - i), 0, -1):
            chunk = rest[i : i + n]
            name = fold(" ".join(chunk))
            if any(t.startswith("-") for t in chunk) or not name:
                continue
            if _is_place_filter(store, name):
                filters = replace(filters, places=(*filters.places, name))
                i += n
                break
        else:
            excluded = fold(rest[i][1:]) if rest[i].startswith("-") else ""
            if excluded and _is_place_filter(store, excluded):
                filters = replace(filters, not_places=(*filters.not_places, excluded))
            else:
                words.append(rest[i])
            i += 1
    return words, filters


@dataclass(frozen=True)
class ReadQuery:
    """A query as search reads it: label words, filters, and the common words left out."""

    words: list[str]
    filters: Filters
    left_out: list[str]


def read_query(store: IndexStore, raw_terms: Sequence[str], filters: Filters = Filters()) -> ReadQuery:
    """Dates and places out first (so "isle of man" and "the hague" stay places), then the
    common words (:mod:`pipeline.common_words`), then the places a quoted phrase held ("a
    beach in lisbon")."""
    words, filters = split_query(store, raw_terms, filters)
    kept, left_out = drop_common_words(store, words)
    words, filters = split_query(store, kept, filters) if left_out else (kept, filters)
    return ReadQuery(words, filters, left_out)


def search_photos(store: IndexStore, raw_terms: Sequence[str], filters: Filters = Filters(),
                  sort: str | None = None, limit: int = 20, **options: Any) -> list[PhotoHit]:
    """Photos matching the words and filters, best first (``sort="score"``) or newest first ("date").

    ``sort`` defaults to score when words remain after the filters are taken out, else date.
    ``options`` go to :func:`pipeline.search.search` (min_score, objects_of, min_count, min_area).
    """
    return search_query(store, read_query(store, raw_terms, filters), sort, limit, **options)


def search_query(store: IndexStore, query: ReadQuery, sort: str | None = None, limit: int = 20,
                 **options: Any) -> list[PhotoHit]:
    """:func:`search_photos` for a query already read (:func:`read_query`), for a caller
    that also reports how it was read (the CLI's note on left-out words)."""
    if sort is not None and sort not in SORTS:
        raise QueryError(f"--sort must be one of {', '.join(SORTS)}, not {sort!r}")
    words, filters = query.words, query.filters
    if query.left_out and not any(_WORDS.search(w) for w in words) and not (
            filters or options.get("objects_of") or options.get("persons")):
        raise QueryError(f"{' '.join(query.left_out)!r} has only common words; give a word for what is in "
                         "the photos, e.g. `photos search beach`")
    if filters and not has_metadata(store):
        raise QueryError("this index was built before photos' dates, cameras and places were recorded; "
                         "build a new index (`photos index FOLDER --index NEWDIR`) to filter by them")
    sort = sort or ("score" if words or options.get("objects_of") else "date")
    clauses = filter_clauses(filters, {p for p in filters.places if _is_common_place(store, p)})
    order: list[Any] = []
    if sort == "date":
        # With a date, camera or position filter photo_meta is joined: SQLite then walks its
        # date index newest first and stops at ``limit`` (1M photos: 300 ms -> ms, measured).
        joined = bool(_meta_conditions(filters))
        order = [photo_meta.c.taken.desc() if joined else _taken_of_photo().desc().nulls_last()]
    hits = search_words(store, words, limit=limit, restrict=clauses, order=order,
                        restrict_terms=bool(clauses) and _any_broad_term(store, words), **options)
    details = photo_details(store, [h.path for h in hits])
    return [PhotoHit(h, details.get(h.path, {})) for h in hits]


def unknown_words(store: IndexStore, words: Sequence[str]) -> list[str]:
    """The label words of a query (:attr:`ReadQuery.words`) that name no label in the index,
    so nothing can match them: why a search found nothing."""
    return [raw for raw in words if not raw.startswith("-") and _WORDS.search(raw)
            and not matching_labels(store, parse_query([raw])[0])]


def filter_clauses(filters: Filters, common_places: set[str] | frozenset[str] = frozenset()
                   ) -> list[ColumnElement[bool]]:
    """WHERE clauses on ``photos`` for ``filters``: photo_meta joined, places by IN or EXISTS.

    A rare place is a short list of photos to start from (IN); a common one ("home": half
    the library) is better checked photo by photo (EXISTS) while SQLite walks the date
    index and stops at the limit. Measured at 1M photos: 180 ms -> 0.1 ms for home, and
    the other way round for a town of 500 photos (0.7 ms with IN, 210 ms with EXISTS).
    """
    conditions = _meta_conditions(filters)
    clauses: list[ColumnElement[bool]] = []
    if conditions:  # joins photo_meta: only photos with metadata can pass these
        clauses.append(and_(photo_meta.c.photo_id == photos.c.id, *conditions))
    for name in filters.not_places:
        clauses.append(photos.c.id.not_in(select(photo_places.c.photo_id).where(photo_places.c.name == name)))
    for name in filters.places:
        if name in common_places:
            clauses.append(exists().where(photo_places.c.photo_id == photos.c.id, photo_places.c.name == name))
        else:
            clauses.append(photos.c.id.in_(select(photo_places.c.photo_id).where(photo_places.c.name == name)))
    return clauses


def _meta_conditions(filters: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.date_from:
        conditions.append(photo_meta.c.taken >= filters.date_from)
    if filters.date_to:
        conditions.append(photo_meta.c.taken < filters.date_to)
    if filters.month:
        conditions.append(func.substr(photo_meta.c.taken, 6, 2) == f"{filters.month:02d}")
    if filters.camera:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", filters.camera.lower()) + "%"
        conditions.append(func.lower(photo_meta.c.camera).like(pattern, escape="\\"))
    if filters.near:
        conditions.extend(_near(*filters.near))
    return conditions


def photo_details(store: IndexStore, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """path -> {taken, date_source, camera, lens, gps, place} for the photos that have metadata."""
    if not paths or not has_metadata(store):
        return {}
    query = (select(photos.c.path, photo_meta).join(photo_meta, photo_meta.c.photo_id == photos.c.id)
             .where(photos.c.path.in_(list(paths))))
    with store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    details = {}
    for r in rows:
        taken = r["taken"].replace(" ", "T") + (r["taken_offset"] or "") if r["taken"] else None
        gps = None if r["latitude"] is None else {
            "latitude": r["latitude"], "longitude": r["longitude"], "altitude": r["altitude"]}
        place = None if not r["country"] else {"city": r["city"], "region": r["region"], "country": r["country"]}
        details[r["path"]] = {"taken": taken, "date_source": r["date_source"], "camera": r["camera"],
                              "lens": r["lens"], "gps": gps, "place": place}
    return details


def has_metadata(store: IndexStore) -> bool:
    """Whether the index has the metadata tables (an index from before them has not)."""
    with store.engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('photo_meta', 'photo_places')"
        )).scalar_one() == 2


def _is_place_filter(store: IndexStore, name: str) -> bool:
    """Whether ``name`` (folded) is a place of the index's photos and no label's name: a
    label comes first ("orange" is the fruit, also as "-orange")."""
    with store.engine.connect() as conn:
        place = conn.execute(select(photo_places.c.name).where(photo_places.c.name == name).limit(1)).first()
    return place is not None and not matching_labels(store, Term(name, tuple(name.split())))


def _any_broad_term(store: IndexStore, words: Sequence[str]) -> bool:
    """Whether a word matches more than :data:`BROAD_TERM` label rows (reads at most that many).

    Summing such a term's scores costs more than listing the photos the filters allow, so
    the filters go inside the sums; a rare term is cheaper summed whole (1M photos:
    "dog 2019 dhaka" 750 -> 370 ms, "car 2020 tokyo" 170 -> 5 ms; "beach 2019 dhaka" would
    go 40 -> 280 ms, hence the test).
    """
    for raw in words:
        if raw.startswith("-"):
            continue
        found = matching_labels(store, Term(raw, tuple(w.lower() for w in _WORDS.findall(raw))))
        if not found:
            continue
        sample = select(labels.c.photo_id).where(labels.c.label.in_(sorted(found))).limit(BROAD_TERM + 1).subquery()
        with store.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(sample)).scalar_one() > BROAD_TERM:
                return True
    return False


def _is_common_place(store: IndexStore, name: str) -> bool:
    """More than :data:`COMMON_PLACE` photos there (reads at most that many index entries)."""
    sample = select(photo_places.c.photo_id).where(photo_places.c.name == name).limit(COMMON_PLACE + 1).subquery()
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(sample)).scalar_one() > COMMON_PLACE


def _and_dates(filters: Filters, start: str, end: str) -> Filters:
    """Narrow ``filters``' date range to [start, end) as well."""
    lower = max(filter(None, (filters.date_from, start)))
    upper = min(filter(None, (filters.date_to, end)))
    return replace(filters, date_from=lower, date_to=upper)


def _near(lat: float, lon: float, km: float) -> list[ColumnElement[bool]]:
    """Within ``km`` of (lat, lon): a latitude band (indexed) and an equirectangular distance."""
    dlat = km / 111.195
    scale = max(math.cos(math.radians(lat)), 1e-6)
    dlon = func.min(func.abs(photo_meta.c.longitude - lon), 360 - func.abs(photo_meta.c.longitude - lon))
    north = photo_meta.c.latitude - lat
    return [
        photo_meta.c.latitude.between(lat - dlat, lat + dlat),
        north * north + (dlon * scale) * (dlon * scale) <= dlat * dlat,
    ]


def _taken_of_photo() -> Any:
    return select(photo_meta.c.taken).where(photo_meta.c.photo_id == photos.c.id).scalar_subquery()
