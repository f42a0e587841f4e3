"""NanoDet pre- and post-processing variants on COCO-annotated photos, side by side.

Why ``models/nanodet.py`` stretches the photo to 416 x 416, decodes each test image once
and runs per-class NMS: the alternatives, measured on the same photos decoded as the
pipeline decodes them (shorter side 416):

- ``stretch``: the default (the graph's input size is fixed: its ResizeBilinear ops
  upsample to 26 and 52 cells, so 416 x 416 is the only input it runs at);
- ``letterbox`` / ``letterbox_corner``: keep the aspect ratio, pad (centred / top-left)
  with the normalised mean;
- ``flip``: test-time augmentation, the mean of the score maps and boxes of the photo and
  its mirror image (twice the cost);
- ``agnostic``: ``stretch`` plus class-agnostic NMS at IoU 0.9 (NanoDet's box regression
  is shared by all classes, so two classes above the threshold in one cell give the same
  box twice).

Prints box AP at IoU 0.5 (101-point, mean over classes with annotations), precision and
recall at the default score threshold, and ms per photo (1 image per call).

    python -m benchmarks.nanodet_variants ../shared/eval/coco64/instances.json \\
        --images ../shared/eval/coco64/images --weights-dir ../shared/weights/human-models-3.0.4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision  # type: ignore[import-untyped]

from models import nanodet
from pipeline.decode import decode_photo
from pipeline.evaluate import box_iou, match_boxes
from pipeline.settings import IndexSettings

S = nanodet.INPUT_SIZE
VARIANTS = ("stretch", "letterbox", "letterbox_corner", "flip", "agnostic")


def model_input(pixels: np.ndarray, variant: str) -> tuple[torch.Tensor, tuple[float, float, int, int]]:
    """The [3, 416, 416] input and how to map its pixels back: (scale x, scale y, pad x, pad y)."""
    if not variant.startswith("letterbox"):
        return nanodet.preprocess([pixels])[0], (pixels.shape[1] / S, pixels.shape[0] / S, 0, 0)
    h, w = pixels.shape[:2]
    k = S / max(w, h)
    nw, nh = round(w * k), round(h * k)
    small = F.interpolate(torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float(),
                          size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    mean, std = torch.tensor(nanodet.MEAN_BGR).reshape(3, 1, 1), torch.tensor(nanodet.STD_BGR).reshape(3, 1, 1)
    out = torch.zeros(3, S, S)  # zero after normalising: the mean colour
    ox, oy = (0, 0) if variant == "letterbox_corner" else ((S - nw) // 2, (S - nh) // 2)
    out[:, oy:oy + nh, ox:ox + nw] = (small.flip(0) - mean) / std
    return out, (w / nw, h / nh, ox, oy)


def unmirror(scores: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the outputs for a photo (row 0) and its mirror image (row 1), cell by cell."""
    out_s, out_b, start = [], [], 0
    for stride in nanodet.STRIDES:
        c = S // stride
        n = c * c
        s1 = scores[1, start:start + n].reshape(c, c, -1).flip(1).reshape(n, -1)
        b1 = boxes[1, start:start + n].reshape(c, c, 4).flip(1).reshape(n, 4)
        b1 = torch.stack([S - b1[:, 2], b1[:, 1], S - b1[:, 0], b1[:, 3]], -1)
        out_s.append((scores[0, start:start + n] + s1) / 2)
        out_b.append((boxes[0, start:start + n] + b1) / 2)
        start += n
    return torch.cat(out_s)[None], torch.cat(out_b)[None]


