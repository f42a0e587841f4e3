"""Semantic segmentation: a class per pixel, stored as a lossless PNG mask.

The mask covers the whole photo at a bounded resolution: the photo's aspect ratio, its
longer side at most ``options.mask_size`` pixels. It is a PNG whose grey levels are
indices into the model's categories (VOC order: 0 = background, 15 = person, ...): a
palette PNG of as few bits as the classes need (:func:`encode_mask`; older records are
8-bit greyscale PNGs); PNG is lossless, so :func:`decode_mask` gives back exactly the array
the model produced. ``classes`` lists the classes present with their pixel fraction and
the model's mean confidence over their pixels.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from PIL import Image

from models.base import ModelWrapper
from pipeline.records import IndexRow

MASK_ENCODING = "png-gray8"
"""The only mask encoding: a PNG whose grey level is the category index (8-bit greyscale
in older records, a grey palette now: :func:`encode_mask`). The tag kept its name when the
palette came, since both decode alike and older readers check it."""
SEARCHABLE_FRACTION = 0.01
"""A class joins search only where it covers at least 1% of the photo; smaller specks are
more often model noise than content (they stay in the mask and the segments table)."""
BACKGROUND = "__background__"

SEGMENT_TYPE = pa.struct([
    ("encoding", pa.string()),
    ("mask_width", pa.int32()),
    ("mask_height", pa.int32()),
    ("mask", pa.binary()),
    ("classes", pa.list_(pa.struct([
        ("index", pa.int32()),
        ("label", pa.string()),
        ("fraction", pa.float32()),
        ("score", pa.float32()),
    ]))),
])


_GREY_PALETTE = [level for index in range(256) for level in (index, index, index)]


def encode_mask(mask: np.ndarray) -> bytes:
    """An H x W uint8 class-index array as a palette PNG with the fewest bits per pixel its
    classes need (1 for a person mask), at zlib's default effort.

    Against the 8-bit greyscale PNG at zlib's hardest setting it replaced, writing is 6-17x
    faster (0.42 vs 7.2 ms for Selfie's 512 x 384), time a model actor spends per photo;
    Selfie's 2-class masks are 12% smaller, many-class VOC masks about 1.3x larger (47
    coco64 masks: 2,170 vs 1,639 bytes). The grey palette maps index i to grey level i, so
    a reader converting to greyscale, as :func:`decode_mask` does, gets the indices (a raw
    reader of 1-4-bit PNGs, such as torchvision's default mode, gets packed bytes)."""
    pixels = np.ascontiguousarray(mask, dtype=np.uint8)
    top = int(pixels.max()) if pixels.size else 0
    image = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), pixels.tobytes())
    image.putpalette(_GREY_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", bits=next(bits for bits in (1, 2, 4, 8) if top < 1 << bits))
    return buffer.getvalue()


def decode_mask(record: dict) -> np.ndarray:
    """The H x W uint8 class-index array of a segmentation record, exactly as stored."""
    if record["encoding"] != MASK_ENCODING:
        raise ValueError(f"unknown mask encoding {record['encoding']!r}")
    return np.asarray(Image.open(io.BytesIO(record["mask"])).convert("L"), dtype=np.uint8)


def mask_shape(original: tuple[int, int], mask_size: int) -> tuple[int, int]:
    """(height, width) of a photo's mask: its aspect, longer side at most ``mask_size``."""
    w, h = original
    scale = min(1.0, mask_size / max(w, h))
    return max(1, round(h * scale)), max(1, round(w * scale))


class Segmenter(ModelWrapper):
    """One class mask per photo, with the fraction and confidence of each class present."""

    task = "segment"
    column = "segmentation"
    arrow_type = SEGMENT_TYPE
    mask_needs_boxes = False
    """True for a segmenter that marks any foreground as its class (Selfie): ``photos show``
    then draws and cuts out its classes only inside the detector's boxes of that class."""

    @staticmethod
    def labels_of(record: dict) -> Iterable[tuple[str, float]]:
        """Classes covering at least 1% of the photo, scored by the model's confidence."""
        return ((c["label"], c["score"]) for c in record["classes"]
                if c["label"] != BACKGROUND and c["fraction"] >= SEARCHABLE_FRACTION)

    @classmethod
    def index_rows(cls, path: str, record: dict, model: str) -> Iterable[IndexRow]:
        """Its labels, and one ``segments`` row per class in the mask (``--cutout``, eval)."""
        yield from super().index_rows(path, record, model)
        for c in record["classes"]:
            yield IndexRow("segments", path, {"label": c["label"], "fraction": c["fraction"], "score": c["score"],
                                              "model": model})

    def infer(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[dict]:
        assert self.model is not None and self.preprocess is not None  # load() set them
        tensors = [self.preprocess(self.to_tensor(im)) for im in images]
        # Photos of one shape run as one call. Padding mixed shapes to one would cost up to
        # twice the pixels (portrait beside landscape) and change predictions at the borders.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(tensors):
            by_shape.setdefault(tuple(t.shape), []).append(i)
        records: list[dict] = [{}] * len(images)
        for indices in by_shape.values():
            logits = self.model(torch.stack([tensors[i] for i in indices]).to(self.device))["out"].float()
            for row, i in enumerate(indices):
                size = mask_shape(originals[i], self.options.mask_size)
                resized = F.interpolate(logits[row:row + 1], size=size, mode="bilinear", align_corners=False)
                probs = torch.softmax(resized[0], dim=0)
                confidence, mask = probs.max(dim=0)
                records[i] = self._record(mask.to(torch.uint8).cpu().numpy(), confidence.cpu().numpy())
        return records

    def _record(self, mask: np.ndarray, confidence: np.ndarray) -> dict:
        counts = np.bincount(mask.ravel(), minlength=len(self.spec.categories))
        sums = np.bincount(mask.ravel(), weights=confidence.ravel(), minlength=len(self.spec.categories))
        classes = [
            {"index": int(i), "label": self.spec.categories[i], "fraction": float(counts[i] / mask.size),
             "score": float(sums[i] / counts[i])}
            for i in np.flatnonzero(counts)
        ]
        return {"encoding": MASK_ENCODING, "mask_width": mask.shape[1], "mask_height": mask.shape[0],
                "mask": encode_mask(mask), "classes": classes}
