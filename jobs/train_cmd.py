"""`photos train` and `photos labels`: custom labels learnt from a few example photos."""

from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from pipeline.custom_labels import list_heads, remove_label, train_label
from pipeline.store import IndexStore


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("photos", nargs=-1, type=click.UNPROCESSED, metavar="--examples PHOTO_OR_DIR... [--negatives PHOTO_OR_DIR...]")
@index_option
def train(name: str, photos: tuple[str, ...], index_dir: Path | None) -> None:
    """Teach the index a label of your own from example photos, then `photos search NAME`.

    --examples: indexed photos or folders of them (at least 3 photos); --negatives: indexed
    photos or folders that are NOT this label (default: a sample of the rest of the index,
    unlabelled). Each takes several values. Fits a calibrated logistic regression on the stored
    embeddings and the classifier's class probabilities (no model re-runs), prints its
    cross-validated recall and precision, and scores every indexed photo (0.5: more likely than not).
    Training a name again replaces it; nightly `photos index` scores new photos.

    \b
    Examples:
      photos train "our garden" --examples ~/Pictures/garden-examples
      photos train grandma --examples a.jpg b.jpg c.jpg --negatives ~/Pictures/others
    """
    examples, negatives = _photo_lists(photos)
    index = resolve_index_dir(index_dir)
    with IndexStore.open(index, create=False) as store:
        report = train_label(index, store, name, examples, negatives)
    if report.unlabelled:
        click.echo(f"{report.name!r}: {report.positives} examples vs {report.negatives} other indexed photos; "
                   f"cross-validated recall {report.recall:.2f}, precision {report.precision:.2f} "
                   "(estimated from the scores: nobody labelled the other photos; often optimistic)")
    else:
        click.echo(f"{report.name!r}: {report.positives} examples vs {report.negatives} negatives; "
                   f"cross-validated precision {report.precision:.2f}, recall {report.recall:.2f}")
    if report.unlabelled and report.matches > report.scored / 2:
        # Scores are g / c: when held-out examples score no higher than other photos, c is
        # tiny and the label matches nearly everything (seen with 10 random photos as examples).
        click.echo("warning: the label matches most photos, so its examples were not told apart from the "
                   "rest; give examples that share what you mean, more of them, or --negatives")
    if report.features == "embedding":
        click.echo("note: the classifier's weights were not found, so the label learnt from the embedding "
                   "alone, which ranks worse; see `photos models list`")  # only with --negatives
    click.echo(f"scored {report.scored:,} photos, {report.matches:,} at >= 0.5, in {report.seconds:.1f} s; "
               f"try `photos search {json.dumps(report.name) if ' ' in report.name else report.name}`")


@click.group(invoke_without_command=True)
@index_option
@click.pass_context
def labels(ctx: click.Context, index_dir: Path | None) -> None:
    """List custom labels (`photos labels`), or remove one (`photos labels remove NAME`)."""
    ctx.obj = resolve_index_dir(index_dir)
    if ctx.invoked_subcommand is None:
        with IndexStore.open(ctx.obj, create=False) as store:
            heads = list_heads(store)
        if not heads:
            click.echo("No custom labels; make one with `photos train NAME --examples ...`.")
        for h in heads:
            others, estimated = ((f"{h['negatives']} other photos (unlabelled)", " (estimated)") if h["unlabelled"]
                                 else (f"{h['negatives']} negatives", ""))
            click.echo(f"{h['name']}: {h['examples']} examples, {others}, cross-validated precision "
                       f"{h['precision']:.2f}{estimated} recall {h['recall']:.2f}; {h['photos']:,} photos >= 0.5")


@labels.command("remove")
@click.argument("name")
@index_option
@click.pass_obj
def remove(index: Path, name: str, index_dir: Path | None) -> None:
    """Forget the custom label NAME and its scores."""
    with IndexStore.open(index_dir or index, create=False) as store:
        remove_label(store, name)
    click.echo(f"removed {name!r}")



def _photo_lists(tokens: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split ``--examples A B --negatives C D`` (each option takes several values)."""
    lists: dict[str, list[str]] = {"--examples": [], "--negatives": []}
    current: list[str] | None = None
    for token in tokens:
        flag, _, value = token.partition("=")
        if flag in lists:
            current = lists[flag]
            if value:
                current.append(value)
        elif token.startswith("--") or current is None:
            raise click.UsageError(f"unexpected {token!r}: give --examples PHOTO_OR_DIR... [--negatives ...]")
        else:
            current.append(token)
    if not lists["--examples"]:
        raise click.UsageError("give example photos: --examples PHOTO_OR_DIR...")
    return lists["--examples"], lists["--negatives"]
