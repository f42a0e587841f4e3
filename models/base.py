"""The one base class every task's model wrapper extends.

A wrapper turns a batch of working images (H x W x 3 uint8 arrays of any size) into one
plain record per image. Working images are photos shrunk for the models; each comes with
the photo's original (width, height) after EXIF rotation, so records that hold geometry
(boxes, masks) can be given in the photo's own pixels rather than the working image's. The generic inference stage (``pipeline/inference.py``) knows
only this interface, so a new task is a new small subclass, not a new batch loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from models.registry import ModelSpec
from pipeline.errors import ModelError

if TYPE_CHECKING:
    from models.tasks import TaskOptions


class ModelWrapper(ABC):
    """Lazy-loading, batched model for one task.

    Subclasses set ``task``, ``column`` (the result column they fill) and ``arrow_type``
    (its Arrow type), and implement :meth:`predict` and :meth:`labels_of`.
    """

    task: ClassVar[str]
    column: ClassVar[str]
    arrow_type: ClassVar[pa.DataType]

    def __init__(self, spec: ModelSpec, state_dict: Mapping[str, torch.Tensor],
                 device: str, options: TaskOptions) -> None:
        self.spec = spec
        self.options = options
        self.device = torch.device(device)
        self._state_dict = state_dict
        self.model: nn.Module | None = None
        self.preprocess: nn.Module | None = None

    def load(self) -> None:
        """Build the network and load its weights; cheap to call twice."""
        if self.model is not None:
            return
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
        self._state_dict = {}  # the model holds the tensors now
        self.model = model.eval().to(self.device)
        self.preprocess = self.spec.preprocess()

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """An H x W x 3 uint8 array as a 3 x H x W uint8 tensor (no copy)."""
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)

    @staticmethod
    @abstractmethod
    def labels_of(record: Any) -> Iterable[tuple[str, float]]:
        """The searchable (label, score) pairs in one of this task's records."""

    @abstractmethod
    def predict(self, images: list[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None) -> list[Any]:
        """One record (matching ``arrow_type``) per image, in order.

        ``sizes`` are the photos' original (width, height); None means the images are the
        originals.
        """

    @staticmethod
    def original_sizes(images: list[np.ndarray], sizes: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
        """``sizes``, or each image's own (width, height) when there are none."""
        if sizes is None:
            return [(im.shape[1], im.shape[0]) for im in images]
        return [(int(w), int(h)) for w, h in sizes]
