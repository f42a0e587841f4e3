"""MTCNN face detection (Zhang et al. 2016) in plain torch: boxes, scores and 5 landmarks.

The three small networks (P-, R- and O-Net) are written here with the parameter names of
the ``facenet-pytorch`` state dicts (``pnet.pt``, ``rnet.pt``, ``onet.pt``, MIT), so those
files load with ``weights_only=True`` and no dependency on that package (it pins an old
torch). The cascade follows the reference algorithm: an image pyramid through P-Net
(stride 2, 12 px cells), NMS, R-Net on 24 px crops, O-Net on 48 px crops, which also
gives the landmarks (left eye, right eye, nose, left and right mouth corner, as seen in
the photo).

Works one image at a time: working images differ in size, and the cost is dominated by
the pyramid, not by batching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms

THRESHOLDS = (0.6, 0.7, 0.7)
"""Per-stage score thresholds of the reference implementation."""
PYRAMID_FACTOR = 0.709
"""Scale step of the image pyramid (area halves every two levels)."""


class PNet(nn.Module):
    """Proposal net: fully convolutional, a face probability and box offsets per 12 px cell."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement net on 24 x 24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # the original (Caffe) weights flatten W, H, C
        x = self.prelu4(self.dense4(x.flatten(1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48 x 48 crops: score, box offsets and the 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


class MTCNN(nn.Module):
    """The three nets as one module, so one state dict (keys ``pnet.*``, ``rnet.*``, ``onet.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()


WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")


def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The three ``facenet-pytorch`` files in ``folder`` as one state dict for :class:`MTCNN`."""
    state: dict[str, torch.Tensor] = {}
    for name in WEIGHT_FILES:
        part = torch.load(Path(folder) / name, map_location="cpu", weights_only=True)
        state.update({f"{name[:4]}.{k}": v for k, v in part.items()})
    return state


def build(state: Mapping[str, torch.Tensor] | None = None) -> MTCNN:
    model = MTCNN()
    if state is not None:
        model.load_state_dict(dict(state))
    return model.eval()


@dataclass(frozen=True)
class RawFaces:
    """MTCNN output on one image, in that image's pixels."""

    boxes: np.ndarray  # N x 4: x1, y1, x2, y2
    scores: np.ndarray  # N
    landmarks: np.ndarray  # N x 5 x 2: (x, y) of left eye, right eye, nose, mouth left, mouth right


def _empty() -> RawFaces:
    return RawFaces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes grown to squares around their centres (the nets see square crops)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + offsets * torch.stack([w, h, w, h], dim=1)


def _crops(image: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of ``boxes`` (clipped to the image) resized to size x size; and which boxes had any."""
    _, h, w = image.shape
    b = boxes.trunc().int().tolist()
    out, keep = [], []
    for i, (x1, y1, x2, y2) in enumerate(b):
        x1, y1, x2, y2 = max(x1, 1), max(y1, 1), min(x2, w), min(y2, h)
        if x2 > x1 - 1 and y2 > y1 - 1 and x2 >= x1 and y2 >= y1:
            crop = image[:, y1 - 1 : y2, x1 - 1 : x2].unsqueeze(0)
            out.append(F.interpolate(crop, size=(size, size), mode="area"))
            keep.append(i)
    if not out:
        return torch.zeros(0, 3, size, size), torch.zeros(0, dtype=torch.long)
    return torch.cat(out), torch.tensor(keep, dtype=torch.long)


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """NMS on intersection over the smaller box: removes a face box nested in another."""
    order = scores.argsort(descending=True).tolist()
    area = ((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)).tolist()
    b = boxes.tolist()
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            iw = min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]) + 1
            ih = min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]) + 1
            if iw > 0 and ih > 0 and iw * ih / min(area[i], area[j]) > threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long)


@torch.inference_mode()
def detect(model: MTCNN, image: np.ndarray, min_face: int = 20,
           thresholds: tuple[float, float, float] = THRESHOLDS, max_faces: int = 500) -> RawFaces:
    """Faces in one H x W x 3 uint8 RGB image whose side is at least ``min_face`` pixels.

    ``max_faces`` bounds the proposals sent to the later stages (a crowd or a texture that
    looks like faces everywhere), best first, so time and memory stay bounded.
    """
    device = next(model.parameters()).device
    h, w = image.shape[:2]
    if h < 12 or w < 12:
        return _empty()
    img = torch.tensor(image, device=device).permute(2, 0, 1).float()
    # Stage 1: pyramid through P-Net.
    m = 12.0 / min_face
    scales, side = [], min(h, w) * m
    scale = m
    while side >= 12:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
        side *= PYRAMID_FACTOR
    found = []
    for scale in scales:
        size = (int(h * scale + 1), int(w * scale + 1))
        data = _normalise(F.interpolate(img.unsqueeze(0), size=size, mode="area"))
        reg, prob = model.pnet(data)
        p = prob[0, 1]
        ys, xs = torch.nonzero(p >= thresholds[0], as_tuple=True)
        if len(ys) == 0:
            continue
        score = p[ys, xs]
        offsets = reg[0, :, ys, xs].T
        cells = torch.stack([xs, ys], dim=1).float()
        q1 = ((2 * cells + 1) / scale).floor()
        q2 = ((2 * cells + 12) / scale).floor()
        boxes = torch.cat([q1, q2], dim=1)
        keep = nms(boxes, score, 0.5)
        found.append(torch.cat([boxes[keep], score[keep, None], offsets[keep]], dim=1))
    if not found:
        return _empty()
    cand = torch.cat(found)
    cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)][: max_faces * 4]
    boxes = _square(_regress(cand[:, :4], cand[:, 5:9]))
    # Stage 2: R-Net.
    crops, keep = _crops(img, boxes, 24)
    if len(keep) == 0:
        return _empty()
    boxes = boxes[keep]
    reg, prob = model.rnet(_normalise(crops))
    ok = prob[:, 1] > thresholds[1]
    boxes, score, reg = boxes[ok], prob[ok, 1], reg[ok]
    keep = nms(boxes, score, 0.7)[:max_faces]
    boxes = _square(_regress(boxes[keep], reg[keep]))
    if len(boxes) == 0:
        return _empty()
    # Stage 3: O-Net, with landmarks.
    crops, keep = _crops(img, boxes, 48)
    if len(keep) == 0:
        return _empty()
    boxes = boxes[keep]
    reg, marks, prob = model.onet(_normalise(crops))
    ok = prob[:, 1] > thresholds[2]
    boxes, score, reg, marks = boxes[ok], prob[ok, 1], reg[ok], marks[ok]
    bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    px = bw * marks[:, :5] + boxes[:, 0:1] - 1
    py = bh * marks[:, 5:] + boxes[:, 1:2] - 1
    points = torch.stack([px, py], dim=2)
    boxes = _regress(boxes, reg)
    keep = _nms_min(boxes, score, 0.7)
    if len(keep) == 0:
        return _empty()
    boxes, score, points = boxes[keep], score[keep], points[keep]
    return RawFaces(boxes.cpu().numpy().astype(np.float32), score.cpu().numpy().astype(np.float32),
                    points.cpu().numpy().astype(np.float32))


__all__ = ["MTCNN", "RawFaces", "build", "detect", "load_state_dict"]
