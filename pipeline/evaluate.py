"""Check the index's boxes and masks against COCO-style annotations.

What a user with real weights runs to see whether a model works on their photos:
index the annotated images, then compare what the index holds (so the check covers the
whole path: decoding, EXIF rotation, box scaling, mask encoding) with the annotations.

- Detection: a box is a true positive when it has the class of a not yet matched
  annotation and IoU >= ``iou`` with it (greedy, best score first, per image and class);
  precision = TP / boxes, recall = TP / annotations, overall and per class (`photos eval`
  shows "-" where a class has no boxes or no annotations). Crowd annotations are left out.
- Segmentation: annotations whose COCO class has a VOC counterpart are drawn into a class
  mask at the stored mask's size (others are background, as in torchvision's
  COCO_WITH_VOC_LABELS training data); IoU per class is summed over all images, and mean
  IoU averages the classes present in the annotations or the predictions, background
  included (the VOC convention). Masks are scored as `photos show` draws them: for a
  segmenter that needs boxes (Selfie marks everything person-like, so its mask counts
  only inside the detector's person boxes, :func:`pipeline.show.shown_mask`), the stored
  mask is scored too, in ``stored_class_iou``.

Annotations: ``images`` (id, file_name, width, height), ``categories`` (id, name) and
``annotations`` (image_id, category_id, bbox [x, y, w, h] in pixels, segmentation as
polygons or uncompressed RLE, iscrowd).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from models.registry import get_spec
from models.segment import decode_mask
from pipeline.errors import QueryError
from pipeline.pathnames import path_text
from pipeline.records_reader import load_records
from pipeline.show import shown_mask
from pipeline.store import IndexStore

COCO_TO_VOC = {"airplane": "aeroplane", "dining table": "diningtable", "motorcycle": "motorbike",
               "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor"}
"""COCO class names whose VOC name differs; the other VOC classes share their COCO name."""


@dataclass
class ClassBoxes:
    """One class's detection counts."""

    boxes: int = 0
    annotations: int = 0
    true_positives: int = 0

    @property
    def precision(self) -> float:
        return self.true_positives / self.boxes if self.boxes else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.annotations if self.annotations else 0.0


@dataclass
class EvalReport(ClassBoxes):
    """Detection and segmentation quality of an index against annotations: the detection
    counts over all classes (inherited), then per class, then the masks'."""

    images: int = 0
    images_in_index: int = 0
    class_boxes: dict[str, ClassBoxes] = field(default_factory=dict)
    class_iou: dict[str, float] = field(default_factory=dict)
    stored_class_iou: dict[str, float] = field(default_factory=dict)
    """IoU of the masks as stored, where some were limited to boxes for drawing; else empty."""

    @property
    def mean_iou(self) -> float:
        return _mean(self.class_iou)

    @property
    def stored_mean_iou(self) -> float:
        return _mean(self.stored_class_iou)


def _mean(class_iou: dict[str, float]) -> float:
    return float(np.mean(list(class_iou.values()))) if class_iou else 0.0


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(predicted: list[dict[str, Any]], truth: Sequence[tuple[str, Sequence[float]]], iou: float) -> int:
    """True positives among ``predicted`` boxes (records with label, score, x1..y2) for
    ``truth`` (label, box) pairs: greedy by score, each truth matched at most once."""
    return len(matched_labels(predicted, truth, iou))


def matched_labels(predicted: list[dict[str, Any]], truth: Sequence[tuple[str, Sequence[float]]],
                   iou: float) -> list[str]:
    """The labels of the true positives :func:`match_boxes` counts, one per hit."""
    unmatched = list(truth)
    hits = []
    for p in sorted(predicted, key=lambda p: -p["score"]):
        box = (p["x1"], p["y1"], p["x2"], p["y2"])
        candidates = [(box_iou(box, t[1]), k) for k, t in enumerate(unmatched) if t[0] == p["label"]]
        best = max(candidates, default=(0.0, -1))
        if best[0] >= iou:
            hits.append(p["label"])
            unmatched.pop(best[1])
    return hits


