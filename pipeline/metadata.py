"""When and where a photo was taken, and with what: read from its EXIF, defensively.

Pure functions over a Pillow image (or its :class:`PIL.Image.Exif`), called by the decode
stage on the image it already opened, so reading metadata costs no extra file read.

- **Date taken**: EXIF ``DateTimeOriginal`` (with ``OffsetTimeOriginal`` where present),
  else ``DateTimeDigitized``, else ``DateTime``, else nothing. ``date_source`` says which
  tag it came from. The file's mtime is never used: a copy or an edit changes it, so it
  would silently date a 2009 photo to the day it was backed up.
- **Camera**: make, model and lens, as the camera wrote them (trimmed).
- **GPS**: latitude, longitude (degrees, south and west negative) and altitude (metres,
  below sea level negative).

EXIF is written by thousands of firmwares and editors and is often wrong. Every field is
read on its own, and anything that is not what the standard says (``0000:00:00`` dates,
text where a number belongs, rationals with a zero denominator, a latitude of 91, a
truncated block) leaves that one field empty; the photo is indexed all the same.
``0, 0`` ("null island", a GPS that had no fix) counts as no position.

The record travels as JSON text through Ray's numpy batches (a dict column of mixed
nulls does not survive Ray's type inference) and becomes the Parquet struct column
``metadata`` (:data:`METADATA_TYPE`); the driver adds the place names
(:mod:`pipeline.places`) before it is written.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa
from PIL import Image

from pipeline.records import IndexRow

METADATA_TYPE = pa.struct([
    pa.field("taken", pa.string()),  # local time as the camera wrote it: "2019-07-14T18:03:22"
    pa.field("taken_offset", pa.string()),  # "+01:00" when the camera recorded its UTC offset
    pa.field("date_source", pa.string()),  # DateTimeOriginal | DateTimeDigitized | DateTime
    pa.field("camera_make", pa.string()),
    pa.field("camera_model", pa.string()),
    pa.field("lens", pa.string()),
    pa.field("latitude", pa.float64()),
    pa.field("longitude", pa.float64()),
    pa.field("altitude", pa.float64()),  # metres above sea level
    pa.field("city", pa.string()),  # the places: filled in by the driver (pipeline/places.py)
    pa.field("county", pa.string()),
    pa.field("region", pa.string()),
    pa.field("country", pa.string()),
    pa.field("country_code", pa.string()),
])
"""The Parquet column ``metadata``: null for a photo with none of these fields."""
FIELDS = tuple(f.name for f in METADATA_TYPE)
PLACE_FIELDS = ("city", "county", "region", "country", "country_code")

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _DATETIME, _OFFSET_TIME = 0x010F, 0x0110, 0x0132, 0x9010
_ORIGINAL, _DIGITIZED, _OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 0x9003, 0x9004, 0x9011, 0x9012
_LENS_MAKE, _LENS_MODEL = 0xA433, 0xA434
_DATE_TAGS = (  # (tag, its IFD, its offset tag, the name stored as date_source)
    (_ORIGINAL, _EXIF_IFD, _OFFSET_ORIGINAL, "DateTimeOriginal"),
    (_DIGITIZED, _EXIF_IFD, _OFFSET_DIGITIZED, "DateTimeDigitized"),
    (_DATETIME, None, _OFFSET_TIME, "DateTime"),
)
_DATE = re.compile(r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_OFFSET = re.compile(r"\s*([+-])(\d{2}):?(\d{2})\s*$")
MIN_YEAR, MAX_YEAR = 1826, 2100
"""Dates outside these years are a camera's unset clock, not a date (the first photograph is from 1826)."""
MAX_TEXT = 120
"""Longer "camera names" are junk (a maker note read as text), not a name."""
ALTITUDE_RANGE = (-11_000.0, 100_000.0)  # the Mariana Trench to the edge of space


def read_metadata(im: Image.Image) -> dict[str, Any] | None:
    """The metadata record of an opened image, or None when it has none.

    Never raises: an EXIF block Pillow cannot parse is the same as no EXIF.
    """
    try:
        with warnings.catch_warnings():  # "Corrupt EXIF data" is what this function is for
            warnings.simplefilter("ignore")
            exif = im.getexif()
    except Exception:  # noqa: BLE001 - any parser error in a hostile block means "no EXIF"
        return None
    return metadata_from_exif(exif)


