"""`photos eval`: detection precision/recall and segmentation mean IoU of an index."""

from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.options import index_option, resolve_index_dir
from pipeline.evaluate import evaluate_index
from pipeline.store import IndexStore


@click.command("eval")
@click.argument("annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder the annotations' file_name entries are relative to.")
@index_option
@click.option("--iou", type=click.FloatRange(0.05, 1), default=0.5, show_default=True,
              help="IoU a box needs with an annotation of its class to count as found.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate(annotations: Path, images_dir: Path, index_dir: Path | None, iou: float, as_json: bool) -> None:
    """Score the index's boxes and masks against COCO-style ANNOTATIONS.

    Index the annotated images first (with the weights you want to check), then run
    this: it reads what the index holds, so it checks the whole path.

    \b
    Example:
      photos index coco/val2017 --index /tmp/coco-index --weights-dir ./weights
      photos eval coco/annotations/instances_val2017.json --images coco/val2017 --index /tmp/coco-index
    """
    with IndexStore.open(resolve_index_dir(index_dir), create=False) as store:
        report = evaluate_index(store, resolve_index_dir(index_dir), annotations, images_dir, iou)
    figures = {
        "images": report.images, "images_in_index": report.images_in_index,
        "annotations": report.annotations, "boxes": report.boxes, "true_positives": report.true_positives,
        "precision": round(report.precision, 4), "recall": round(report.recall, 4),
        "classes": {label: {"boxes": c.boxes, "annotations": c.annotations, "true_positives": c.true_positives,
                            "precision": round(c.precision, 4) if c.boxes else None,
                            "recall": round(c.recall, 4) if c.annotations else None}
                    for label, c in sorted(report.class_boxes.items())},
        "mean_iou": round(report.mean_iou, 4), "class_iou": {k: round(v, 4) for k, v in report.class_iou.items()},
    }
    if report.stored_class_iou:
        figures["stored_mean_iou"] = round(report.stored_mean_iou, 4)
        figures["stored_class_iou"] = {k: round(v, 4) for k, v in report.stored_class_iou.items()}
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(f"{report.images_in_index} of {report.images} annotated images are in the index")
    click.echo(f"detection @ IoU {iou}: precision {report.precision:.3f}  recall {report.recall:.3f}  "
               f"({report.true_positives} of {report.boxes} boxes match {report.annotations} annotations)")
    if report.class_boxes:
        click.echo(f"  {'class':<16} {'boxes':>6} {'annotated':>9} {'precision':>9} {'recall':>6}")
        for label, c in sorted(report.class_boxes.items(), key=lambda item: (-item[1].annotations, item[0])):
            precision = f"{c.precision:.3f}" if c.boxes else "-"  # no box, or no annotation: undefined
            recall = f"{c.recall:.3f}" if c.annotations else "-"
            click.echo(f"  {label:<16} {c.boxes:6d} {c.annotations:9d} {precision:>9} {recall:>6}")
    if not report.stored_class_iou:
        click.echo(f"segmentation: mean IoU {report.mean_iou:.3f} over {len(report.class_iou)} classes")
        for label, value in report.class_iou.items():
            click.echo(f"  {label:<16} {value:.3f}")
        return
    click.echo(f"segmentation: mean IoU {report.mean_iou:.3f} over {len(report.class_iou)} classes as `photos show` "
               f"draws the masks (inside detected boxes); {report.stored_mean_iou:.3f} as stored")
    click.echo(f"  {'class':<16} {'drawn':>6} {'stored':>7}")
    for label in sorted(report.class_iou.keys() | report.stored_class_iou.keys()):
        click.echo(f"  {label:<16} {report.class_iou.get(label, 0.0):6.3f} {report.stored_class_iou.get(label, 0.0):7.3f}")
