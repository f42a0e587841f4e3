"""What a custom label's head sees: the embedding, plus the classifier's own class
probabilities summed over groups of related classes.

With 10 example photos a linear head on the 1,280-d embedding alone generalises badly
from the examples to the rest of a broad concept (10 dog breeds must stand for 118):
on the 1,000 eval photos its ranking put only 66% of the held-out dogs among the first
108 results (R-precision; ``python -m benchmarks.embedding_eval``). The classifier
already knows which of its 1,000 classes are alike: their rows of its last layer point
the same way. Clustering those rows (average and complete linkage on cosine distance: two
trees of nested class groups, here 1,000 leaves + 2 x 999 groups) and summing each
photo's class probabilities over every group gives features such as "how much of this
photo is any dog breed", without any list of concepts. On them the same head ranks 97%
of the held-out dogs first; the mean over 9 concepts went from 0.54 to 0.76 (and 0.42 to
0.71 on 10 concepts not used to choose the settings; ``--embedding-only`` gives the former).
That was the regression's ranking; a label now scores by its class set where it has one
(``pipeline/class_sets.py``, built on the same groups). See the README for the table.

Only the stored embedding is needed: the probabilities are ``softmax(s * W e + b)``
with the last layer (W, b) and one scale ``s`` standing for the pooled features' norm,
which the L2-normalised embedding dropped. ``s`` is fitted so that these probabilities
reproduce the top-1 scores the classifier stored for the index's photos (for
EfficientNet-Lite0 it comes out at 13.5, the median norm, measured by running the model;
using each photo's exact probabilities ranked no better). The whole basis (W, b, s and
the two trees) is saved with the custom labels, so scoring new photos every night needs
no weights.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.class_sets import ClassSets

EMBEDDING_WEIGHT = 0.5
"""The embedding's share next to the unit-length group features (0.25-1 measured alike on
ImageNet concepts; it keeps what class probabilities cannot say, e.g. one particular dog)."""
LINKAGES = ("average", "complete")
"""Two trees: together they ranked better than either alone (+0.01 to +0.04 R-precision)."""
FEATURES = "embedding+class-groups-v1"


@dataclass
class ClassBasis:
    """A classifier's last layer, its probability scale, and its class groups."""

    model: str
    weight: np.ndarray  # classes x d, float32
    bias: np.ndarray  # classes, float32
    scale: float
    trees: tuple[np.ndarray, ...]  # scipy linkage matrices, one per entry of LINKAGES
    _groups: Any = field(default=None, repr=False)

    @property
    def groups(self) -> Any:
        """Membership of every class in every group: the leaves, then each tree's merges."""
        if self._groups is None:
            from scipy.sparse import csr_matrix

            n = len(self.weight)
            rows: list[int] = list(range(n))
            cols: list[int] = list(range(n))
            column = n
            for tree in self.trees:
                members: list[list[int]] = [[i] for i in range(n)]
                for a, b, *_ in tree:
                    merged = members[int(a)] + members[int(b)]
                    members.append(merged)
                    rows += merged
                    cols += [column] * len(merged)
                    column += 1
            self._groups = csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, column))
        return self._groups

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """The classifier's class probabilities, N x classes, from N x d unit embeddings."""
        logits = self.scale * (np.asarray(vectors, dtype=np.float32) @ self.weight.T) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        return prob

    @property
    def features_name(self) -> str:
        """What a head fitted on :meth:`features` records as its features."""
        return FEATURES

    def group_mass(self, prob: np.ndarray) -> np.ndarray:
        """Each photo's class probability summed over every group: N x groups, from N x classes."""
        return np.asarray(self.groups.T.dot(np.asarray(prob).T).T, dtype=np.float32)

    def features(self, vectors: np.ndarray, *, mass: np.ndarray | None = None) -> np.ndarray:
        """[EMBEDDING_WEIGHT * e, unit(sqrt(group probability mass))] for N x d unit vectors
        (``mass``: their :meth:`group_mass`, where the caller has it already)."""
        x = np.asarray(vectors, dtype=np.float32)
        root = np.sqrt(self.group_mass(self.probabilities(x)) if mass is None else mass)
        root /= np.linalg.norm(root, axis=1, keepdims=True)
        return np.hstack([EMBEDDING_WEIGHT * x, root])

    def training_features(self, vectors: np.ndarray, class_sets: bool) -> tuple[np.ndarray, ClassSets | None]:
        """A head's training sample: its :meth:`features` and, where ``class_sets`` (examples
        against unlabelled photos), its :class:`~pipeline.class_sets.ClassSets`."""
        prob = self.probabilities(vectors)
        mass = self.group_mass(prob)
        return self.features(vectors, mass=mass), ClassSets(self.groups, prob, mass) if class_sets else None

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {"weight": self.weight, "bias": self.bias, "scale": np.float64(self.scale)}
        arrays.update({f"tree_{i}": t for i, t in enumerate(self.trees)})
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, model: str, data: bytes) -> ClassBasis:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            trees = tuple(z[f"tree_{i}"] for i in range(len(LINKAGES)))
            return cls(model, z["weight"], z["bias"], float(z["scale"]), trees)


