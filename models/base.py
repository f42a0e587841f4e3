"""The one base class every task's model wrapper extends.

A wrapper turns a batch of working images (H x W x 3 uint8 arrays of any size) into one
plain record per image. Working images are photos shrunk for the models; each comes with
the photo's original (width, height) after EXIF rotation, so records that hold geometry
(boxes, masks) can be given in the photo's own pixels rather than the working image's.
The generic inference stage (``pipeline/inference.py``) knows only this interface, so a
new task is a new small subclass, not a new batch loop.

The base owns what every wrapper must get right the same way (template methods):
:meth:`ModelWrapper.load` builds the network once, in eval mode, on the device, laid out
channels-last; :meth:`ModelWrapper.predict_columns` runs under ``torch.inference_mode``
and the run's autocast. Subclasses fill in :meth:`~ModelWrapper.build` and
:meth:`~ModelWrapper.infer`; nothing outside a wrapper sets its ``model``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from models.registry import ModelSpec
from pipeline.errors import ModelError
from pipeline.records import IndexRow

CommitHook = Callable[[Any, Mapping[str, int]], None]
"""Runs inside the writer's SQLite transaction with (connection, path -> new photo id)."""


@dataclass(frozen=True)
class TaskOptions:
    """Per-task knobs, one object for every wrapper; each reads the ones it needs."""

    top_k: int = 5
    score_threshold: float = 0.5
    mask_size: int = 512


class ModelWrapper(ABC):
    """Lazy-loading, batched model for one task.

    Subclasses set ``task``, ``column`` (the result column their records fill) and
    ``arrow_type`` (its Arrow type), and implement :meth:`infer` and :meth:`labels_of`.
    """

    task: ClassVar[str]
    column: ClassVar[str]
    arrow_type: ClassVar[pa.DataType]
    extra_columns: ClassVar[dict[str, pa.DataType]] = {}
    """Columns filled besides ``column`` from the same forward pass (see :meth:`infer_columns`)."""
    output_version: ClassVar[int] = 1
    """Raised when the task's records gain content, so a later run re-runs the task on
    photos indexed before (``pipeline/writer.ModelKey``)."""
    autocast_safe: ClassVar[bool] = True
    """False for models whose outputs reduced precision moves too far: they run in fp32
    even where the run uses autocast."""

    def __init__(self, spec: ModelSpec, state_dict: Any, device: str, options: TaskOptions,
                 *, channels_last: bool = True, autocast: torch.dtype | None = None) -> None:
        self.spec = spec
        self.options = options
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.autocast = autocast
        self._state_dict = state_dict
        self.model: nn.Module | None = None
        self.preprocess: nn.Module | None = None

    @classmethod
    def columns(cls) -> dict[str, pa.DataType]:
        """Every result column this wrapper fills, ``column`` first."""
        return {cls.column: cls.arrow_type, **cls.extra_columns}

    # -- loading (template: build, then the same placement for every model) -------------

    def load(self) -> None:
        """Build the network and load its weights; cheap to call twice."""
        if self.model is not None:
            return
        model = self.build().eval().to(self.device)
        if self.channels_last:  # tensor cores work in it; 1.3-1.9x faster on CPU too
            model = model.to(memory_format=torch.channels_last)
        self._state_dict = None  # the model holds the tensors now
        self.model = model
        self.loaded()

    def build(self) -> nn.Module:
        """The network with its weights: from ``spec.build`` and a state dict by default."""
        model = self.spec.build()
        state = self._state_dict
        if self.spec.adapt_state_dict is not None:
            state = self.spec.adapt_state_dict(state, model)
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise ModelError(
                f"weights for {self.spec.name} do not fit the architecture: "
                f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
            )
        self.preprocess = self.spec.preprocess()
        return model

    def loaded(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Called once after the model is placed (e.g. to set a detector's threshold)."""

    # -- inference (template: load, inference mode, precision, then the subclass) --------

    def predict_columns(self, images: list[np.ndarray],
                        sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
        """Per image, {column: value} for every column of :meth:`columns`.

        ``sizes`` are the photos' original (width, height); None means the images are the
        originals.
        """
        self.load()
        originals = self.original_sizes(images, sizes)
        with torch.inference_mode(), self._precision():
            return self.infer_columns(images, originals)

    def predict(self, images: list[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None) -> list[Any]:
        """One record (matching ``arrow_type``) per image, in order."""
        return [row[self.column] for row in self.predict_columns(images, sizes)]

    def infer_columns(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """Per image, every column's value; override where one pass fills several columns."""
        return [{self.column: record} for record in self.infer(images, originals)]

    @abstractmethod
    def infer(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[Any]:
        """One record per image; runs loaded, in inference mode, at the run's precision."""

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        if not self.autocast_safe:
            return torch.autocast(device_type=self.device.type, enabled=False)
        if self.autocast is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast)

    # -- what a record adds to the SQLite index -----------------------------------------

    @staticmethod
    @abstractmethod
    def labels_of(record: Any) -> Iterable[tuple[str, float]]:
        """The searchable (label, score) pairs in one of this task's records."""

    @classmethod
    def index_rows(cls, path: str, record: Any, model: str) -> Iterable[IndexRow]:
        """The SQLite rows of one photo's record: its search labels, plus whatever table
        the task keeps (boxes, mask classes) where a subclass adds them."""
        for label, score in cls.labels_of(record):
            yield IndexRow("labels", path, {"label": label, "score": float(score), "source": cls.task,
                                            "model": model})

    @classmethod
    def commit_hook(cls, records: Sequence[dict[str, Any]], replaced: Iterable[str],
                    moved_from: Mapping[str, str]) -> CommitHook | None:
        """Work a task does inside every commit, for tables it keeps itself (faces); None
        for most. ``replaced``: paths whose rows the commit drops; ``moved_from``: a new
        record's path -> the path it had."""
        return None

    @staticmethod
    def to_tensor(image: np.ndarray) -> torch.Tensor:
        """An H x W x 3 uint8 array as a 3 x H x W uint8 tensor (no copy)."""
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)

    @staticmethod
    def original_sizes(images: list[np.ndarray], sizes: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
        """``sizes``, or each image's own (width, height) when there are none."""
        if sizes is None:
            return [(im.shape[1], im.shape[0]) for im in images]
        return [(int(w), int(h)) for w, h in sizes]