def metadata_from_exif(exif: Image.Exif) -> dict[str, Any] | None:
    """The fields of :data:`METADATA_TYPE` found in ``exif`` (places left empty)."""
    with warnings.catch_warnings():  # sub-IFDs are parsed lazily, here
        warnings.simplefilter("ignore")
        ifd0 = _safe_dict(exif)
        exif_ifd = _safe_ifd(exif, _EXIF_IFD)
        gps = _safe_ifd(exif, _GPS_IFD)
    record: dict[str, Any] = dict.fromkeys(FIELDS)
    for tag, ifd, offset_tag, name in _DATE_TAGS:
        tags = exif_ifd if ifd == _EXIF_IFD else ifd0
        taken = parse_exif_date(tags.get(tag))
        if taken:
            record["taken"], record["date_source"] = taken, name
            # OffsetTime belongs to DateTime but some cameras write only it; it is the
            # camera's zone either way.
            record["taken_offset"] = parse_offset(exif_ifd.get(offset_tag)) or parse_offset(
                exif_ifd.get(_OFFSET_TIME))
            break
    record["camera_make"] = clean_text(ifd0.get(_MAKE))
    record["camera_model"] = clean_text(ifd0.get(_MODEL))
    record["lens"] = clean_text(exif_ifd.get(_LENS_MODEL))
    position = parse_gps(gps)
    if position:
        record["latitude"], record["longitude"], record["altitude"] = position
    return record if any(v is not None for v in record.values()) else None


def parse_exif_date(value: object) -> str | None:
    """``"2019:07:14 18:03:22"`` -> ``"2019-07-14T18:03:22"``; None for anything not a real date.

    Accepts ``-`` or ``/`` separators and a missing time or seconds (editors write them);
    refuses ``0000:00:00``, February 30th, years before 1826 and other placeholders.
    """
    text = _as_text(value)
    if not text:
        return None
    match = _DATE.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    if not MIN_YEAR <= year <= MAX_YEAR:
        return None
    try:
        return datetime(year, month, day, hour, minute, second).isoformat()
    except ValueError:
        return None


def parse_offset(value: object) -> str | None:
    """``"+01:00"`` (or ``"+0100"``) -> ``"+01:00"``; None unless a real UTC offset (-12:00..+14:00)."""
    text = _as_text(value)
    match = _OFFSET.match(text or "")
    if not match:
        return None
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3))
    if minutes >= 60 or hours > 14 or (sign == "-" and hours > 12):
        return None
    return f"{sign}{hours:02d}:{minutes:02d}"


def clean_text(value: object) -> str | None:
    """An EXIF text field as a person would write it, or None when it is not text."""
    text = _as_text(value)
    if text is None:
        return None
    text = "".join(c for c in text if c.isprintable()).strip()
    if not text or len(text) > MAX_TEXT:
        return None
    return " ".join(text.split())


def parse_gps(gps: Mapping[int, object]) -> tuple[float, float, float | None] | None:
    """(latitude, longitude, altitude or None) from a GPS IFD; None without a valid position."""
    latitude = _coordinate(gps.get(2), gps.get(1), "N", "S", 90.0)
    longitude = _coordinate(gps.get(4), gps.get(3), "E", "W", 180.0)
    if latitude is None or longitude is None or (latitude == 0.0 and longitude == 0.0):
        return None
    altitude = _number(gps.get(6))
    if altitude is not None:
        ref = gps.get(5)
        if ref == 1 or _ref(ref) in ("1", "\x01"):  # 1: below sea level (a BYTE: int or bytes)
            altitude = -altitude
        if not ALTITUDE_RANGE[0] <= altitude <= ALTITUDE_RANGE[1]:
            altitude = None
    return round(latitude, 7), round(longitude, 7), None if altitude is None else round(altitude, 2)


def metadata_json(record: dict[str, Any] | None) -> str:
    """The record as the decode stage's ``metadata`` column carries it ("" for none)."""
    return json.dumps(record, separators=(",", ":")) if record else ""


def metadata_array(values: Iterable[object] | None, n: int) -> pa.Array:
    """The ``metadata`` column of ``n`` result rows from the decode stage's JSON texts."""
    if values is None:
        return pa.nulls(n, METADATA_TYPE)
    records = []
    for value in values:
        text = str(value) if value is not None else ""
        records.append({k: v for k, v in json.loads(text).items() if k in FIELDS} if text else None)
    return pa.array(records, type=METADATA_TYPE)


