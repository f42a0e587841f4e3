"""Which wrapper class runs each task, and the options the wrappers share."""

from __future__ import annotations

from dataclasses import dataclass

from models.base import ModelWrapper
from models.classify import Classifier
from models.detect import Detector
from models.faces import FaceFinder
from models.segment import Segmenter

TASK_WRAPPERS: dict[str, type[ModelWrapper]] = {
    Classifier.task: Classifier,
    Detector.task: Detector,
    Segmenter.task: Segmenter,
    FaceFinder.task: FaceFinder,
}
"""Task name -> wrapper, in the order the tasks run on each photo."""


@dataclass(frozen=True)
class TaskOptions:
    """Per-task knobs, one object for every wrapper; each reads the ones it needs."""

    top_k: int = 5
    score_threshold: float = 0.5
    mask_size: int = 512
