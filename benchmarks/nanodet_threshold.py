"""NanoDet precision/recall on COCO-annotated photos at several score thresholds.

How ``models.nanodet.SCORE_THRESHOLD`` was chosen. Runs the model in-process on the
photos (no index), matches boxes to annotations as ``photos eval`` does (IoU >= 0.5, same
class, greedy by score, crowd annotations left out) and prints overall and per-class
figures at each threshold.

    python benchmarks/nanodet_threshold.py ../shared/eval/coco64/instances.json \\
        --images ../shared/eval/coco64/images --weights-dir ../shared/weights/human-models-3.0.4
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from models import nanodet
from pipeline.evaluate import match_boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--weights-dir", type=Path, required=True)
    parser.add_argument("--thresholds", default="0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.6")
    parser.add_argument("--per-class-at", type=float, default=nanodet.SCORE_THRESHOLD)
    args = parser.parse_args()
    coco = json.loads(args.annotations.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    truth: dict[int, list] = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        if not a.get("iscrowd"):
            x, y, w, h = a["bbox"]
            truth[a["image_id"]].append((names[a["category_id"]], (x, y, x + w, y + h)))
    model = nanodet.build(args.weights_dir / nanodet.JSON_FILE, args.weights_dir / nanodet.BIN_FILE)
    lowest = min(float(t) for t in args.thresholds.split(",") + [str(args.per_class_at)])
    predictions = {}
    with torch.inference_mode():
        for im in coco["images"]:
            with Image.open(args.images / im["file_name"]) as photo:
                pixels = np.asarray(ImageOps.exif_transpose(photo).convert("RGB"))
            scores, boxes = model(nanodet.preprocess([pixels]))
            size = (pixels.shape[1], pixels.shape[0])
            predictions[im["id"]] = nanodet.detections(scores, boxes, [size], lowest)[0]
    annotations = sum(len(t) for t in truth.values())
    print(f"{len(truth)} photos, {annotations} annotations (IoU 0.5)")
    print("threshold  boxes  matched  precision  recall    F1")
    for threshold in sorted({float(t) for t in args.thresholds.split(",")}):
        boxes = hits = 0
        for image_id, objects in predictions.items():
            kept = [o for o in objects if float(o["score"]) >= threshold]
            boxes += len(kept)
            hits += match_boxes(kept, truth[image_id], 0.5)
        p, r = hits / max(boxes, 1), hits / max(annotations, 1)
        print(f"{threshold:9.2f}  {boxes:5d}  {hits:7d}  {p:9.3f}  {r:6.3f}  {2 * p * r / max(p + r, 1e-9):.3f}")
    print(f"\nper class at {args.per_class_at} (classes with >= 3 annotations)")
    print("class            annotations  boxes  matched  precision  recall")
    per_truth = Counter(label for t in truth.values() for label, _ in t)
    for label, count in per_truth.most_common():
        if count < 3:
            continue
        boxes = hits = 0
        for image_id, objects in predictions.items():
            kept = [o for o in objects if float(o["score"]) >= args.per_class_at and o["label"] == label]
            boxes += len(kept)
            hits += match_boxes(kept, [t for t in truth[image_id] if t[0] == label], 0.5)
        print(f"{label:<16} {count:11d}  {boxes:5d}  {hits:7d}  {hits / max(boxes, 1):9.3f}  {hits / count:6.3f}")


if __name__ == "__main__":
    main()
