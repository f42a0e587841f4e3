"""`photos show`: draw what the index holds about one photo."""

from __future__ import annotations

from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from pipeline.people_ops import faces_in_photo
from pipeline.records_reader import load_record
from pipeline.show import cutout, open_upright, render
from pipeline.store import IndexStore


@click.command()
@click.argument("photo", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@index_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG file to write. Default: PHOTO's name with .show.png (or .CLASS.png) in this folder.")
@click.option("--cutout", "cutout_class", default=None,
              help="Write the photo with everything but this class (e.g. person) transparent.")
@click.option("--caption", default="", help="A line of text added under the picture.")
@click.option("--max-side", type=click.IntRange(64, 8192), default=1024, show_default=True,
              help="Longer side of the drawn picture (the cutout keeps the photo's size).")
def show(photo: Path, index_dir: Path | None, out: Path | None, cutout_class: str | None, caption: str,
         max_side: int) -> None:
    """Draw PHOTO with its boxes, labels and a translucent mask overlay, from the index.

    Nothing is recomputed: the picture shows exactly what search sees.

    \b
    Examples:
      photos show ~/Pictures/IMG_0042.jpg --out dog.png
      photos show ~/Pictures/IMG_0042.jpg --cutout person --out person.png
    """
    with IndexStore.open(resolve_index_dir(index_dir), create=False) as store:
        record = load_record(store, resolve_index_dir(index_dir), str(photo))
        faces = faces_in_photo(store, record["path"])
    upright = open_upright(str(photo))
    if cutout_class:
        image = cutout(record, upright, cutout_class)
        out = out or Path(f"{photo.stem}.{cutout_class}.png")
    else:
        image = render(record, upright, caption, max_side, faces)
        out = out or Path(f"{photo.stem}.show.png")
    image.save(out, format="PNG")
    click.echo(str(out))
