"""Classification: ImageNet-1k top-k labels with softmax scores."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import torch

from models.base import ModelWrapper

LABEL_TYPE = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))


class Classifier(ModelWrapper):
    """Top-k labels per photo; scores are softmax probabilities, so they add up across labels."""

    task = "classify"
    column = "labels"
    arrow_type = LABEL_TYPE

    @staticmethod
    def labels_of(record: list[dict]) -> Iterable[tuple[str, float]]:
        return ((item["label"], item["score"]) for item in record)

    @torch.inference_mode()
    def predict(self, images: list[np.ndarray],
                sizes: Sequence[tuple[int, int]] | None = None) -> list[list[dict[str, float | str]]]:
        self.load()
        batch = torch.stack([self.preprocess(self.to_tensor(im)) for im in images]).to(self.device)
        probs = torch.softmax(self.model(batch).float(), dim=1)
        scores, indices = probs.topk(min(self.options.top_k, probs.shape[1]), dim=1)
        categories = self.spec.categories
        return [
            [{"label": categories[i], "score": float(s)} for s, i in zip(row_s.tolist(), row_i.tolist())]
            for row_s, row_i in zip(scores.cpu(), indices.cpu())
        ]
