"""Photo metadata (date, camera, GPS), HEIC/AVIF and offline places, on real files.

Test photos are copies of the real ImageNet photos in ../shared/eval with real EXIF tags
written by Pillow's Exif API, and HEIC/AVIF files encoded by pillow-heif and Pillow.
No package we depend on ships a camera photo with EXIF (the only JPEGs in the venv are
scikit-learn's china.jpg and flower.jpg, which carry none), so none are used here.
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import struct
from pathlib import Path

import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from pipeline.decode import decode_batch, decode_photo
from pipeline.errors import DecodeError
from pipeline.formats import register_formats
from pipeline.metadata import (
    clean_text,
    describe,
    metadata_from_exif,
    parse_exif_date,
    parse_gps,
    parse_offset,
)
from pipeline.places import fold, place_of, place_words
from pipeline.scan import looks_like_image, scan_library

EXIF, GPS = 0x8769, 0x8825
LISBON = (38.7223, -9.1393)
MAX_PIXELS = 200_000_000


def dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Degrees as EXIF's (degrees, minutes, seconds) rationals."""
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600 * 1000)
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(seconds, 1000)


def camera_exif(orientation: int = 1, original: str | None = "2019:07:14 18:03:22",
                offset: str | None = "+01:00", gps: tuple[float, float] | None = LISBON) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone 12 Pro"
    exif[0x0132] = "2020:01:01 10:00:00"  # DateTime: when an editor last saved it
    exif[0x0112] = orientation
    sub = exif.get_ifd(EXIF)
    if original:
        sub[0x9003] = original
    if offset:
        sub[0x9011] = offset
    sub[0xA434] = "iPhone 12 Pro back triple camera 4.2mm f/1.6"
    if gps:
        g = exif.get_ifd(GPS)
        g[1], g[2] = ("N" if gps[0] >= 0 else "S"), dms(abs(gps[0]))
        g[3], g[4] = ("E" if gps[1] >= 0 else "W"), dms(abs(gps[1]))
        g[5], g[6] = b"\x00", IFDRational(3550, 100)
    return exif


def with_exif(source: Path, target: Path, exif: Image.Exif, fmt: str = "JPEG") -> Path:
    """A copy of a real photo re-encoded with ``exif`` written into it."""
    register_formats()
    with Image.open(source) as im:
        # As bytes: pillow-heif turns the orientation of EXIF bytes into a HEIF rotation (irot).
        im.convert("RGB").save(target, fmt, exif=exif.tobytes(), quality=85)
    return target


@pytest.fixture(scope="module")
def photo(eval_photos) -> Path:
    return eval_photos[207]  # a real 500x375-ish JPEG


def test_camera_photo_gives_date_offset_camera_lens_and_position(tmp_path, photo):
    path = with_exif(photo, tmp_path / "IMG_0001.jpg", camera_exif())
    meta = decode_photo(str(path), 256, MAX_PIXELS).metadata
    assert meta is not None
    assert meta["taken"] == "2019-07-14T18:03:22" and meta["taken_offset"] == "+01:00"
    assert meta["date_source"] == "DateTimeOriginal"
    assert (meta["camera_make"], meta["camera_model"]) == ("Apple", "iPhone 12 Pro")
    assert meta["lens"].startswith("iPhone 12 Pro back")
    assert meta["latitude"] == pytest.approx(LISBON[0], abs=1e-5)
    assert meta["longitude"] == pytest.approx(LISBON[1], abs=1e-5)
    assert meta["altitude"] == pytest.approx(35.5)


def test_date_falls_back_to_digitized_then_datetime_never_to_mtime(tmp_path, photo):
    exif = camera_exif(original=None, offset=None, gps=None)
    exif.get_ifd(EXIF)[0x9004] = "2018:05:01 09:30:00"
    exif.get_ifd(EXIF)[0x9012] = "-04:00"
    meta = decode_photo(str(with_exif(photo, tmp_path / "a.jpg", exif)), 256, MAX_PIXELS).metadata
    assert (meta["taken"], meta["taken_offset"], meta["date_source"]) == (
        "2018-05-01T09:30:00", "-04:00", "DateTimeDigitized")
    meta = decode_photo(str(with_exif(photo, tmp_path / "b.jpg", camera_exif(original=None, gps=None))),
                        256, MAX_PIXELS).metadata
    assert (meta["taken"], meta["date_source"]) == ("2020-01-01T10:00:00", "DateTime")
    bare = tmp_path / "c.jpg"
    Image.open(photo).save(bare, "JPEG")
    os.utime(bare, (1_262_304_000, 1_262_304_000))  # 2010: must not become the date taken
    assert decode_photo(str(bare), 256, MAX_PIXELS).metadata is None


