"""`photos similar`: photos that look like a given one."""

from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from pipeline.similar import find_similar
from pipeline.store import IndexStore


@click.command()
@click.argument("photo")
@index_option
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="Most photos to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, similarity}.")
def similar(photo: str, index_dir: Path | None, limit: int, as_json: bool) -> None:
    """Indexed photos most similar to PHOTO, best first (cosine similarity of embeddings).

    PHOTO may be outside the index: it is then decoded and embedded on the spot.

    \b
    Examples:
      photos similar ~/Pictures/2024/IMG_0042.jpg
      photos similar ~/Downloads/found.jpg --limit 5 --json
    """
    index = resolve_index_dir(index_dir)
    with IndexStore.open(index, create=False) as store:
        hits, _ = find_similar(index, store, photo, limit)
    if as_json:
        click.echo(json.dumps([{"path": h.path, "similarity": round(h.similarity, 4)} for h in hits],
                              indent=2, ensure_ascii=False))
        return
    for h in hits:
        click.echo(f"{h.similarity:5.3f}  {h.path}")
