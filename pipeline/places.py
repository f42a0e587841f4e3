"""GPS position -> city, region and country, offline, from the GeoNames gazetteer.

The ``reverse_geocode`` package ships GeoNames' "cities1000" list (every place of 1,000
people or more) and finds the nearest one with a k-d tree. Loading it costs about 0.5 s
and 190 MB (measured: import 0.23 s, first lookup 0.32 s, then ~45 us a lookup), so it
is loaded lazily, once per process, only when a photo has a position, and only in the
driver (:mod:`pipeline.writer`), never in each Ray decode worker.

The nearest town is a place only when it is near: a photo more than
:data:`MAX_DISTANCE_KM` from any town (open sea, Antarctica) gets no place rather than
the nearest coast's. :func:`place_words` gives the words search matches (folded: lower
case, accents removed), so "lisbon", "Lisbon" and "São Paulo"/"sao paulo" all match.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

MAX_DISTANCE_KM = 100.0
"""Beyond this distance from the nearest town of 1,000 people, a position has no place."""
EARTH_RADIUS_KM = 6371.0088
_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)


def fold(text: str) -> str:
    """A place name or query word as search compares them: "São  Paulo!" -> "sao paulo"."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_WORD.sub(" ", plain.lower()).strip()


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@functools.cache
def _gazetteer() -> Any:
    import reverse_geocode  # type: ignore[import-untyped]  # scipy and the gazetteer: only in a process that meets a GPS photo

    return reverse_geocode


def place_of(latitude: float, longitude: float) -> dict[str, str | None] | None:
    """{city, county, region, country, country_code} of the nearest town, or None if far from any."""
    found = dict(_gazetteer().get((latitude, longitude)))  # a copy: the package reuses its dicts
    if distance_km(latitude, longitude, found["latitude"], found["longitude"]) > MAX_DISTANCE_KM:
        return None
    return {
        "city": found.get("city") or None,
        "county": found.get("county") or None,
        "region": found.get("state") or None,
        "country": found.get("country") or None,
        "country_code": found.get("country_code") or None,
    }


def add_places(records: Iterable[dict[str, Any]]) -> None:
    """Fill the place fields of each record's ``metadata`` that has a position and no place yet."""
    for record in records:
        meta = record.get("metadata")
        if not meta or meta.get("latitude") is None or meta.get("longitude") is None or meta.get("country"):
            continue
        place = place_of(meta["latitude"], meta["longitude"])
        if place:
            meta.update(place)


def place_words(meta: dict[str, Any] | None) -> list[str]:
    """The folded names a photo's place is found by: city, county, region, country."""
    if not meta:
        return []
    names = (meta.get(k) for k in ("city", "county", "region", "country"))
    return sorted({fold(n) for n in names if n and fold(n)})
