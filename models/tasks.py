"""Which wrapper class runs each task, and the options the wrappers share."""

from __future__ import annotations

from dataclasses import dataclass

from models.base import ModelWrapper
from models.classify import Classifier
from models.detect import Detector
from models.faces import FaceFinder
from models.registry import ModelSpec
from models.segment import Segmenter

TASK_WRAPPERS: dict[str, type[ModelWrapper]] = {
    Classifier.task: Classifier,
    Detector.task: Detector,
    Segmenter.task: Segmenter,
    FaceFinder.task: FaceFinder,
}
"""Task name -> wrapper, in the order the tasks run on each photo."""


def wrapper_for(task: str, spec: ModelSpec) -> type[ModelWrapper]:
    """The wrapper class that runs ``spec`` for ``task``: the task's own, unless the
    model brings one (e.g. NanoDet, whose outputs are not torchvision's)."""
    return spec.wrapper() if spec.wrapper is not None else TASK_WRAPPERS[task]


def wrapper_named(task: str, model: str) -> type[ModelWrapper]:
    """:func:`wrapper_for` by model name; the task's own wrapper for a name the registry
    does not know (a spec given directly, e.g. a fine-tuned model)."""
    from models.registry import get_spec
    from pipeline.errors import UnknownModelError

    try:
        return wrapper_for(task, get_spec(model))
    except UnknownModelError:
        return TASK_WRAPPERS[task]


@dataclass(frozen=True)
class TaskOptions:
    """Per-task knobs, one object for every wrapper; each reads the ones it needs."""

    top_k: int = 5
    score_threshold: float = 0.5
    mask_size: int = 512
