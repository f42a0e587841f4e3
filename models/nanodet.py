"""NanoDet: a small COCO-80 object detector, from the TF.js graph in human-models 3.0.4.

The graph (``nanodet.json`` + ``nanodet.bin``, Apache-2.0 upstream, MIT packaging) takes
a 416 x 416 **BGR** image normalised per channel, NCHW, and gives per stride (8, 16, 32)
sigmoid class scores [N, cells, 80] and box regressions [N, cells, 44]: 4 sides x 11
distance bins, distance = sum(softmax(bins) * [0..10]) * stride from the cell centre.
:class:`NanoDet` wraps the converted graph and does that decoding in torch, batched, on
the model's device; :func:`detections` keeps boxes above a score, runs per-class NMS and
scales boxes to each photo's own pixels in the record shape of ``models/detect.py``.

The photo is stretched to the square input (no letterbox), as the upstream pipeline does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision  # type: ignore[import-untyped]
from torch import nn

from models.tfjs import TfjsGraph, load_graph_model
from pipeline.errors import ModelFileError

JSON_FILE = "nanodet.json"
JSON_SHA256 = "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d"
BIN_FILE = "nanodet.bin"
BIN_SHA256 = "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"
INPUT_SIZE = 416
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
STRIDES = (8, 16, 32)
BINS = 11
SCORE_THRESHOLD = 0.35
"""Default minimum score; chosen on coco64 (see the tfjs branch report): 0.35 balances
precision and recall at IoU 0.5 there."""
SEARCH_MIN_AREA = 0.01
"""A class is a search label only where its boxes cover at least this fraction of the photo.

A whole-photo search for "bottle" is about photos that show a bottle, and an object under
~2% of the frame is no fair target for it (``../shared/README.md``, issue 10). Small
boxes are also where a small detector is least reliable (COCO's small-object AP is a
fraction of its large-object AP for every detector). On coco64 (all 80 classes, boxes
>= 0.35), 21 photo-class labels came from boxes covering under 1% in all: 15 for objects
annotated but under 2% of the photo, 5 for classes not in the photo, 1 for an object over
2%; above 1%: 76 / 18 / 31. Half the 2% line leaves room for boxes tighter than the
annotation. Boxes stay in ``objects`` (``photos show``, ``--object``, ``--min-count``,
``photos eval`` see them all). ``benchmarks/class_search_eval.py`` measures the effect."""
NMS_IOU = 0.5
MAX_DETECTIONS = 100

COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
"""The 80 COCO classes in the order of the model's score columns (COCO's own names)."""


class NanoDet(nn.Module):
    """The converted graph plus box decoding: ``forward(x) -> (scores, boxes)`` with
    scores [N, 3549, 80] and boxes [N, 3549, 4] (x1, y1, x2, y2 in input pixels)."""

    centres: torch.Tensor
    strides: torch.Tensor
    bins: torch.Tensor

    def __init__(self, graph: TfjsGraph, score_names: Sequence[str], box_names: Sequence[str]) -> None:
        super().__init__()
        self.graph = graph
        self.score_names = list(score_names)
        self.box_names = list(box_names)
        centres, strides = [], []
        for stride in STRIDES:
            cells = INPUT_SIZE // stride
            ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
            centres.append(torch.stack([xs, ys], -1).reshape(-1, 2).float().add(0.5).mul(stride))
            strides.append(torch.full((cells * cells, 1), float(stride)))
        self.register_buffer("centres", torch.cat(centres), persistent=False)
        self.register_buffer("strides", torch.cat(strides), persistent=False)
        self.register_buffer("bins", torch.arange(BINS, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.graph(x)
        scores = torch.cat([out[n] for n in self.score_names], 1).float()
        regression = torch.cat([out[n] for n in self.box_names], 1).float()
        n, cells, _ = regression.shape
        distances = (F.softmax(regression.reshape(n, cells, 4, BINS), -1) * self.bins).sum(-1)
        distances = distances * self.strides  # left, top, right, bottom
        boxes = torch.cat([self.centres - distances[..., :2], self.centres + distances[..., 2:]], -1)
        return scores, boxes


def build(json_path: str | Path, bin_path: str | Path) -> NanoDet:
    """NanoDet from its TF.js files; outputs are paired by cell count (52², 26², 13²)."""
    graph = load_graph_model(json_path, bin_path)
    by_cells: dict[int, dict[int, str]] = {}
    with torch.inference_mode():
        outputs = graph(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    for name, tensor in outputs.items():
        by_cells.setdefault(tensor.shape[1], {})[tensor.shape[2]] = name
    order = [(INPUT_SIZE // s) ** 2 for s in STRIDES]
    if any(set(by_cells.get(c, {})) != {len(COCO80), 4 * BINS} for c in order):
        raise ModelFileError(f"{json_path} does not have NanoDet's outputs: {sorted(by_cells)}")
    return NanoDet(graph, [by_cells[c][len(COCO80)] for c in order], [by_cells[c][4 * BINS] for c in order]).eval()


def preprocess(images: Sequence[np.ndarray]) -> torch.Tensor:
    """H x W x 3 uint8 RGB photos (any sizes) as the model's [N, 3, 416, 416] BGR input."""
    mean = torch.tensor(MEAN_BGR).reshape(3, 1, 1)
    std = torch.tensor(STD_BGR).reshape(3, 1, 1)
    batch = []
    for image in images:
        rgb = torch.from_numpy(np.array(image, copy=not image.flags.writeable, order="C")).permute(2, 0, 1).float().unsqueeze(0)
        resized = F.interpolate(rgb, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                                antialias=True)[0]
        batch.append((resized.flip(0) - mean) / std)
    return torch.stack(batch)


def detections(scores: torch.Tensor, boxes: torch.Tensor, sizes: Sequence[tuple[int, int]],
               threshold: float = SCORE_THRESHOLD, iou: float = NMS_IOU,
               max_detections: int = MAX_DETECTIONS) -> list[list[dict[str, float | str]]]:
    """Per photo, the boxes scoring at least ``threshold`` after per-class NMS, as
    ``models/detect.py`` records ({label, score, x1, y1, x2, y2, area}) in the pixels of
    the photo's ``sizes`` (width, height), best first."""
    records = []
    for image_scores, image_boxes, (width, height) in zip(scores, boxes, sizes):
        cell, label = torch.nonzero(image_scores >= threshold, as_tuple=True)
        kept_scores = image_scores[cell, label]
        kept_boxes = image_boxes[cell]
        keep = torchvision.ops.batched_nms(kept_boxes, kept_scores, label, iou)[:max_detections]
        sx, sy = width / INPUT_SIZE, height / INPUT_SIZE
        area = float(width * height) or 1.0
        record: list[dict[str, float | str]] = []
        for (x1, y1, x2, y2), score, k in zip(kept_boxes[keep].tolist(), kept_scores[keep].tolist(),
                                              label[keep].tolist()):
            x1, x2 = min(max(x1 * sx, 0.0), width), min(max(x2 * sx, 0.0), width)
            y1, y2 = min(max(y1 * sy, 0.0), height), min(max(y2 * sy, 0.0), height)
            record.append({"label": COCO80[k], "score": float(score), "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                           "area": (x2 - x1) * (y2 - y1) / area})
        records.append(record)
    return records
