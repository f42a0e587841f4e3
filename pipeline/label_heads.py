"""The head of a custom label: logistic regression on frozen features, fitted and scored.

Two ways to fit it (``pipeline/custom_labels.py`` picks): :func:`fit_unlabelled` when the
other photos are an unlabelled sample of the library (the default), :func:`fit_folds`
(Platt scaling) when the user named negatives. A head is plain numbers, one dict per fold:
coef, intercept, sigmoid a and b, divisor c (only when fitted on unlabelled photos), the
features it was fitted on (``"embedding"`` for heads trained before class groups), and,
fitted on unlabelled photos with the class basis, the label's class weights (``classes``,
``pipeline/class_sets.py``) and the regression's veto threshold (``veto``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.class_features import FEATURES, ClassBasis
from pipeline.class_sets import ClassSets
from pipeline.errors import PhotosError

ENSEMBLE = False
"""False: one regression fitted on every example, its sigmoid fitted on cross-validated
decision values, so photos rank as the regression ranks them (an average of one regression
per fold sees fewer of the few examples in each)."""
C = 1.0
"""Inverse regularisation of the regression without --negatives: 0.3-3 ranked alike on the
eval concepts; 3 and above trade recall for precision at 0.5 (README)."""

VETO = 0.4
"""A photo the class set covers still needs the regression's score to reach this share of
its median over the photos the set covers. The class groups are the classifier's idea of
alike and can hold classes the examples are not: the insect group holds "apiary",
"honeycomb" and "daisy" next to "bee". Measured (``benchmarks/embedding_eval.py``, 9
concepts that chose it, then 10 more): insect precision 0.84 -> 0.93 at recall 0.95 ->
0.94; 0.5 cost bird recall, 0.3 kept the apiary."""

SECOND_OPINION = 0.25
"""A photo the regression puts at >= 0.5 is listed where the class set gives it at least
this (a junco the classifier calls 0.44 bird): two doubtful opinions that agree. Measured
(``benchmarks/embedding_eval.py --check``): mean recall 0.854 -> 0.881 and 0.791 -> 0.813
on the 9 and 10 concepts, precision 0.687 -> 0.671 and 0.596 -> 0.566; bird recall 0.89
-> 0.90, dog 0.97 -> 0.98. 0.35 added less recall."""
MAX_SET_SHARE = 0.5
"""A class set that covers more than this share of the unlabelled photos tells them apart
from nothing (10 random photos as examples: their smallest common group is every class),
and the veto, relative to its photos, would pass half of the library: the regression is
then the score alone."""

_TIE = 1e-6


class CustomLabelError(PhotosError):
    """A custom label that cannot be trained or found as asked."""


@dataclass(frozen=True)
class Head:
    """A trained custom label: calibrated logistic regression folds over one model's embeddings
    (with its class basis when the folds were fitted on :data:`FEATURES`)."""

    name: str
    model: str
    folds: list[dict[str, Any]]
    basis: ClassBasis | None = None

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, the mean over folds (scikit-learn's ``ensemble=True``)."""
        x = np.asarray(vectors, dtype=np.float32)
        prob = None
        if self.folds and self.folds[0].get("features", "embedding") == FEATURES:
            if self.basis is None:
                raise CustomLabelError(f"custom label {self.name!r} needs the class basis of {self.model}, "
                                       "which this index lacks: train it again")
            prob = self.basis.probabilities(x)
            x = self.basis.features(x, mass=self.basis.group_mass(prob))
        total = np.zeros(len(x))
        for fold in self.folds:
            f = x @ np.asarray(fold["coef"], dtype=np.float64) + fold["intercept"]
            p = 1.0 / (1.0 + np.exp(fold["a"] * f + fold["b"]))
            if "c" in fold:  # fitted on unlabelled photos: g / c, capped at 1 but kept in order
                # above it (min(1, g / c) would tie every likely photo at 1.0 for search's ranking)
                r = p / fold["c"]
                p = np.where(r < 1, r * (1 - _TIE), 1 - _TIE / np.maximum(r, 1))
            if "classes" in fold and prob is not None:
                p = _combined(prob @ np.asarray(fold["classes"]), p, fold["veto"])
            total += p
        return total / len(self.folds)


def _combined(class_set: np.ndarray, head: np.ndarray, veto: float) -> np.ndarray:
    """The class-set score vetoed by the regression ``head``, or the regression's own score
    where the class set seconds it (:data:`SECOND_OPINION`), whichever is higher.

    The veto caps the class-set score at 0.5 times the regression's share of ``veto``:
    under 0.5 (search does not list the photo) where the regression is under ``veto``, and
    lowered in proportion up to twice ``veto``, so the regression's doubt also ranks.
    Measured against capping only under ``veto``: the same precision and recall at 0.5,
    and R-precision 0.05-0.17 higher on 5 of 19 eval concepts (reptile 0.76 vs 0.64), within
    0.01 on the rest."""
    vetoed = np.minimum(class_set, np.minimum(1.0, 0.5 * head / max(veto, 1e-9)))
    seconded = np.minimum(head, 0.5 * class_set / SECOND_OPINION)
    return np.maximum(vetoed, seconded)


def _veto(class_set: np.ndarray, head: np.ndarray) -> float:
    """:data:`VETO` times the regression's median over the photos the class set covers."""
    covered = head[class_set >= 0.5]
    return VETO * float(np.median(covered)) if len(covered) else VETO


