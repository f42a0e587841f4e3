"""Which wrapper class runs each task, and the options the wrappers share."""

from __future__ import annotations

from dataclasses import dataclass

from models.base import ModelWrapper
from models.classify import Classifier

TASK_WRAPPERS: dict[str, type[ModelWrapper]] = {
    Classifier.task: Classifier,
}


@dataclass(frozen=True)
class TaskOptions:
    """Per-task knobs, one object for every wrapper; each reads the ones it needs."""

    top_k: int = 5

