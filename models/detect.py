"""Object detection: COCO boxes with a label and a score, in the photo's own pixels.

A box is ``x1, y1, x2, y2`` in pixels of the original photo as a person sees it (after
EXIF rotation), ``x1 < x2`` rightwards and ``y1 < y2`` downwards from the top-left
corner: the detector runs on the working image and its boxes are scaled back by
:func:`scale_box`, so they stay right whatever size the photo was decoded at.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from torch import nn

from models.base import ModelWrapper
from pipeline.records import IndexRow

OBJECT_TYPE = pa.list_(pa.struct([
    ("label", pa.string()),
    ("score", pa.float32()),
    ("x1", pa.float32()),
    ("y1", pa.float32()),
    ("x2", pa.float32()),
    ("y2", pa.float32()),
    ("area", pa.float32()),  # box area as a fraction of the photo's area
]))
NOT_A_CLASS = frozenset({"__background__", "N/A"})
"""torchvision's COCO category slots that are not classes (index 0 and the 10 unused ids)."""


def scale_box(box: Sequence[float], working: tuple[int, int], original: tuple[int, int]) -> tuple[float, ...]:
    """A box on a working image of size ``working`` (w, h) in pixels of ``original`` (w, h),
    clipped to the photo."""
    sx, sy = original[0] / working[0], original[1] / working[1]
    x1, y1, x2, y2 = box
    return (
        min(max(x1 * sx, 0.0), original[0]), min(max(y1 * sy, 0.0), original[1]),
        min(max(x2 * sx, 0.0), original[0]), min(max(y2 * sy, 0.0), original[1]),
    )


def set_score_threshold(model: nn.Module, threshold: float) -> None:
    """Make the detector keep every box down to ``threshold``: torchvision detectors drop
    boxes below their own built-in threshold (0.05 or 0.001) before we see them."""
    if hasattr(model, "roi_heads"):  # Faster R-CNN family
        setattr(model.roi_heads, "score_thresh", threshold)  # noqa: B010 - a Module attribute, not a tensor
    elif hasattr(model, "score_thresh"):  # SSD, SSDlite, RetinaNet, FCOS
        setattr(model, "score_thresh", threshold)  # noqa: B010


class Detector(ModelWrapper):
    """Boxes of the COCO classes whose score is at least ``options.score_threshold``."""

    task = "detect"
    column = "objects"
    arrow_type = OBJECT_TYPE

    def loaded(self) -> None:
        assert self.model is not None
        set_score_threshold(self.model, self.options.score_threshold)

    @staticmethod
    def labels_of(record: list[dict]) -> Iterable[tuple[str, float]]:
        """One pair per class, with its best box's score: the chance there is at least one.

        Summing boxes instead would make three faint people outrank one certain dog.
        """
        best: dict[str, float] = {}
        for item in record:
            best[item["label"]] = max(best.get(item["label"], 0.0), item["score"])
        return best.items()

    @classmethod
    def index_rows(cls, path: str, record: list[dict], model: str) -> Iterable[IndexRow]:
        """Its labels, and one ``objects`` row per box (``--min-count`` and box filters)."""
        yield from super().index_rows(path, record, model)
        for box in record:
            yield IndexRow("objects", path, {**box, "model": model})

    def infer(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[list[dict[str, Any]]]:
        assert self.model is not None and self.preprocess is not None  # load() set them
        batch = [self.preprocess(self.to_tensor(im)).to(self.device) for im in images]
        outputs = self.model(batch)
        records = []
        for image, original, out in zip(images, originals, outputs):
            working = (image.shape[1], image.shape[0])
            photo_area = float(original[0] * original[1]) or 1.0
            record = []
            for box, label, score in zip(out["boxes"].cpu().tolist(), out["labels"].cpu().tolist(),
                                         out["scores"].cpu().tolist()):
                name = self.spec.categories[label]
                if name in NOT_A_CLASS or score < self.options.score_threshold:
                    continue
                x1, y1, x2, y2 = scale_box(box, working, original)
                record.append({"label": name, "score": float(score), "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                               "area": (x2 - x1) * (y2 - y1) / photo_area})
            records.append(record)
        return records
