"""Stage 3: run every selected model on a batch of decoded photos.

One generic stage for all tasks: it holds a list of :class:`~models.base.ModelWrapper`
objects and knows nothing about what they compute. In Ray it is the callable class of an
actor pool (``pipeline/job.py``), so models load once per actor, not once per batch.

A model that fails on a batch is retried photo by photo, so one odd image becomes one
error row (stage = the task) instead of failing its whole batch.

The stage picks the device and the GPU's autocast dtype (bf16 or fp16); each wrapper
applies them itself (``models/base.py``: channels-last weights, inference mode, autocast
unless the model is not safe under it). CPU inference stays fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from models.base import ModelWrapper, TaskOptions
from models.registry import ModelSpec
from models.tasks import task_columns, wrapper_for
from models.weights import load_state_dict
from pipeline.metadata import METADATA_TYPE, metadata_array
from pipeline.plan import WorkItem
from pipeline.settings import IndexSettings

GPU_BATCH, CPU_BATCH = 32, 4
"""Default images per model call (``IndexSettings.batch_size``)."""

BASE_FIELDS = [
    pa.field("path", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("mtime_ns", pa.int64(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("fingerprint", pa.string(), nullable=False),
    pa.field("tasks", pa.string(), nullable=False),  # comma-separated tasks run on this row
    pa.field("previous_path", pa.string()),  # the indexed path whose results this row updates
    pa.field("error_stage", pa.string(), nullable=False),
    pa.field("error_reason", pa.string(), nullable=False),
]
TASK_COLUMNS: dict[str, dict[str, pa.DataType]] = task_columns()
"""Task -> the columns it fills: its ``column``, then any ``extra_columns`` (the classifier's embedding)."""
METADATA_FIELD = pa.field("metadata", METADATA_TYPE)  # date taken, camera, GPS: pipeline/metadata.py
RESULT_SCHEMA = pa.schema(BASE_FIELDS + [pa.field(c, t) for cols in TASK_COLUMNS.values() for c, t in cols.items()]
                          + [METADATA_FIELD])
"""Rows out of the inference stage: every task's column, null where the task did not run."""


@dataclass(frozen=True)
class ModelPlan:
    """One model to run. The spec travels to the actors whole, so they need no registry lookup."""

    task: str
    spec: ModelSpec


def working_size(plans: Sequence[ModelPlan], image_size: int | None) -> int:
    """The shorter side photos are decoded to: ``image_size`` if set, else the largest
    input size among the run's models, so every model gets the pixels it was trained on."""
    return image_size or max((p.spec.input_size for p in plans), default=256)


@dataclass(frozen=True)
class ComputeOptions:
    """How models run (see ``IndexSettings.precision`` and ``channels_last``)."""

    precision: str = "auto"
    channels_last: bool = True


def autocast_dtype(precision: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on a GPU, None for plain fp32.

    bf16 keeps fp32's range, so no logit overflows; fp16 is for GPUs without bf16
    (before Ampere, e.g. a T4).
    """
    if precision == "auto":
        return torch.bfloat16 if bf16_supported else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def stage_arguments(settings: IndexSettings, plans: Sequence[ModelPlan], gpus: int,
                    default_threads: int) -> dict[str, Any]:
    """Keyword arguments of :class:`InferenceStage` for a run: the same on Ray and in-process.

    ``default_threads`` is the CPU threads a model gets unless ``model_threads`` says."""
    return {
        "plans": list(plans), "weights_dir": settings.weights_dir,
        "options": TaskOptions(top_k=settings.top_k, score_threshold=settings.score_threshold,
                               mask_size=settings.mask_size),
        # A GPU actor reserves no CPU, so Ray gives it one torch thread unless told.
        "cpu_threads": settings.model_threads or (None if gpus else default_threads),
        "compute": ComputeOptions(settings.precision, settings.channels_last),
    }


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class InferenceStage:
    """Callable over decoded batches (``decode_batch``'s output) returning result rows."""

    def __init__(self, plans: Sequence[ModelPlan], weights_dir: Path | None,
                 options: TaskOptions, cpu_threads: int | None = None,
                 compute: ComputeOptions = ComputeOptions()) -> None:
        """Load every model once. Weights are looked up again where this runs (a cluster
        node), with the same lookup the driver used to check them."""
        device = pick_device()
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.autocast: torch.dtype | None = None
        if device == "cuda":
            # Emulated bf16 (pre-Ampere, e.g. a T4) is slower than fp16: native only.
            native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
            self.autocast = autocast_dtype(compute.precision, native_bf16)
        self.wrappers: list[ModelWrapper] = []
        for plan in plans:
            state_dict = load_state_dict(plan.spec, weights_dir, offline=True)
            wrapper = wrapper_for(plan.task, plan.spec)(plan.spec, state_dict, device, options,
                                                        channels_last=compute.channels_last, autocast=self.autocast)
            wrapper.load()
            self.wrappers.append(wrapper)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        n = len(batch["path"])
        stages = [str(s) for s in batch["error_stage"]]
        reasons = [str(r) for r in batch["error_reason"]]
        columns: dict[str, list] = {c: [None] * n for cols in TASK_COLUMNS.values() for c in cols}
        tasks = [str(t).split(",") for t in batch["tasks"]]
        for wrapper in self.wrappers:
            live = [i for i in range(n) if not reasons[i] and wrapper.task in tasks[i]]
            if not live:
                continue
            images = [batch["image"][i] for i in live]
            sizes = [(int(batch["width"][i]), int(batch["height"][i])) for i in live]
            outcomes = _predict_isolating(wrapper, images, sizes)
            for i, outcome in zip(live, outcomes):
                if isinstance(outcome, _Failure):
                    stages[i], reasons[i] = wrapper.task, outcome.reason
                else:
                    for column, value in outcome.items():
                        columns[column][i] = value
        for values in columns.values():  # a photo that failed any task keeps no result
            for i in range(n):
                if reasons[i]:
                    values[i] = None
        return pa.table({
            "path": [str(p) for p in batch["path"]],
            "size": np.asarray(batch["size"], dtype=np.int64),
            "mtime_ns": np.asarray(batch["mtime_ns"], dtype=np.int64),
            "width": np.asarray(batch["width"], dtype=np.int32),
            "height": np.asarray(batch["height"], dtype=np.int32),
            "fingerprint": [str(f) for f in batch["fingerprint"]],
            "tasks": [str(t) for t in batch["tasks"]],
            "previous_path": [str(p) if p else None for p in batch["previous_path"]],
            "error_stage": stages,
            "error_reason": reasons,
            **columns,
            "metadata": metadata_array(batch.get("metadata"), n),
        }, schema=RESULT_SCHEMA)


def failed_rows(work: Sequence[WorkItem], stage: str, reason: str) -> pa.Table:
    """Result rows recording that ``work`` failed at ``stage`` for ``reason``."""
    n = len(work)
    return pa.table({
        "path": [w.file.path for w in work],
        "size": pa.array([w.file.size for w in work], pa.int64()),
        "mtime_ns": pa.array([w.file.mtime_ns for w in work], pa.int64()),
        "width": pa.array([0] * n, pa.int32()),
        "height": pa.array([0] * n, pa.int32()),
        "fingerprint": [""] * n,
        "tasks": [",".join(w.tasks) for w in work],
        "previous_path": [w.previous_path for w in work],
        "error_stage": [stage] * n,
        "error_reason": [reason] * n,
        **{c: pa.nulls(n, t) for cols in TASK_COLUMNS.values() for c, t in cols.items()},
        "metadata": pa.nulls(n, METADATA_TYPE),
    }, schema=RESULT_SCHEMA)


@dataclass(frozen=True)
class _Failure:
    reason: str


def _predict_isolating(wrapper: ModelWrapper, images: list[np.ndarray], sizes: list[tuple[int, int]]) -> list:
    """Predict the batch; if that fails, each image alone, so only the bad ones fail."""
    if len(images) > 1:
        try:
            return wrapper.predict_columns(images, sizes)
        except Exception:
            pass
    outcomes: list = []
    for image, size in zip(images, sizes):
        try:
            outcomes.extend(wrapper.predict_columns([image], [size]))
        except Exception as exc:
            outcomes.append(_Failure(f"{wrapper.spec.name} failed on this image: {type(exc).__name__}: {exc}"))
    return outcomes