def build_basis(model: str, weight: np.ndarray, bias: np.ndarray, vectors: np.ndarray,
                top_classes: Sequence[int], top_scores: Sequence[float]) -> ClassBasis:
    """The basis for ``model``'s last layer, its scale fitted to photos' stored top-1 scores."""
    weight = np.asarray(weight, dtype=np.float32)
    scale = fit_scale(weight, np.asarray(bias, np.float32), vectors, top_classes, top_scores)
    return ClassBasis(model, weight, np.asarray(bias, np.float32), scale, class_trees(weight))


def class_trees(weight: np.ndarray) -> tuple[np.ndarray, ...]:
    """One scipy linkage matrix per entry of :data:`LINKAGES`, over the cosine distances of
    the classes' rows of the last layer."""
    from scipy.cluster.hierarchy import linkage

    unit = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    return tuple(np.asarray(linkage(unit.astype(np.float64), method=m, metric="cosine")) for m in LINKAGES)


def fit_scale(weight: np.ndarray, bias: np.ndarray, vectors: np.ndarray, top_classes: Sequence[int],
              top_scores: Sequence[float]) -> float:
    """The median over photos of the scale s at which softmax(s W e + b) gives the photo's
    top class the probability the classifier stored for it (a grid of s, log-probabilities)."""
    if not len(top_classes):
        raise ValueError("no stored classifier scores to fit the probability scale to")
    z = np.asarray(vectors, dtype=np.float32) @ weight.T
    grid = np.geomspace(1.0, 100.0, 181)
    rows = np.arange(len(z))
    target = np.log(np.clip(np.asarray(top_scores, dtype=np.float64), 1e-6, 1.0))
    errors = np.empty((len(grid), len(z)))
    for i, s in enumerate(grid):
        logits = s * z + bias
        top = logits.max(axis=1)
        log_norm = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        errors[i] = np.abs(logits[rows, np.asarray(top_classes)] - log_norm - target)
    return float(np.median(grid[np.argmin(errors, axis=0)]))


def classifier_layer(model: str, weights_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of ``model``'s last linear layer, from its verified local weights (offline).

    Raises :class:`~models.weights.WeightsMissingError` when they are not on this machine.
    """
    import torch

    from models.base import TaskOptions
    from models.classify import Classifier
    from models.registry import get_spec
    from models.weights import load_state_dict

    spec = get_spec(model)
    classifier = Classifier(spec, load_state_dict(spec, weights_dir, offline=True), "cpu", TaskOptions())
    classifier.load()
    assert classifier.model is not None
    last = [m for m in classifier.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    if last.out_features != len(spec.categories):
        raise ValueError(f"{model}: its last linear layer has {last.out_features} outputs, "
                         f"not its {len(spec.categories)} classes")
    bias = last.bias.detach().float().numpy() if last.bias is not None else np.zeros(last.out_features, np.float32)
    return last.weight.detach().float().numpy(), bias
