"""Classification: ImageNet-1k top-k labels with softmax scores, and the photo's embedding.

The embedding is the classifier's pooled feature vector (the input of its last linear
layer's head: timm's ``global_pool``, torchvision's ``avgpool``), taken from the same
forward pass as the labels by a forward hook, so it costs no second CNN run. It is
L2-normalised and kept as float16 (see ``pipeline/embeddings.py`` for why that precision).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from models.base import ModelWrapper

LABEL_TYPE = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))
EMBEDDING_COLUMN = "embedding"
EMBEDDING_TYPE = pa.list_(pa.float16())
_POOL_MODULES = ("global_pool", "avgpool")
"""Where the pooled features are: timm's name first, then torchvision's."""


class Classifier(ModelWrapper):
    """Top-k labels per photo (softmax probabilities, so they add up across labels), plus the
    photo's L2-normalised pooled features in :data:`EMBEDDING_COLUMN`."""

    task = "classify"
    column = "labels"
    arrow_type = LABEL_TYPE
    extra_columns: ClassVar[dict[str, pa.DataType]] = {EMBEDDING_COLUMN: EMBEDDING_TYPE}
    output_version = 2  # 2: the embedding joined the labels
    """Columns this task fills besides ``column``, from the same forward pass."""

    @staticmethod
    def labels_of(record: list[dict]) -> Iterable[tuple[str, float]]:
        return ((item["label"], item["score"]) for item in record)

    def infer(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[list[dict[str, Any]]]:
        return [row[self.column] for row in self.infer_columns(images, originals)]

    def infer_columns(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """Per image, {"labels": top-k records, "embedding": float16 unit vector} from one pass."""
        assert self.model is not None and self.preprocess is not None  # load() set them
        pooled: list[torch.Tensor] = []
        hook = _pool_module(self.model).register_forward_hook(lambda _m, _i, out: pooled.append(out))
        try:
            batch = torch.stack([self.preprocess(self.to_tensor(im)) for im in images]).to(self.device)
            logits = self.model(batch)
        finally:
            hook.remove()
        probs = torch.softmax(logits.float(), dim=1)
        scores, indices = probs.topk(min(self.options.top_k, probs.shape[1]), dim=1)
        features = torch.nn.functional.normalize(pooled[-1].float().flatten(1), dim=1)
        embeddings = features.cpu().numpy().astype(np.float16)
        categories = self.spec.categories
        return [
            {self.column: [{"label": categories[i], "score": float(s)} for s, i in zip(row_s.tolist(), row_i.tolist())],
             EMBEDDING_COLUMN: embedding}
            for row_s, row_i, embedding in zip(scores.cpu(), indices.cpu(), embeddings)
        ]


def _pool_module(model: nn.Module) -> nn.Module:
    children = dict(model.named_children())
    for name in _POOL_MODULES:
        if name in children:
            return children[name]
    raise ValueError(f"{type(model).__name__} has no pooling layer named {' or '.join(_POOL_MODULES)}")
