"""Date, camera, position and place filters on a real index written by the real writer.

Photos are result rows (``RESULT_SCHEMA``) with metadata as the decode stage makes it,
committed by :class:`IndexWriter`, which looks up places with the real GeoNames data
and writes Parquet and SQLite; searches go through the library and the CLI.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from pipeline.errors import QueryError
from pipeline.inference import RESULT_SCHEMA
from pipeline.parquet_sink import parquet_dir
from pipeline.plan import WorkItem
from pipeline.records import ScannedFile
from pipeline.search_filters import Filters, build_filters, date_range, search_photos
from pipeline.store import IndexStore
from pipeline.writer import IndexWriter, ModelKey

LISBON, PORTO, NEW_YORK, ORANGE_FR = (38.7223, -9.1393), (41.1496, -8.611), (40.7128, -74.006), (44.1381, 4.8075)
PHOTOS = {  # name: (labels, taken, camera, position)
    "lisbon-beach-2019.jpg": ([("seashore", 0.8)], "2019-07-14T18:03:22", ("Apple", "iPhone 12 Pro"), LISBON),
    "lisbon-tram-2021.jpg": ([("streetcar", 0.9)], "2021-01-03T10:00:00", ("Canon", "Canon EOS R6"), LISBON),
    "porto-beach-2019.jpg": ([("seashore", 0.6)], "2019-08-01T12:00:00", ("Apple", "iPhone 8"), PORTO),
    "ny-snow-jan-2019.jpg": ([("snowplow", 0.7)], "2019-01-20T09:00:00", ("Apple", "iPhone 12 Pro"), NEW_YORK),
    "alps-snow-jan-2020.jpg": ([("alp", 0.9)], "2020-01-05T11:00:00", ("NIKON CORPORATION", "NIKON D750"), None),
    "orange-fruit.jpg": ([("orange", 0.9)], "2018-05-01T08:00:00", None, ORANGE_FR),
    "no-exif-beach.jpg": ([("seashore", 0.9)], None, None, None),
    "mushroom.jpg": ([("hen-of-the-woods", 0.8)], None, None, None),  # a label with "of" and "the"
    "our-boat.jpg": ([("Our Boat", 0.9)], None, None, None),  # named like a custom label
    "hague-palace-2018.jpg": ([("palace", 0.8)], "2018-03-01T10:00:00", None, (52.0799, 4.3113)),
    "douglas-castle-2017.jpg": ([("castle", 0.8)], "2017-06-01T10:00:00", None, (54.15, -4.48)),  # Isle of Man
}


def metadata(taken, camera, position):
    if not (taken or camera or position):
        return None
    return {"taken": taken, "taken_offset": "+01:00" if taken else None,
            "date_source": "DateTimeOriginal" if taken else None,
            "camera_make": camera[0] if camera else None, "camera_model": camera[1] if camera else None,
            "lens": None, "latitude": position[0] if position else None,
            "longitude": position[1] if position else None, "altitude": 12.0 if position else None}


def result_rows(names) -> pa.Table:
    rows = []
    for name in names:
        labels, taken, camera, position = PHOTOS[name]
        rows.append({"path": f"/p/{name}", "size": 5, "mtime_ns": 7, "width": 40, "height": 30,
                     "fingerprint": f"f-{name}", "tasks": "classify", "previous_path": None, "error_stage": "",
                     "error_reason": "", "labels": [{"label": label, "score": s} for label, s in labels],
                     "objects": None, "segmentation": None, "metadata": metadata(taken, camera, position)})
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    store = IndexStore.open(folder)
    writer = IndexWriter(store, parquet_dir(folder), store.begin_run(["/p"], {}),
                         {"classify": ModelKey("m", "m.pth")}, commit_rows=4)
    writer.add(result_rows(sorted(PHOTOS)))
    writer.flush()
    store.close()
    return folder


@pytest.fixture()
def store(index):
    store = IndexStore.open(index, create=False)
    yield store
    store.close()


def found(store, terms, filters: Filters | None = None, **kw) -> list[str]:
    return [Path(f.hit.path).name for f in search_photos(store, terms, filters or Filters(), **kw)]


def test_a_year_or_month_in_the_query_filters_by_date(store):
    assert found(store, ["beach", "2019"]) == ["lisbon-beach-2019.jpg", "porto-beach-2019.jpg"]
    assert found(store, ["beach", "2019-08"]) == ["porto-beach-2019.jpg"]
    assert found(store, ["snow", "january"]) == ["alps-snow-jan-2020.jpg", "ny-snow-jan-2019.jpg"]
    assert found(store, ["snow", "january", "2019"]) == ["ny-snow-jan-2019.jpg"]


def test_a_place_in_the_query_filters_by_place(store):
    assert found(store, ["lisbon"]) == ["lisbon-tram-2021.jpg", "lisbon-beach-2019.jpg"]  # newest first
    assert found(store, ["beach", "portugal"]) == ["lisbon-beach-2019.jpg", "porto-beach-2019.jpg"]
    assert found(store, ["new", "york"]) == ["ny-snow-jan-2019.jpg"]  # a two-word place
    assert found(store, ["orange"]) == ["orange-fruit.jpg"]  # a label first: the fruit, found by label
    assert found(store, ["beach", "atlantis"]) == []  # neither a label nor a place: matches nothing


def test_an_excluded_place_leaves_out_the_photos_taken_there(store):
    assert found(store, ["beach", "-lisbon"]) == ["no-exif-beach.jpg", "porto-beach-2019.jpg"]  # no GPS: kept
    assert found(store, ["beach", "-portugal"]) == ["no-exif-beach.jpg"]
    assert found(store, ["beach", "-orange"]) == found(store, ["beach"])  # a label first: "-orange" is the fruit
    assert found(store, ["snow", "-new york"]) == ["alps-snow-jan-2020.jpg"]  # a quoted place of two words
    assert "ny-snow-jan-2019.jpg" not in found(store, ["-united states"])  # filters alone: newest first


def test_filters_without_words(store):
    assert found(store, [], build_filters(year=2019, place="Lisbon")) == ["lisbon-beach-2019.jpg"]
    assert found(store, [], build_filters(date_from="2019-07", date_to="2020")) == [
        "alps-snow-jan-2020.jpg", "porto-beach-2019.jpg", "lisbon-beach-2019.jpg"]
    assert found(store, [], build_filters(camera="iphone 12")) == ["lisbon-beach-2019.jpg", "ny-snow-jan-2019.jpg"]
    assert found(store, [], build_filters(camera="nikon")) == ["alps-snow-jan-2020.jpg"]
    assert found(store, [], build_filters(month="jan")) == [
        "lisbon-tram-2021.jpg", "alps-snow-jan-2020.jpg", "ny-snow-jan-2019.jpg"]


def test_near_is_a_radius_around_a_position(store):
    near_lisbon = build_filters(near="38.72,-9.14", km=5)
    assert found(store, [], near_lisbon) == ["lisbon-tram-2021.jpg", "lisbon-beach-2019.jpg"]
    assert found(store, ["beach"], build_filters(near="38.72,-9.14", km=400)) == [
        "lisbon-beach-2019.jpg", "porto-beach-2019.jpg"]  # Porto is 274 km north
    assert found(store, [], build_filters(near="38.72,-9.14", km=200)) == ["lisbon-tram-2021.jpg",
                                                                          "lisbon-beach-2019.jpg"]


def test_sort_by_score_or_date(store):
    assert found(store, ["beach"]) == ["no-exif-beach.jpg", "lisbon-beach-2019.jpg", "porto-beach-2019.jpg"]
    assert found(store, ["beach"], sort="date") == ["porto-beach-2019.jpg", "lisbon-beach-2019.jpg",
                                                    "no-exif-beach.jpg"]  # undated last


def test_bad_values_say_what_is_accepted():
    with pytest.raises(QueryError, match="YYYY-MM"):
        date_range("2019-13")
    with pytest.raises(QueryError, match="1-12"):
        build_filters(month="smarch")
    with pytest.raises(QueryError, match="LAT,LON"):
        build_filters(near="lisbon")
    with pytest.raises(QueryError, match="after"):
        build_filters(date_from="2020", date_to="2019")


@pytest.mark.parametrize("args, says", [
    (["--from", "2019-13"], "YYYY, YYYY-MM or YYYY-MM-DD"),
    (["--to", "yesterday"], "YYYY, YYYY-MM or YYYY-MM-DD"),
    (["--month", "13"], "1-12 or a month name"),
    (["--year", "3000"], "between 1826 and 2100"),
    (["--year", "twenty"], "is not a valid integer"),
    (["--near", "91,0"], "latitude is -90..90"),
    (["--near", "38,-9", "--km", "0"], "above 0"),
    (["--sort", "size"], "'score', 'date'"),
    (["--place", "!!"], "city, region or country"),
])
def test_cli_bad_values_exit_2(index, args, says):
    result = CliRunner().invoke(cli, ["search", "--index", str(index), *args])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output


def test_cli_json_shows_when_and_where(index):
    result = CliRunner().invoke(cli, ["search", "--year", "2019", "--place", "lisbon", "--json", "--index", str(index)])
    assert result.exit_code == 0, result.output
    [hit] = json.loads(result.output)
    assert hit["taken"] == "2019-07-14T18:03:22+01:00" and hit["date_source"] == "DateTimeOriginal"
    assert hit["camera"] == "Apple iPhone 12 Pro" and hit["gps"]["latitude"] == pytest.approx(38.7223)
    assert hit["place"]["country"] == "Portugal" and hit["place"]["region"] == "Lisbon"
    text = CliRunner().invoke(cli, ["search", "beach", "2019", "--index", str(index)]).output
    assert "2019-07-14" in text and "Portugal" in text


def test_parquet_and_sqlite_hold_the_metadata(index):
    table = pq.read_table(parquet_dir(index))
    records = {Path(r["path"]).name: r["metadata"] for r in table.select(["path", "metadata"]).to_pylist()}
    assert records["no-exif-beach.jpg"] is None
    assert records["lisbon-beach-2019.jpg"]["country"] == "Portugal"
    assert records["alps-snow-jan-2020.jpg"]["city"] is None  # no GPS: no place
    db = sqlite3.connect(index / "index.sqlite")
    places = {name for (name,) in db.execute("SELECT DISTINCT name FROM photo_places")}
    assert {"lisbon", "portugal", "new york", "united states"} <= places


def test_a_moved_photo_keeps_its_metadata(tmp_path):
    store = IndexStore.open(tmp_path)
    keys = {"classify": ModelKey("m", "m.pth")}
    writer = IndexWriter(store, parquet_dir(tmp_path), store.begin_run(["/p"], {}), keys, commit_rows=10)
    writer.add(result_rows(["lisbon-beach-2019.jpg"]))
    writer.flush()
    mover = IndexWriter(store, parquet_dir(tmp_path), store.begin_run(["/p"], {}), keys, commit_rows=10)
    mover.move([WorkItem(ScannedFile("/p/moved/beach.jpg", 5, 7), (), "/p/lisbon-beach-2019.jpg")])
    [hit] = search_photos(store, ["lisbon"])
    assert hit.hit.path == "/p/moved/beach.jpg" and hit.details["taken"].startswith("2019-07-14")
    assert hit.details["place"]["country"] == "Portugal"
    store.close()


def test_an_index_from_before_metadata_refuses_filters_but_searches_words(tmp_path):
    store = IndexStore.open(tmp_path)
    writer = IndexWriter(store, parquet_dir(tmp_path), store.begin_run(["/p"], {}),
                         {"classify": ModelKey("m", "m.pth")}, commit_rows=10)
    writer.add(result_rows(["lisbon-beach-2019.jpg"]))
    writer.flush()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE photo_places")
        conn.exec_driver_sql("DROP TABLE photo_meta")
    assert found(store, ["beach"]) == ["lisbon-beach-2019.jpg"]
    with pytest.raises(QueryError, match="before photos' dates"):
        found(store, ["beach", "2019"])
    store.close()


def test_common_words_are_left_out(store):
    """Words that name nothing here are not ANDed in; full-text matching would have made
    "photos of the beach" a search for the mushroom "hen-of-the-woods"."""
    assert found(store, ["photos", "of", "the", "beach", "in", "lisbon"]) == ["lisbon-beach-2019.jpg"]
    assert found(store, ["a", "hen-of-the-woods"]) == ["mushroom.jpg"]
    assert found(store, ["the", "beach", "in", "2019"]) == ["lisbon-beach-2019.jpg", "porto-beach-2019.jpg"]
    assert found(store, ["our", "boat"]) == ["our-boat.jpg"]  # a label's name, common word and all
    assert found(store, ["in", "our", "boat"]) == ["our-boat.jpg"]
    assert found(store, ["boat"]) == []  # the vocabulary's boats: not "Our Boat"
    assert found(store, ["a beach in lisbon"]) == ["lisbon-beach-2019.jpg"]  # a quoted phrase matching nothing
    assert found(store, ["our boat"]) == ["our-boat.jpg"]  # ... but one that does is kept whole
    assert found(store, ["palace", "the", "hague"]) == found(store, ["palace", "the hague"]) == [
        "hague-palace-2018.jpg"]  # places are read before common words are left out
    assert found(store, ["castle", "on", "the", "isle", "of", "man"]) == ["douglas-castle-2017.jpg"]
    assert found(store, ["beach", "the."]) == found(store, ["beach"])  # punctuation aside
    assert found(store, ["our", "boat."]) == ["our-boat.jpg"]
    with pytest.raises(QueryError, match="only common words"):
        found(store, ["the", "a"])
    with pytest.raises(QueryError, match="only common words"):
        found(store, ["the", "!!"])
    assert found(store, ["the"], build_filters(place="porto")) == ["porto-beach-2019.jpg"]  # filters stand alone


def test_cli_says_which_words_it_left_out_and_which_name_nothing(index):
    def run(*terms: str) -> tuple[str, str]:
        result = CliRunner().invoke(cli, ["search", *terms, "--index", str(index)])
        assert result.exit_code == 0, result.output
        return result.stdout, result.stderr

    out, err = run("photos", "of", "a", "beach")
    assert "lisbon-beach-2019.jpg" in out and "left out common words: photos of a" in err
    out, err = run("the beach in lisbon")
    assert "lisbon-beach-2019.jpg" in out and "left out common words: the in" in err
    out, err = run("birthday", "beach")
    assert "No photos match 'birthday beach'" in out
    assert "Nothing in this index is labelled 'birthday'" in err and "photos train birthday --examples" in err
    assert "'beach'" not in err  # a word that matched is not blamed
    out, err = run("beach", "or", "streetcar")
    assert "there is no OR" in err
    out, err = run("beach", "not", "lisbon")
    assert "photos search dog -cat" in err


@pytest.mark.parametrize("terms", [["beach"], ["streetcar"], []])
def test_every_query_shape_gives_the_same_photos(store, terms):
    """IN or EXISTS for a place, and filters inside or outside the label sums, are one meaning."""
    from pipeline.search import search
    from pipeline.search_filters import filter_clauses

    filters = build_filters(date_from="2018", place="portugal")
    shapes = [(set(), False), ({"portugal"}, False), (set(), True), ({"portugal"}, True)]
    results = [[h.path for h in search(store, terms, restrict=filter_clauses(filters, common), restrict_terms=inside)]
               for common, inside in shapes if terms or not inside]
    assert all(r == results[0] for r in results) and results[0]
