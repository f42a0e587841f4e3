"""`photos duplicates`: groups of copies of the same photo. Reads only; never deletes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from pipeline.duplicates import BURST_THRESHOLD, NEAR_THRESHOLD, find_duplicates
from pipeline.store import IndexStore


@click.command()
@index_option
@click.option("--burst", is_flag=True,
              help=f"Also group burst shots (similarity >= {BURST_THRESHOLD} instead of {NEAR_THRESHOLD}).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of groups.")
def duplicates(index_dir: Path | None, burst: bool, as_json: bool) -> None:
    """Groups of exact and near-duplicate photos, the copy to keep first.

    Exact copies share a content fingerprint; near-duplicates (resized, recompressed,
    lightly cropped, rotated copies) have embeddings at least 0.72 alike. The copy to keep
    has the most pixels, then the largest file, then is the oldest. Nothing is deleted.

    \b
    Examples:
      photos duplicates
      photos duplicates --burst --json
    """
    index = resolve_index_dir(index_dir)
    with IndexStore.open(index, create=False) as store:
        groups = find_duplicates(index, store, burst=burst)
    if as_json:
        click.echo(json.dumps([
            {"keep": g.keep.path, "why": g.why, "photos": [
                {"path": m.path, "width": m.width, "height": m.height, "size": m.size, "kind": m.kind,
                 "similarity": round(m.similarity, 4)} for m in g.members]}
            for g in groups], indent=2, ensure_ascii=False))
        return
    if not groups:
        click.echo("No duplicates found.")
        return
    for g in groups:
        click.echo(f"keep {g.keep.path}  ({g.why})")
        for m in g.members[1:]:
            click.echo(f"     {m.kind:5}  {m.similarity:5.3f}  {m.path}  {m.width}x{m.height}, {m.size:,} bytes")
    click.echo(f"{len(groups)} groups, {sum(len(g.members) - 1 for g in groups)} photos besides the ones to keep.")
