"""Photo embeddings: how they are stored, read back, and computed for a photo outside the index.

Storage: the classifier's pooled features (``models/classify.py``), L2-normalised, as a
Parquet ``list<halffloat>`` column ``embedding`` (1,280 values, 2,560 bytes a photo for
EfficientNet-Lite0). float16 was chosen by measurement on the 1,000 real eval photos
(``python -m benchmarks.embedding_storage``): recall@10 against float32 is 1.000 for
float16, 0.994 for per-vector int8, and 0.78 for PCA to 256 dimensions (+ int8: the same),
while int8 would only halve 2.5 KB a photo. float16 needs no fitted basis, so a row never
depends on the rest of the library.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import DecodeError, PhotosError

DEFAULT_MAX_PIXELS = 200_000_000


def recall_at_k(reference: np.ndarray, stored: np.ndarray, k: int = 10) -> float:
    """Share of each vector's exact top-k neighbours (by ``reference``) that ``stored`` also
    ranks in its top-k; the vector itself excluded."""
    def top(x: np.ndarray) -> np.ndarray:
        scores = x.astype(np.float32) @ x.astype(np.float32).T
        np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1)[:, :k]

    exact, found = top(reference), top(stored)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, found)]))


def embed_files(paths: Sequence[str], model: str = "efficientnet_lite0", weights_dir: Path | None = None,
                batch: int = 16) -> np.ndarray:
    """Decode and embed photos on the spot, exactly as `photos index` does (same decode, same
    preprocessing, same wrapper); returns N x d float16 unit vectors.

    Raises :class:`DecodeError` naming the file that cannot be read.
    """

    from models.base import TaskOptions
    from models.classify import EMBEDDING_COLUMN, Classifier
    from models.registry import get_spec
    from models.weights import load_state_dict
    from pipeline.decode import decode_photo

    spec = get_spec(model)
    if spec.task != "classify":
        raise PhotosError(f"{model} is not a classifier; embeddings come from classifiers")
    classifier = Classifier(spec, load_state_dict(spec, weights_dir, offline=True), "cpu", TaskOptions())
    out: list[np.ndarray] = []
    for start in range(0, len(paths), batch):
        images = []
        for path in paths[start:start + batch]:
            try:
                images.append(decode_photo(str(path), spec.input_size, DEFAULT_MAX_PIXELS).pixels)
            except DecodeError as exc:
                raise DecodeError(f"{path}: {exc.reason}") from exc
        out.extend(r[EMBEDDING_COLUMN] for r in classifier.predict_columns(images))
    return np.stack(out) if out else np.empty((0, 0), np.float16)