HOSTILE = {
    "0000:00:00 date": ({EXIF: {0x9003: "0000:00:00 00:00:00"}}, "taken"),
    "February 30th": ({EXIF: {0x9003: "2019:02:30 12:00:00"}}, "taken"),
    "date as a number": ({EXIF: {0x9003: 20190714}}, "taken"),
    "date of spaces": ({EXIF: {0x9003: "    :  :     :  :  "}}, "taken"),
    "offset +99:00": ({EXIF: {0x9003: "2019:07:14 18:03:22", 0x9011: "+99:00"}}, "taken_offset"),
    "latitude 91": ({GPS: {1: "N", 2: (91.0, 0.0, 0.0), 3: "E", 4: (9.0, 0.0, 0.0)}}, "latitude"),
    "zero denominator": ({GPS: {1: "N", 2: (IFDRational(38, 1), IFDRational(1, 0), IFDRational(0, 1)),
                                3: "W", 4: (9.0, 8.0, 0.0)}}, "latitude"),
    "ref 'Q'": ({GPS: {1: "Q", 2: (38.0, 0.0, 0.0), 3: "W", 4: (9.0, 0.0, 0.0)}}, "latitude"),
    "null island 0,0": ({GPS: {1: "N", 2: (0.0, 0.0, 0.0), 3: "E", 4: (0.0, 0.0, 0.0)}}, "latitude"),
    "minutes 75": ({GPS: {1: "N", 2: (38.0, 75.0, 0.0), 3: "W", 4: (9.0, 0.0, 0.0)}}, "latitude"),
    "altitude 1/0": ({GPS: {1: "N", 2: (38.0, 0.0, 0.0), 3: "W", 4: (9.0, 0.0, 0.0),
                            6: IFDRational(1, 0)}}, "altitude"),
    "make of 10,000 characters": ({0: {0x010F: "Canon" * 2000}}, "camera_make"),
    "make of control bytes": ({0: {0x010F: "\x01\x02\x03"}}, "camera_make"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_exif_empties_the_field_and_keeps_the_photo(tmp_path, photo, case):
    tags, emptied = HOSTILE[case]
    exif = Image.Exif()
    exif[0x0110] = "PowerShot G7"  # one good field, so the record exists
    for ifd, values in tags.items():
        target = exif if ifd == 0 else exif.get_ifd(ifd)
        for tag, value in values.items():
            target[tag] = value
    path = with_exif(photo, tmp_path / "hostile.jpg", exif)
    decoded = decode_photo(str(path), 256, MAX_PIXELS)  # never raises for bad metadata
    assert decoded.pixels.size > 0
    assert decoded.metadata is not None and decoded.metadata[emptied] is None, decoded.metadata
    if emptied != "camera_model":
        assert decoded.metadata["camera_model"] == "PowerShot G7"


def raw_exif(ifd0: list[tuple[int, int, int, bytes]], gps: list[tuple[int, int, int, bytes]]) -> bytes:
    """An EXIF block built byte by byte, so tags can have types Pillow would never write.

    Entries are (tag, TIFF type, count, value bytes), big-endian; the GPS IFD follows IFD0.
    """
    def ifd(entries, start: int, extra: list[tuple[int, int, int, bytes]]) -> bytes:
        entries = sorted(entries + extra)
        data_at = start + 2 + 12 * len(entries) + 4
        head, data = struct.pack(">H", len(entries)), b""
        for tag, kind, count, value in entries:
            if len(value) <= 4:
                head += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\0")
            else:
                head += struct.pack(">HHII", tag, kind, count, data_at + len(data))
                data += value + b"\0" * (len(value) % 2)
        return head + b"\0\0\0\0" + data

    first = ifd(ifd0, 8, [(GPS, 4, 1, b"\0\0\0\0")])
    gps_at = 8 + len(first)
    first = ifd(ifd0, 8, [(GPS, 4, 1, struct.pack(">I", gps_at))])
    return b"MM\0*\0\0\0\x08" + first + ifd(gps, gps_at, [])


def test_wrong_tag_types_are_empty_fields(tmp_path, photo):
    """A model written as a RATIONAL, a latitude as ASCII text: fields empty, the rest read."""
    block = raw_exif(
        [(0x010F, 2, 6, b"Canon\0"), (0x0110, 5, 1, struct.pack(">II", 5, 1))],
        [(1, 2, 2, b"N\0"), (2, 2, 5, b"38.7\0"), (3, 2, 2, b"W\0"), (4, 5, 3, struct.pack(">6I", 9, 1, 8, 1, 0, 1))],
    )
    with Image.open(photo) as im:
        im.convert("RGB").save(tmp_path / "types.jpg", "JPEG", exif=b"Exif\0\0" + block)
    decoded = decode_photo(str(tmp_path / "types.jpg"), 256, MAX_PIXELS)
    assert decoded.metadata is not None
    assert decoded.metadata["camera_make"] == "Canon"
    assert decoded.metadata["camera_model"] is None and decoded.metadata["latitude"] is None


def test_truncated_and_garbage_exif_blocks_mean_no_metadata(tmp_path, photo):
    good = with_exif(photo, tmp_path / "good.jpg", camera_exif()).read_bytes()
    start = good.index(b"Exif\x00\x00")
    length = struct.unpack(">H", good[start - 2 : start])[0]
    # The same APP1 segment with its IFD entries cut short and filled with 0xFF.
    cut = good[: start + 40] + b"\xff" * (length - 42) + good[start - 2 + length :]
    (tmp_path / "cut.jpg").write_bytes(cut)
    decoded = decode_photo(str(tmp_path / "cut.jpg"), 256, MAX_PIXELS)
    assert decoded.pixels.size > 0
    assert decoded.metadata is None or decoded.metadata["taken"] is None


def test_big_exif_block_is_read_within_its_segment(tmp_path, photo):
    exif = camera_exif()
    exif.get_ifd(EXIF)[0x927C] = b"\x00" * 60_000  # a 60 KB maker note, near JPEG's 64 KB limit
    meta = decode_photo(str(with_exif(photo, tmp_path / "big.jpg", exif)), 256, MAX_PIXELS).metadata
    assert meta["taken"] == "2019-07-14T18:03:22" and meta["camera_model"] == "iPhone 12 Pro"


def test_parsers_on_raw_values():
    assert parse_exif_date("2019:07:14 18:03:22") == "2019-07-14T18:03:22"
    assert parse_exif_date(b"2019-07-14 18:03\x00") == "2019-07-14T18:03:00"
    assert parse_exif_date("2019:07:14") == "2019-07-14T00:00:00"
    assert parse_exif_date("1601:01:01 00:00:00") is None and parse_exif_date(None) is None
    assert parse_offset("+0530") == "+05:30" and parse_offset("-13:00") is None
    assert clean_text(b"Canon\x00\x00junk") == "Canon" and clean_text("  NIKON   CORPORATION ") == "NIKON CORPORATION"
    assert parse_gps({1: "S", 2: 33.86, 3: "E", 4: 151.21}) == (-33.86, 151.21, None)
    assert parse_gps({2: (38.0, 43.0, 20.0), 4: (9.0, 8.0, 21.0)}) is not None  # no refs: N and E
    assert parse_gps({1: "N", 2: (38.0, 43.0), 3: "W", 4: (9.0, 8.0), 5: 1, 6: 10.0})[2] == -10.0
    assert metadata_from_exif(Image.Exif()) is None


def test_heic_decodes_upright_with_its_metadata(tmp_path, photo):
    """pillow-heif writes EXIF orientation 6 as a HEIF rotation, which libheif applies on decode."""
    register_formats()
    with Image.open(photo) as im:
        width, height = im.size
    path = with_exif(photo, tmp_path / "IMG_0002.HEIC", camera_exif(orientation=6), fmt="HEIF")
    decoded = decode_photo(str(path), 128, MAX_PIXELS)
    assert (decoded.width, decoded.height) == (height, width)
    assert decoded.pixels.shape[0] > decoded.pixels.shape[1] if height < width else True
    assert decoded.metadata["taken"] == "2019-07-14T18:03:22"
    assert decoded.metadata["latitude"] == pytest.approx(LISBON[0], abs=1e-5)


def test_avif_decodes_upright_with_its_metadata(tmp_path, photo):
    register_formats()
    with Image.open(photo) as im:
        width, height = im.size
    path = with_exif(photo, tmp_path / "IMG_0003.avif", camera_exif(orientation=6), fmt="AVIF")
    decoded = decode_photo(str(path), 128, MAX_PIXELS)
    assert (decoded.width, decoded.height) == (height, width)
    assert decoded.metadata["camera_model"] == "iPhone 12 Pro"


def test_heic_is_scanned_by_extension_and_by_content(tmp_path, photo):
    with_exif(photo, tmp_path / "a.heic", camera_exif(), fmt="HEIF")
    with_exif(photo, tmp_path / "b.HIF", camera_exif(), fmt="HEIF")
    (tmp_path / "IMG_0004").write_bytes((tmp_path / "a.heic").read_bytes())  # no extension: sniffed
    with_exif(photo, tmp_path / "c.avif", camera_exif(), fmt="AVIF")
    (tmp_path / "notes.heic.txt").write_text("not a photo")
    found = sorted(Path(f.path).name for f in scan_library([str(tmp_path)]))
    assert found == ["IMG_0004", "a.heic", "b.HIF", "c.avif"]
    assert looks_like_image(tmp_path / "IMG_0004")


def test_broken_heic_files_are_decode_errors(tmp_path, photo):
    data = with_exif(photo, tmp_path / "ok.heic", camera_exif(), fmt="HEIF").read_bytes()
    (tmp_path / "half.heic").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.heic").write_bytes(data[:32] + os.urandom(2000))
    (tmp_path / "empty.heic").write_bytes(b"")
    for name in ("half.heic", "header.heic", "empty.heic"):
        with pytest.raises(DecodeError):
            decode_photo(str(tmp_path / name), 128, MAX_PIXELS)


def test_decode_batch_carries_metadata_as_json(tmp_path, photo):
    path = with_exif(photo, tmp_path / "x.jpg", camera_exif())
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    st, sp = path.stat(), plain.stat()
    out = decode_batch({"path": [str(path), str(plain)], "size": [st.st_size, sp.st_size],
                        "mtime_ns": [st.st_mtime_ns, sp.st_mtime_ns]}, 64, MAX_PIXELS)
    assert '"taken":"2019-07-14T18:03:22"' in out["metadata"][0] and out["metadata"][1] == ""


def test_places_offline():
    place = place_of(*LISBON)
    assert place and place["country"] == "Portugal" and place["region"] == "Lisbon"
    assert "lisbon" in place_words(place) and "portugal" in place_words(place)
    assert place_of(30.0, -40.0) is None  # mid-Atlantic: no town within 100 km
    assert fold("São  Paulo!") == "sao paulo"
    assert "taken 2019-07-14 18:03:22 +01:00" in describe(
        {"taken": "2019-07-14T18:03:22", "taken_offset": "+01:00", **place, "latitude": 1.0, "longitude": 2.0})


def test_exif_written_by_pillow_round_trips_through_a_file():
    """Guards the test helpers themselves: what camera_exif writes, Pillow reads back."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8)).save(buffer, "JPEG", exif=camera_exif())
    meta = metadata_from_exif(Image.open(io.BytesIO(buffer.getvalue())).getexif())
    assert meta["camera_make"] == "Apple" and meta["taken_offset"] == "+01:00"


def test_show_captions_when_and_where():
    from pipeline.show import _caption_lines

    meta = {"taken": "2019-07-14T18:03:22", "taken_offset": "+01:00", "camera_make": "Apple",
            "camera_model": "iPhone 12 Pro", "lens": None, "latitude": 38.7223, "longitude": -9.1393,
            "city": "Lisbon", "region": "Lisbon", "country": "Portugal"}
    [line] = _caption_lines({"models": {}, "metadata": meta}, "")
    assert line == "taken 2019-07-14 18:03:22 +01:00 - Apple iPhone 12 Pro - Lisbon, Portugal (38.72230, -9.13930)"


def test_an_index_from_before_metadata_and_embeddings_is_filled_in_by_the_next_run(tmp_path, photo, eval_photos):
    """Photos indexed before the classifier's output gained embeddings (and before decode
    read metadata) carry an older model key: the next run re-runs classify on them once,
    which reads their EXIF too; the run after that finds nothing to do."""
    from pipeline.indexer import index_library
    from pipeline.settings import IndexSettings

    root = tmp_path / "library"
    root.mkdir()
    with_exif(photo, root / "lisbon.jpg", camera_exif())
    shutil.copy(eval_photos[3], root / "plain.jpg")
    index = tmp_path / "index"
    settings = IndexSettings(roots=(str(root),), index_dir=index, tasks=("classify",))
    assert index_library(settings).indexed == 2
    db = sqlite3.connect(index / "index.sqlite")
    current = db.execute("SELECT DISTINCT models FROM photos").fetchall()
    assert len(current) == 1 and "#v2" in current[0][0]
    with db:  # what an index written before this change holds: v1 keys, no metadata rows
        db.execute("UPDATE photos SET models = replace(models, '#v2', '')")
        db.execute("DELETE FROM photo_places")
        db.execute("DELETE FROM photo_meta")

    again = index_library(settings)
    assert (again.changed, again.indexed, again.unchanged) == (2, 2, 0)
    assert db.execute("SELECT camera, country FROM photo_meta").fetchall() == [("Apple iPhone 12 Pro", "Portugal")]
    assert [m for (m,) in db.execute("SELECT models FROM photos")] == [current[0][0]] * 2
    assert index_library(settings).unchanged == 2
