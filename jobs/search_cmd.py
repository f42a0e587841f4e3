"""`photos search`: find photos by words, dates, cameras and places.

This module is on the path of every search, which must answer at once: it imports
nothing that loads torch, Ray or a model (``tests/test_cli_startup.py`` checks).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from pipeline.search import DEFAULT_MIN_SCORE
from pipeline.search_filters import DATE_FORMATS, SORTS, build_filters, read_query, search_query, unknown_words
from pipeline.store import IndexStore


# No short options at all: "-shark" must reach us as an excluded word, never as "-s -h ...".
@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["--help"]})
@click.argument("terms", nargs=-1, type=click.UNPROCESSED)
@index_option
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="Most photos to show.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=DEFAULT_MIN_SCORE, show_default=True,
              help="Ignore labels whose summed score for a term is below this.")
@click.option("--object", "objects_of", multiple=True,
              help="Only photos with a detected box of this class (repeatable), e.g. --object car.")
@click.option("--min-count", type=click.IntRange(0), default=0,
              help="Only photos with at least this many detected boxes of each term (and --object).")
@click.option("--min-area", type=click.FloatRange(0, 1), default=0.0,
              help="Boxes counted by --object and --min-count must cover this fraction of the photo.")
@click.option("--from", "date_from", metavar="DATE", help=f"Taken on or after DATE: {DATE_FORMATS}.")
@click.option("--to", "date_to", metavar="DATE", help="Taken on or before DATE (all of it: --to 2019 is to 31 Dec).")
@click.option("--year", type=int, help="Taken in this year, e.g. --year 2019.")
@click.option("--month", metavar="MONTH", help="Taken in this month of any year: 1-12 or a name (july, jul).")
@click.option("--camera", metavar="TEXT", help="Camera make or model contains TEXT, e.g. --camera iphone.")
@click.option("--near", metavar="LAT,LON", help="Taken within --km of this position, e.g. --near 38.72,-9.14.")
@click.option("--km", type=float, default=10.0, show_default=True, help="Radius of --near in kilometres.")
@click.option("--place", metavar="TEXT", help="Taken in this city, region or country, e.g. --place lisbon.")
@click.option("--sort", type=click.Choice(SORTS), default=None,
              help="Order: best match first (score; the default with words) or newest first (date).")
@click.option("--person", "persons", multiple=True,
              help="Only photos with this named person (repeatable; see `photos people`).")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list (path, score, labels, width, height, taken, camera, gps, place).")
def search(terms: tuple[str, ...], index_dir: Path | None, limit: int, min_score: float,
           objects_of: tuple[str, ...], min_count: int, min_area: float, date_from: str | None,
           date_to: str | None, year: int | None, month: str | None, camera: str | None, near: str | None,
           km: float, place: str | None, sort: str | None, persons: tuple[str, ...],
           as_json: bool) -> None:
    """Photos matching every TERM, best first.

    A term is a word ("dog", "beach", "retriever") or, quoted, a phrase ("golden
    retriever"); everyday words map to the models' labels ("dog" finds every breed).
    Common words that name nothing ("a", "of", "photos", "my") are left out, so
    `photos search photos of my dog` searches for dog.
    A term starting with '-' excludes photos that match it. Labels come from the
    classifier, the object detector and segmentation; a term scores a photo by its
    strongest source (see the README).

    A year, date or month name in the terms ("beach 2019", "snow january") and a place
    the index knows ("lisbon") filter by when and where the photo was taken, like
    --year, --month and --place; a search may have filters and no words.

    \b
    Examples:
      photos search beach
      photos search dog -cat --limit 5
      photos search "golden retriever" --json
      photos search person --min-count 3
      photos search --object car --min-area 0.1
      photos search beach 2019 --camera iphone
      photos search --year 2019 --place lisbon --sort date
      photos search --near 38.72,-9.14 --km 5
      photos search anna beach          (a named person is a search word)
      photos search --person anna --person bob
    """
    filters = build_filters(date_from, date_to, year, month, camera, near, km, place)
    with IndexStore.open(resolve_index_dir(index_dir), create=False) as store:
        if persons:
            from pipeline.people_store import person_named  # numpy: only searches by person pay it

            for name in persons:
                person_named(store, name)  # an unknown name is an error, not an empty result
        query = read_query(store, terms, filters)
        found = search_query(store, query, sort=sort, limit=limit, min_score=min_score,
                             objects_of=objects_of, min_count=min_count, min_area=min_area, persons=persons)
        unknown = [] if found else unknown_words(store, query.words)
    if query.left_out:
        click.echo(f"(left out common words: {' '.join(query.left_out)})", err=True)
    if as_json:
        click.echo(json.dumps([
            {"path": f.hit.path, "score": round(f.hit.score, 4), "labels": f.hit.labels, "width": f.hit.width,
             "height": f.hit.height, **_details(f.details)}
            for f in found
        ], indent=2, ensure_ascii=False))
        return
    if not found:
        asked = terms + tuple(f"--object {o}" for o in objects_of) + tuple(f"--person {p}" for p in persons)
        click.echo(f"No photos match {' '.join(asked)!r}" + (" with those filters." if filters else "."))
        for word in unknown:
            click.echo(_unknown_hint(word), err=True)
        return
    for f in found:
        why = ", ".join(f"{m['label']} {m['score']:.2f}" for m in f.hit.labels[:3])
        when_where = "  ".join(x for x in (_short_date(f.details), _short_place(f.details)) if x)
        click.echo(f"{f.hit.score:5.2f}  {f.hit.path}" + (f"  ({why})" if why else "")
                   + (f"  [{when_where}]" if when_where else ""))


def _unknown_hint(word: str) -> str:
    """What to tell a user whose search word names no label of the index."""
    if word.lower() == "or":
        return "Every word must match (there is no OR): search for each word on its own."
    if word.lower() == "not":
        return ("To leave out photos showing something, or taken somewhere, put '-' before its word: "
                "`photos search dog -cat`, `photos search beach -lisbon`.")
    return (f"Nothing in this index is labelled {word!r}: try another word, or teach it with "
            f"`photos train {shlex.quote(word)} --examples PHOTOS...`")


def _details(details: dict) -> dict:
    keys = ("taken", "date_source", "camera", "lens", "gps", "place")
    return {k: details.get(k) for k in keys}


def _short_date(details: dict) -> str:
    return (details.get("taken") or "")[:10]


def _short_place(details: dict) -> str:
    place = details.get("place") or {}
    return ", ".join(dict.fromkeys(n for n in (place.get("city"), place.get("country")) if n))
