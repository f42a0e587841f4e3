"""MediaPipe Selfie: person segmentation, from the TF.js graph in human-models 3.0.4.

The graph (``selfie.json`` + ``selfie.bin``) takes a 256 x 256 RGB image scaled to
[0, 1], NHWC, and gives a person probability per pixel, [N, 256, 256, 1]. :func:`masks`
turns that into the record shape of ``models/segment.py``: a two-class mask
(0 = background, 1 = person, where the probability is at least 0.5) at the photo's aspect,
its longer side at most ``mask_size``, with each class's fraction and mean confidence.
The photo is stretched to the square input, as the upstream pipeline does; the mask is
stretched back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.segment import MASK_ENCODING, encode_mask, mask_shape
from models.tfjs import TfjsGraph, load_graph_model

JSON_FILE = "selfie.json"
JSON_SHA256 = "8b7f5f95c0159a83a7240b1298a67012cfffd0396bfa653bdf452913610e9a88"
BIN_FILE = "selfie.bin"
BIN_SHA256 = "8f57aaa72dc068a50bd37c232d2e073e107912241e459002e1480876676f382a"
INPUT_SIZE = 256
CATEGORIES = ("__background__", "person")
"""Mask values: 0 background, 1 person ("person" is also the VOC name, so evaluation and
search treat it like the VOC segmenters' person)."""
PERSON_THRESHOLD = 0.5


class Selfie(nn.Module):
    """The converted graph: ``forward(x [N, 256, 256, 3]) -> person probability [N, 256, 256]``."""

    def __init__(self, graph: TfjsGraph, output: str) -> None:
        super().__init__()
        self.graph = graph
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)[self.output][..., 0]


def build(json_path: str | Path, bin_path: str | Path) -> Selfie:
    """Selfie from its TF.js files."""
    graph = load_graph_model(json_path, bin_path)
    return Selfie(graph, graph.output_names[0]).eval()


def preprocess(images: Sequence[np.ndarray]) -> torch.Tensor:
    """H x W x 3 uint8 RGB photos (any sizes) as the model's [N, 256, 256, 3] input in [0, 1]."""
    batch = []
    for image in images:
        rgb = torch.from_numpy(np.array(image, copy=not image.flags.writeable, order="C")).permute(2, 0, 1).float().unsqueeze(0)
        resized = F.interpolate(rgb, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                                antialias=True)
        batch.append(resized[0].permute(1, 2, 0) / 255.0)
    return torch.stack(batch)


def masks(probabilities: torch.Tensor, sizes: Sequence[tuple[int, int]], mask_size: int = 512) -> list[dict]:
    """Per photo of ``sizes`` (width, height), a ``models/segment.py`` record of its
    person mask, at most ``mask_size`` on its longer side."""
    records = []
    for probability, original in zip(probabilities.float(), sizes):
        size = mask_shape(original, mask_size)
        resized = F.interpolate(probability[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        person = resized >= PERSON_THRESHOLD
        confidence = torch.where(person, resized, 1 - resized).cpu().numpy()
        mask = person.to(torch.uint8).cpu().numpy()
        classes = []
        for index, label in enumerate(CATEGORIES):
            selected = mask == index
            count = int(selected.sum())
            if count:
                classes.append({"index": index, "label": label, "fraction": count / mask.size,
                                "score": float(confidence[selected].mean())})
        records.append({"encoding": MASK_ENCODING, "mask_width": mask.shape[1], "mask_height": mask.shape[0],
                        "mask": encode_mask(mask), "classes": classes})
    return records