def fit_unlabelled(x: np.ndarray, y: np.ndarray, seed: int = 0,
                   classes: ClassSets | None = None) -> tuple[dict[str, Any], float, float]:
    """Examples (y = 1) against unlabelled photos (y = 0, some of them the concept): the head
    as one fold dict, and its cross-validated (precision, recall) at 0.5.

    The regression's score is min(1, g(x) / c): g an unweighted logistic regression, c the
    mean g of the examples each held out of its fit (stratified k-fold, k <= 5). With the
    rows' ``classes``, the score is the class-set score (``pipeline/class_sets.py``) and
    that regression's together (:func:`_combined`). Recall is the share of held-out
    examples at >= 0.5; precision cannot be counted, since nobody said which unlabelled
    photos are the concept, so it is the one the scores imply: the mean score of the
    held-out unlabelled photos at >= 0.5 (0 when none are). ``benchmarks/embedding_eval.py``
    compares both with the truth.
    """
    from sklearn.model_selection import StratifiedKFold

    positives = int(y.sum())
    weights = None
    if classes is not None:
        weights = classes.weights(np.flatnonzero(y == 1))
        if np.mean((classes.prob @ weights)[y == 0] >= 0.5) > MAX_SET_SHARE:
            classes = weights = None  # the examples share nothing narrower than "a photo"
    held = np.zeros(len(y))  # each row's g, from the fold that held it out
    folds = []  # (held-out rows, that fold's g of every row, its class-set score of every row)
    for train, held_out in StratifiedKFold(max(2, min(5, positives)), shuffle=True,
                                           random_state=seed).split(x, y):
        g = _logistic(x[train], y[train], seed).predict_proba(x)[:, 1]
        held[held_out] = g[held_out]
        covered = classes.scores(train[y[train] == 1]) if classes is not None else None
        folds.append((held_out, g, covered, int(y[train].sum())))
    # c = P(example | concept) grows with the number of examples: a fold fitted on 8 of 10
    # sees 4/5 of them, so the held-out mean is scaled up by 10/8 for the head fitted on all
    # (measured: without it, precision at 0.5 was 0.83 for 'dog' and 0.53 for 'animal', at
    # recall 0.99-1.00; with it 0.97 and 0.80 at recall 0.96 and 0.95). c is at least the
    # examples' share of the training photos: all the concept there is.
    seen = float(np.mean([fold[3] for fold in folds]))
    c = max(float(held[y == 1].mean()) * positives / seen, positives / len(y))
    score = np.zeros(len(y))
    for held_out, g, covered, _ in folds:
        head = np.minimum(1.0, g / c)
        if covered is not None:
            head = _combined(covered, head, _veto(covered, head))
        score[held_out] = head[held_out]
    matched = score[(y == 0) & (score >= 0.5)]
    recall = float(np.mean(score[y == 1] >= 0.5))
    precision = float(matched.mean()) if len(matched) else 0.0
    model = _logistic(x, y, seed)
    fold: dict[str, Any] = {"coef": model.coef_[0].astype(float).tolist(), "intercept": float(model.intercept_[0]),
                            "a": -1.0, "b": 0.0, "c": c}
    if classes is not None and weights is not None:
        fold["classes"] = weights.tolist()
        fold["veto"] = _veto(classes.prob @ weights, np.minimum(1.0, model.predict_proba(x)[:, 1] / c))
    return fold, precision, recall


def _logistic(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x, y)


def fit_folds(x: np.ndarray, y: np.ndarray, seed: int = 0) -> list[dict[str, Any]]:
    """Calibrated logistic regression as plain numbers, one dict per calibration fold."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    # Balanced weights in the fit and the calibration: a score is the probability under
    # equal priors ("looks like the examples"), not shrunk by how few examples there are.
    weights = np.where(y == 1, 0.5 / max(1, int(y.sum())), 0.5 / max(1, int((1 - y).sum()))) * len(y)
    model = CalibratedClassifierCV(
        LogisticRegression(C=1.0, max_iter=1000, random_state=seed),
        method="sigmoid", cv=min(3, int(y.sum()), int((1 - y).sum())), ensemble=ENSEMBLE,
    ).fit(x, y, sample_weight=weights)
    folds = []
    for fitted in model.calibrated_classifiers_:
        calibrator = fitted.calibrators[0]
        a, b = float(calibrator.a_), float(calibrator.b_)
        if a >= 0:
            # With a handful of examples the held-out decision values can be so poor that
            # Platt's fit turns the scale round (measured: 'dog', 10 examples, a = +0.25),
            # which would rank the likeliest photos last; keep the regression's own probability.
            a, b = -1.0, 0.0
        folds.append({"coef": fitted.estimator.coef_[0].astype(float).tolist(),
                      "intercept": float(fitted.estimator.intercept_[0]), "a": a, "b": b})
    return folds


def cross_validate(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Precision and recall at score 0.5 of held-out predictions (stratified k-fold, k <= 5)."""
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(5, int(y.sum()), int((1 - y).sum())))
    predicted = np.zeros(len(y), dtype=bool)
    for train, held_out in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        if y[train].sum() < 2:  # calibration needs two positives to split
            continue
        head = Head("", "", fit_folds(x[train], y[train], seed))
        predicted[held_out] = head.scores(x[held_out]) >= 0.5
    tp = int(np.sum(predicted & (y == 1)))
    return tp / max(1, int(predicted.sum())), tp / max(1, int(y.sum()))