def _coordinate(value: object, ref: object, positive: str, negative: str, limit: float) -> float | None:
    """Degrees from EXIF's (degrees, minutes, seconds) rationals, signed by its N/S or E/W ref."""
    if isinstance(value, (tuple, list)):
        if not 1 <= len(value) <= 3:
            return None
        parts = [_number(v) for v in value]
        if any(p is None or p < 0 for p in parts):
            return None
        degrees = parts[0] or 0.0
        minutes = parts[1] if len(parts) > 1 else 0.0
        seconds = parts[2] if len(parts) > 2 else 0.0
        if (minutes or 0.0) >= 60 or (seconds or 0.0) >= 60.5:
            return None
        result = degrees + (minutes or 0.0) / 60 + (seconds or 0.0) / 3600
    else:
        number = _number(value)
        if number is None or number < 0:
            return None
        result = number
    direction = _ref(ref)
    if direction not in (None, positive, negative):
        return None
    if result > limit:
        return None
    return -result if direction == negative else result


def _number(value: object) -> float | None:
    """A finite float from an EXIF number (IFDRational, int, float); None for 1/0 or text."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes, tuple, list)):
        return None
    try:
        if getattr(value, "denominator", 1) == 0:
            return None
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _ref(value: object) -> str | None:
    text = _as_text(value)
    if text is None:
        return None
    text = text.strip("\x00 ").upper()
    return text or None


def _as_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.split(b"\x00", 1)[0].decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return value.split("\x00", 1)[0]


def _safe_dict(exif: Image.Exif) -> dict[int, object]:
    try:
        return dict(exif.items())
    except Exception:  # noqa: BLE001 - as above
        return {}


def _safe_ifd(exif: Image.Exif, tag: int) -> dict[int, object]:
    """One sub-IFD as a dict; an IFD pointer to nowhere (truncated block) is an empty IFD."""
    try:
        ifd = exif.get_ifd(tag)
        return dict(ifd.items()) if isinstance(ifd, Mapping) else {}
    except Exception:  # noqa: BLE001 - as above
        return {}


def camera_name(make: str | None, model: str | None) -> str | None:
    """Make and model as one name, without the make twice: ("Canon", "Canon EOS 5D") -> "Canon EOS 5D"."""
    if not model:
        return make or None
    if not make or model.lower().startswith(make.lower().split()[0]):
        return model
    return f"{make} {model}"


def metadata_rows(path: str, meta: dict[str, Any] | None, places: list[str]) -> list[IndexRow]:
    """The ``photo_meta`` row of a record's metadata, if it has any, and one
    ``photo_places`` row per folded place name."""
    if not meta:
        return []
    row = IndexRow("photo_meta", path, {
        "taken": meta["taken"].replace("T", " ") if meta.get("taken") else None,
        "taken_offset": meta.get("taken_offset"),
        "date_source": meta.get("date_source"),
        "camera": camera_name(meta.get("camera_make"), meta.get("camera_model")),
        "lens": meta.get("lens"),
        "latitude": meta.get("latitude"),
        "longitude": meta.get("longitude"),
        "altitude": meta.get("altitude"),
        "city": meta.get("city"),
        "region": meta.get("region"),
        "country": meta.get("country"),
    })
    return [row, *(IndexRow("photo_places", path, {"name": name}) for name in places)]


def describe(meta: dict[str, Any] | None) -> str:
    """One line for people: "taken 2019-07-14 18:03:22 +01:00 - Apple iPhone 12 - Lisbon, Portugal"."""
    if not meta:
        return ""
    parts = []
    if meta.get("taken"):
        parts.append(f"taken {meta['taken'].replace('T', ' ')}"
                     + (f" {meta['taken_offset']}" if meta.get("taken_offset") else ""))
    camera = camera_name(meta.get("camera_make"), meta.get("camera_model"))
    if camera:
        parts.append(camera + (f" ({meta['lens']})" if meta.get("lens") else ""))
    place = ", ".join(dict.fromkeys(n for n in (meta.get("city"), meta.get("region"), meta.get("country")) if n))
    if meta.get("latitude") is not None:
        where = f"{meta['latitude']:.5f}, {meta['longitude']:.5f}"
        parts.append(f"{place} ({where})" if place else where)
    return " - ".join(parts)
