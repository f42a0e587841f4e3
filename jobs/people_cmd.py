"""`photos people ...`: the people found in the index's faces, and corrections to them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from pipeline.lock import index_lock
from pipeline.people import (
    ASSIGN_DISTANCE,
    CLUSTER_DISTANCE,
    MIN_FACES,
    GroupingSettings,
)
from pipeline.people_ops import (
    faces_of,
    forget_person,
    list_people,
    merge_people,
    name_person,
    regroup,
    remove_face,
    unforget_faces,
)
from pipeline.people_show import contact_sheet
from pipeline.store import IndexStore


def _open(index_dir: Path | None) -> IndexStore:
    return IndexStore.open(resolve_index_dir(index_dir), create=False)


@click.group(invoke_without_command=True)
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (id, name, faces, photos, sample).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Most people to list.")
@click.pass_context
def people(ctx: click.Context, index_dir: Path | None, as_json: bool, limit: int) -> None:
    """People found by grouping faces (index with `--models ...,faces`), most photos first.

    \b
    Examples:
      photos people                       id, name, faces, photos, a sample photo
      photos people name 3 "Anna"         then: photos search anna beach
      photos people merge 3 7             7's faces become 3's
      photos people remove-face 412       face 412 is not its person
      photos people show 3 --out anna.png a contact sheet of 3's faces
      photos people forget 5              delete 5's name and embeddings
    """
    ctx.ensure_object(dict)
    ctx.obj["index_dir"] = index_dir
    if ctx.invoked_subcommand is not None:
        return
    with _open(index_dir) as store:
        found = list_people(store)[:limit]
    if as_json:
        click.echo(json.dumps([p.__dict__ for p in found], indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("No people yet: index with `--models classify,detect,segment,faces`.")
        return
    click.echo(f"{'ID':>5}  {'NAME':<24} {'FACES':>5} {'PHOTOS':>6}  SAMPLE")
    for p in found:
        click.echo(f"{p.id:>5}  {(p.name or '-'):<24} {p.faces:>5} {p.photos:>6}  {p.sample}")


def _index(ctx: click.Context, index_dir: Path | None) -> Path | None:
    return index_dir or ctx.obj.get("index_dir")


@people.command("name")
@click.argument("person_id", type=int)
@click.argument("name")
@index_option
@click.pass_context
def name_cmd(ctx: click.Context, person_id: int, name: str, index_dir: Path | None) -> None:
    """Call person PERSON_ID NAME; the name becomes a search word (`photos search NAME`)."""
    with _open(_index(ctx, index_dir)) as store:
        name_person(store, person_id, name)
    click.echo(f"Person {person_id} is now {' '.join(name.split())!r}.")


@people.command("merge")
@click.argument("keep_id", type=int)
@click.argument("other_id", type=int)
@index_option
@click.pass_context
def merge_cmd(ctx: click.Context, keep_id: int, other_id: int, index_dir: Path | None) -> None:
    """Make OTHER_ID's faces KEEP_ID's; OTHER_ID is deleted."""
    with _open(_index(ctx, index_dir)) as store:
        merge_people(store, keep_id, other_id)
    click.echo(f"Person {other_id} merged into {keep_id}.")


@people.command("remove-face")
@click.argument("face_id", type=int)
@index_option
@click.pass_context
def remove_face_cmd(ctx: click.Context, face_id: int, index_dir: Path | None) -> None:
    """FACE_ID is not its person: take it out, and never group it there again."""
    with _open(_index(ctx, index_dir)) as store:
        person = remove_face(store, face_id)
    click.echo(f"Face {face_id} removed from person {person}.")


@people.command("show")
@click.argument("person_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write.")
@click.option("--limit", type=click.IntRange(1, 1000), default=64, show_default=True, help="Most faces shown.")
@index_option
@click.pass_context
def show_cmd(ctx: click.Context, person_id: int, out: Path, limit: int, index_dir: Path | None) -> None:
    """A contact sheet of PERSON_ID's faces (best first), each with its face id."""
    with _open(_index(ctx, index_dir)) as store:
        found = faces_of(store, person_id, limit)
        listed = {p.id: p for p in list_people(store)}
    name = listed[person_id].name if person_id in listed else None
    contact_sheet(found, f"person {person_id}" + (f": {name}" if name else "") + f" ({len(found)} faces)").save(
        out, format="PNG")
    click.echo(str(out))


@people.command("forget")
@click.argument("person_id", type=int)
@index_option
@click.pass_context
def forget_cmd(ctx: click.Context, person_id: int, index_dir: Path | None) -> None:
    """Delete PERSON_ID's name and its faces' embeddings (SQLite and Parquet); those faces
    are not grouped again (until `photos people unforget`). Waits for no run: fails if
    `photos index` is writing the index."""
    folder = resolve_index_dir(_index(ctx, index_dir))
    with index_lock(folder):  # the Parquet parts are rewritten without the embeddings
        with _open(folder) as store:
            n = forget_person(store, person_id, folder)
    click.echo(f"Forgot person {person_id} ({n} faces).")


@people.command("unforget")
@index_option
@click.pass_context
def unforget_cmd(ctx: click.Context, index_dir: Path | None) -> None:
    """Let forgotten faces be grouped again (after their photos are re-indexed)."""
    with _open(_index(ctx, index_dir)) as store:
        n = unforget_faces(store)
    click.echo(f"{n} forgotten faces may be grouped again; re-index their photos to recompute embeddings.")


@people.command("group")
@click.option("--assign-distance", type=click.FloatRange(0, 2), default=ASSIGN_DISTANCE, show_default=True,
              help="A new face joins the nearest person whose centroid is within this cosine distance.")
@click.option("--cluster-distance", type=click.FloatRange(0, 2), default=CLUSTER_DISTANCE, show_default=True,
              help="Average-linkage cut for forming new people from unassigned faces.")
@click.option("--min-faces", type=click.IntRange(1), default=MIN_FACES, show_default=True,
              help="Faces needed to form a new person.")
@index_option
@click.pass_context
def group_cmd(ctx: click.Context, assign_distance: float, cluster_distance: float, min_faces: int,
              index_dir: Path | None) -> None:
    """Run the grouping pass now (`photos index` with faces runs it after every run)."""
    with _open(_index(ctx, index_dir)) as store:
        report = regroup(store, GroupingSettings(assign_distance, cluster_distance, min_faces))
    for problem in report.problems:
        click.echo(problem, err=True)
    click.echo(f"{report.assigned} faces joined people; {report.new_people} new people "
               f"({report.new_faces} faces); {report.unassigned} faces wait for more photos.")
