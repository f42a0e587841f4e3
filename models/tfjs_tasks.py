"""Task wrappers for the TF.js models: NanoDet detects, Selfie segments people.

They fill the same columns with the same records as ``models/detect.py`` and
``models/segment.py`` (so search, show and eval need no change); only loading (from the
verified ``X.json`` + ``X.bin``, see ``models/weights.ModelFiles``) and the model's own
pre- and post-processing differ. The registry names them in ``ModelSpec.wrapper``.

Both run without autocast (``autocast_safe = False``): measured on an H200, bf16 autocast
moved Selfie's person probability by up to 0.62 and NanoDet's box regressions by up to
0.14 (fp16: 0.10 and 0.02), while both models are small enough to run 3,000-8,000
photos/s in fp32 there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from models import nanodet, selfie
from models.base import TaskOptions
from models.detect import Detector
from models.segment import Segmenter
from models.weights import ModelFiles
from pipeline.errors import ModelError


def _build(wrapper: Detector | Segmenter) -> torch.nn.Module:
    files = wrapper._state_dict
    if not isinstance(files, ModelFiles) or wrapper.spec.build_from_files is None:
        raise ModelError(f"{wrapper.spec.name} is built from its TF.js files; load it with models.weights")
    json_path, bin_path = files.paths[0], files.paths[1]
    return wrapper.spec.build_from_files(json_path, bin_path)



class NanoDetDetector(Detector):
    """COCO-80 boxes from NanoDet, in ``models/detect.py``'s record shape."""

    autocast_safe = False  # see the module docstring

    def build(self) -> torch.nn.Module:
        return _build(self)

    def loaded(self) -> None:
        """Nothing to set: NanoDet's threshold applies in :func:`nanodet.detections`."""

    @staticmethod
    def labels_of(record: list[dict]) -> Iterable[tuple[str, float]]:
        """Per class, its best box's score, for classes whose boxes together cover at least
        ``nanodet.SEARCH_MIN_AREA`` of the photo (see there: a tiny object is no
        whole-photo search target, and tiny boxes are the detector's least reliable)."""
        best: dict[str, float] = {}
        covered: dict[str, float] = {}
        for item in record:
            label = item["label"]
            best[label] = max(best.get(label, 0.0), item["score"])
            covered[label] = covered.get(label, 0.0) + item["area"]
        return [(label, score) for label, score in best.items() if covered[label] >= nanodet.SEARCH_MIN_AREA]

    def score_threshold(self) -> float:
        """The run's ``--score-threshold``, or NanoDet's measured default where the run
        keeps the default meant for torchvision's detectors."""
        given = self.options.score_threshold
        if given == TaskOptions.score_threshold and self.spec.default_score_threshold is not None:
            return self.spec.default_score_threshold
        return given

    def infer(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[list[dict[str, Any]]]:
        assert self.model is not None
        batch = nanodet.preprocess(images).to(self.device)
        scores, boxes = self.model(batch.contiguous(memory_format=torch.channels_last))
        return nanodet.detections(scores, boxes, originals, self.score_threshold())


class SelfieSegmenter(Segmenter):
    """A person/background mask from MediaPipe Selfie, in ``models/segment.py``'s record shape.

    Selfie separates a foreground from the background; it cannot say whether there is a
    person. On the 32 coco64 photos without people it still marked 5% or more of 18 of
    them "person", at mean confidence up to 0.97 (food, animals, vehicles). So its mask is
    for cutting out people a detector found, and it gives search no labels.
    """

    mask_needs_boxes = True

    @staticmethod
    def labels_of(record: dict) -> Iterable[tuple[str, float]]:
        """None: a Selfie mask is no evidence that a person is in the photo (see above)."""
        return ()

    autocast_safe = False  # see the module docstring

    def build(self) -> torch.nn.Module:
        return _build(self)

    def infer(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[dict]:
        assert self.model is not None
        probabilities = self.model(selfie.preprocess(images).to(self.device))
        return selfie.masks(probabilities, originals, self.options.mask_size)
