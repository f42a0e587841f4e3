"""`photos search`: find photos by words."""

from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from pipeline.people_ops import person_named
from pipeline.search import DEFAULT_MIN_SCORE
from pipeline.search import search as search_index
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
@click.option("--person", "persons", multiple=True,
              help="Only photos with this named person (repeatable; see `photos people`).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (path, score, labels, width, height).")
def search(terms: tuple[str, ...], index_dir: Path | None, limit: int, min_score: float,
           objects_of: tuple[str, ...], min_count: int, min_area: float, persons: tuple[str, ...],
           as_json: bool) -> None:
    """Photos matching every TERM, best first.

    A term is a word ("dog", "beach", "retriever") or, quoted, a phrase ("golden
    retriever"); everyday words map to the models' labels ("dog" finds every breed).
    A term starting with '-' excludes photos that match it. Labels come from the
    classifier, the object detector and segmentation; a term scores a photo by its
    strongest source (see the README).

    \b
    Examples:
      photos search beach
      photos search dog -cat --limit 5
      photos search "golden retriever" --json
      photos search person --min-count 3
      photos search --object car --min-area 0.1
      photos search anna beach          (a named person is a search word)
      photos search --person anna --person bob
    """
    store = IndexStore.open(resolve_index_dir(index_dir), create=False)
    try:
        for name in persons:
            person_named(store, name)  # an unknown name is an error, not an empty result
        hits = search_index(store, terms, limit=limit, min_score=min_score, objects_of=objects_of,
                            min_count=min_count, min_area=min_area, persons=persons)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([
            {"path": h.path, "score": round(h.score, 4), "labels": h.labels, "width": h.width, "height": h.height}
            for h in hits
        ], indent=2, ensure_ascii=False))
        return
    if not hits:
        asked = terms + tuple(f"--object {o}" for o in objects_of) + tuple(f"--person {p}" for p in persons)
        click.echo(f"No photos match {' '.join(asked)!r}.")
        return
    for h in hits:
        why = ", ".join(f"{m['label']} {m['score']:.2f}" for m in h.labels[:3])
        click.echo(f"{h.score:5.2f}  {h.path}  ({why})")