def detect(model: nanodet.NanoDet, pixels: np.ndarray, size: tuple[int, int], variant: str) -> list[dict]:
    """Boxes (score >= 0.05) in the photo's own pixels, ``size`` = (width, height)."""
    x, (sx, sy, ox, oy) = model_input(pixels, variant)
    batch = torch.stack([x, x.flip(-1)]) if variant == "flip" else x[None]
    scores, boxes = model(batch.contiguous(memory_format=torch.channels_last))
    if variant == "flip":
        scores, boxes = unmirror(scores, boxes)
    boxes = boxes - torch.tensor([ox, oy, ox, oy], dtype=boxes.dtype)
    fx, fy = size[0] / pixels.shape[1], size[1] / pixels.shape[0]
    records: list[dict] = nanodet.detections(scores, boxes, [(sx * fx * S, sy * fy * S)], 0.05)[0]
    for r in records:
        r["x2"], r["y2"] = min(float(r["x2"]), size[0]), min(float(r["y2"]), size[1])
    if variant == "agnostic" and records:
        kept = [r for r in records if r["score"] >= nanodet.SCORE_THRESHOLD]
        if kept:
            keep = torchvision.ops.nms(torch.tensor([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in kept]),
                                       torch.tensor([r["score"] for r in kept]), 0.9).tolist()
            records = [kept[i] for i in keep] + [r for r in records if r["score"] < nanodet.SCORE_THRESHOLD]
    return records


def ap50(predictions: dict[int, list[dict]], truth: dict[int, list[tuple[str, tuple]]]) -> float:
    """Mean over annotated classes of the 101-point AP at IoU 0.5 (greedy by score per photo)."""
    scored: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for image_id, records in predictions.items():
        used: set[int] = set()
        for r in sorted(records, key=lambda r: -r["score"]):
            ious = [(box_iou((r["x1"], r["y1"], r["x2"], r["y2"]), box), k)
                    for k, (label, box) in enumerate(truth[image_id]) if label == r["label"] and k not in used]
            best, k = max(ious, default=(0.0, -1))
            if best >= 0.5:
                used.add(k)
            scored[r["label"]].append((r["score"], best >= 0.5))
    counts: dict[str, int] = defaultdict(int)
    for objects in truth.values():
        for label, _ in objects:
            counts[label] += 1
    aps = []
    for label, n in counts.items():
        hits = np.array([hit for _, hit in sorted(scored[label], key=lambda x: -x[0])], bool)
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        recall, precision = tp / n, tp / np.maximum(tp + fp, 1)
        aps.append(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                            for t in np.linspace(0, 1, 101)]))
    return float(np.mean(aps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--weights-dir", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    coco = json.loads(args.annotations.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    truth: dict[int, list[tuple[str, tuple]]] = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        if not a.get("iscrowd"):
            x, y, w, h = a["bbox"]
            truth[a["image_id"]].append((names[a["category_id"]], (x, y, x + w, y + h)))
    model = nanodet.build(args.weights_dir / nanodet.JSON_FILE, args.weights_dir / nanodet.BIN_FILE)
    model = model.to(memory_format=torch.channels_last)
    photos = {im["id"]: (decode_photo(os.path.abspath(args.images / im["file_name"]), S, IndexSettings.max_pixels),
                         (im["width"], im["height"])) for im in coco["images"]}
    n = sum(len(t) for t in truth.values())
    print(f"{len(photos)} photos, {n} annotations; threads {torch.get_num_threads()}")
    print(f"variant            AP50   P@{nanodet.SCORE_THRESHOLD}  R@{nanodet.SCORE_THRESHOLD}  ms/photo")
    for variant in args.variants.split(","):
        start = time.perf_counter()
        with torch.inference_mode():
            predictions = {i: detect(model, photo.pixels, size, variant) for i, (photo, size) in photos.items()}
        ms = (time.perf_counter() - start) / len(photos) * 1000
        boxes = hits = 0
        for image_id, records in predictions.items():
            kept = [r for r in records if r["score"] >= nanodet.SCORE_THRESHOLD]
            boxes, hits = boxes + len(kept), hits + match_boxes(kept, truth[image_id], 0.5)
        print(f"{variant:<17} {ap50(predictions, truth):5.3f}  {hits / max(boxes, 1):6.3f}  {hits / n:6.3f}  {ms:8.0f}")


if __name__ == "__main__":
    main()