def truth_mask(annotations: list[dict[str, Any]], names: dict[int, str], categories: tuple[str, ...],
               image_size: tuple[int, int], mask_size: tuple[int, int]) -> np.ndarray:
    """The annotations as a class-index mask of ``mask_size`` (w, h), in ``categories`` order."""
    index = {name: i for i, name in enumerate(categories)}
    canvas = Image.new("L", mask_size, 0)
    draw = ImageDraw.Draw(canvas)
    sx, sy = mask_size[0] / image_size[0], mask_size[1] / image_size[1]
    for ann in annotations:
        name = names[ann["category_id"]]
        value = index.get(COCO_TO_VOC.get(name, name))
        segmentation = ann.get("segmentation")
        if value is None or ann.get("iscrowd") or not segmentation:
            continue
        if isinstance(segmentation, dict):  # uncompressed RLE, column-major, over the full image
            h, w = segmentation["size"]
            flat = np.repeat(np.arange(len(segmentation["counts"])) % 2, segmentation["counts"]).astype(np.uint8)
            full = Image.fromarray(flat.reshape(w, h).T * 255, "L").resize(mask_size, Image.Resampling.NEAREST)
            canvas.paste(value, mask=full)
        else:
            for polygon in segmentation:
                draw.polygon([(x * sx, y * sy) for x, y in zip(polygon[::2], polygon[1::2])], fill=value)
    return np.asarray(canvas)


def evaluate_index(store: IndexStore, index_dir: Path, annotations_path: Path, images_dir: Path,
                   iou: float = 0.5) -> EvalReport:
    """Compare the index's records of the annotated images with their annotations.

    Images are found as ``images_dir / file_name``; those not in the index are counted
    in ``images`` but not scored. Raises :class:`QueryError` for an unreadable file.
    """
    try:
        coco = json.loads(Path(annotations_path).read_text())
        images = {im["id"]: im for im in coco["images"]}
        names = {c["id"]: c["name"] for c in coco["categories"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise QueryError(f"cannot read COCO annotations {annotations_path}: {exc}") from exc
    by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
    for ann in coco.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    paths = {i: path_text(os.path.abspath(os.path.expanduser(Path(images_dir) / im["file_name"])))
             for i, im in images.items()}  # spelled as the scan stores them
    records = load_records(store, index_dir, paths.values())
    report = EvalReport(images=len(images))
    drawn, stored = _Overlap(), _Overlap()
    limited = False
    for image_id, image in images.items():
        record = records.get(paths[image_id])
        if record is None:
            continue
        report.images_in_index += 1
        anns = by_image[image_id]
        if record.get("objects") is not None:
            truth = [(names[a["category_id"]], (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                                a["bbox"][1] + a["bbox"][3]))
                     for a in anns if not a.get("iscrowd")]
            hits = matched_labels(record["objects"], truth, iou)
            report.annotations += len(truth)
            report.boxes += len(record["objects"])
            report.true_positives += len(hits)
            per_class = report.class_boxes
            for label, _ in truth:
                per_class.setdefault(label, ClassBoxes()).annotations += 1
            for box in record["objects"]:
                per_class.setdefault(box["label"], ClassBoxes()).boxes += 1
            for label in hits:
                per_class[label].true_positives += 1
        segmentation = record.get("segmentation")
        if segmentation:
            categories = get_spec(record["models"]["segment"]).categories
            predicted = decode_mask(segmentation)
            truth_m = truth_mask(anns, names, categories, (image["width"], image["height"]),
                                 (predicted.shape[1], predicted.shape[0]))
            shown, was_limited = shown_mask(record, predicted)
            limited |= was_limited
            drawn.add(shown, truth_m, categories)
            stored.add(predicted, truth_m, categories)
    report.class_iou = drawn.iou()
    if limited:
        report.stored_class_iou = stored.iou()
    return report


@dataclass
class _Overlap:
    """Per class, pixels in both masks and in either, summed over images."""

    intersection: dict[str, int] = field(default_factory=dict)
    union: dict[str, int] = field(default_factory=dict)

    def add(self, predicted: np.ndarray, truth: np.ndarray, categories: Sequence[str]) -> None:
        for k in np.union1d(np.unique(predicted), np.unique(truth)):
            label = categories[k]
            self.intersection[label] = self.intersection.get(label, 0) + int(((predicted == k) & (truth == k)).sum())
            self.union[label] = self.union.get(label, 0) + int(((predicted == k) | (truth == k)).sum())

    def iou(self) -> dict[str, float]:
        return {label: self.intersection[label] / self.union[label] for label in sorted(self.union) if self.union[label]}
