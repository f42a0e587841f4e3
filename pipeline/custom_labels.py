"""Custom labels: a small head trained on the frozen embeddings of a few example photos.

`photos train NAME --examples ...` fits a scikit-learn LogisticRegression on the stored
embeddings of the examples (positives) against negatives (given, or sampled from the rest
of the index), calibrated with Platt scaling (``CalibratedClassifierCV``, sigmoid), so a
score is a probability that search can rank and threshold like the classifier's. No CNN
runs: every score comes from the Parquet ``embedding`` column (through ``pipeline/vectors.py``).

Scores of at least :data:`STORED_MIN_SCORE` go into the ``labels`` table with source
``custom``, and NAME into the full-text table, so `photos search NAME` finds them ranked
by score, and combines with every other term. Heads are stored as plain numbers (JSON in
the ``custom_heads`` table), never pickled: (coefficients, intercept, sigmoid a, b), one
set per calibration fold if :data:`ENSEMBLE`, averaged as scikit-learn does. After each nightly run
:func:`apply_custom_labels` scores the photos that run committed (new, changed, moved).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    Table,
    Text,
    delete,
    insert,
    select,
    text,
)

from pipeline import vocabulary
from pipeline.errors import PhotosError
from pipeline.pathnames import path_text
from pipeline.store import IndexStore, label_names, labels, photos
from pipeline.vectors import VectorSet, open_vectors

SOURCE = "custom"
MIN_EXAMPLES = 3
STORED_MIN_SCORE = 0.05
"""Scores below this are not stored: search ignores them by default (``DEFAULT_MIN_SCORE``)."""
ENSEMBLE = False
"""False: one regression fitted on every example, its sigmoid fitted on cross-validated
decision values, so photos rank as the regression ranks them (an average of one regression
per fold sees fewer of the few examples in each)."""
SAMPLED_NEGATIVES = 300
"""Negatives drawn from the rest of the index when none are given (at most)."""
_NAME = re.compile(r"^[a-z0-9]+(?:[ _-][a-z0-9]+)*$")

_metadata = MetaData()
custom_heads = Table(
    "custom_heads", _metadata,
    Column("name", Text, primary_key=True),
    Column("model", Text, nullable=False),  # the classifier whose embeddings it was trained on
    Column("dim", Integer, nullable=False),
    Column("folds", Text, nullable=False),  # JSON [{coef, intercept, a, b}]
    Column("examples", Text, nullable=False),  # JSON list of paths
    Column("negatives", Integer, nullable=False),
    Column("precision", Float, nullable=False),  # cross-validated, at score 0.5
    Column("recall", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)


class CustomLabelError(PhotosError):
    """A custom label that cannot be trained or found as asked."""


@dataclass(frozen=True)
class Head:
    """A trained custom label: calibrated logistic regression folds over one model's embeddings."""

    name: str
    model: str
    folds: list[dict[str, Any]]

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, the mean over folds (scikit-learn's ``ensemble=True``)."""
        x = np.asarray(vectors, dtype=np.float32)
        total = np.zeros(len(x))
        for fold in self.folds:
            f = x @ np.asarray(fold["coef"], dtype=np.float32) + fold["intercept"]
            total += 1.0 / (1.0 + np.exp(fold["a"] * f + fold["b"]))
        return total / len(self.folds)


@dataclass(frozen=True)
class TrainReport:
    name: str
    positives: int
    negatives: int
    precision: float
    recall: float
    scored: int  # photos given a score
    matches: int  # photos scoring >= 0.5
    seconds: float


def train_label(index_dir: Path, store: IndexStore, name: str, examples: Sequence[str],
                negatives: Sequence[str] = (), seed: int = 0) -> TrainReport:
    """Fit, cross-validate, store and apply the custom label ``name`` (replacing one of that name)."""
    started = time.perf_counter()
    name = check_name(store, name)
    vectors = open_vectors(index_dir, store)
    positive_rows = _rows(vectors, _expand(examples), "example")
    if len(positive_rows) < MIN_EXAMPLES:
        raise CustomLabelError(f"{name!r} needs at least {MIN_EXAMPLES} example photos; got {len(positive_rows)}")
    if negatives:
        negative_rows = sorted(set(_rows(vectors, _expand(negatives), "negative")) - set(positive_rows))
    else:
        others = unlike_examples(np.asarray(vectors.vectors, dtype=np.float16), positive_rows)
        rng = np.random.default_rng(seed)
        negative_rows = sorted(rng.choice(others, min(len(others), SAMPLED_NEGATIVES), replace=False).tolist())
    if len(negative_rows) < MIN_EXAMPLES:
        raise CustomLabelError(f"{name!r} needs at least {MIN_EXAMPLES} negative photos; the index has "
                               f"{len(negative_rows)} besides the examples (give --negatives, or index more photos)")
    x = np.asarray(vectors.vectors[positive_rows + negative_rows], dtype=np.float32)
    y = np.array([1] * len(positive_rows) + [0] * len(negative_rows))
    precision, recall = cross_validate(x, y, seed)
    head = Head(name, vectors.model or "", fit_folds(x, y, seed))
    with store.engine.begin() as conn:
        _metadata.create_all(conn)
        conn.execute(delete(custom_heads).where(custom_heads.c.name == name))
        conn.execute(insert(custom_heads).values(
            name=name, model=head.model, dim=x.shape[1], folds=json.dumps(head.folds),
            examples=json.dumps([vectors.paths[i] for i in positive_rows]), negatives=len(negative_rows),
            precision=precision, recall=recall, created_at=time.time()))
    scored, matches = _apply(store, head, vectors, None)
    return TrainReport(name, len(positive_rows), len(negative_rows), precision, recall, scored, matches,
                       time.perf_counter() - started)


def unlike_examples(vectors: np.ndarray, positive_rows: list[int]) -> np.ndarray:
    """Rows to sample negatives from: not an example, and less like the examples' centre than
    the least typical example is like the centre of the others. The rest of a library holds
    more photos of the concept (other dogs, when the examples are dogs); calling them
    negatives would teach the head that dogs are not dogs. (Leave-one-out, since each
    example pulls the full centre towards itself.)"""
    examples = np.asarray(vectors[positive_rows], dtype=np.float32)
    others = examples.sum(axis=0) - examples
    others /= np.linalg.norm(others, axis=1, keepdims=True)
    floor = float(np.min(np.sum(examples * others, axis=1)))
    centre = examples.mean(axis=0)
    centre /= np.linalg.norm(centre)
    similarity = np.concatenate([np.asarray(vectors[i:i + 100_000], dtype=np.float32) @ centre
                                 for i in range(0, len(vectors), 100_000)])
    candidates = np.flatnonzero(similarity < floor)
    return np.setdiff1d(candidates, positive_rows)


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


def check_name(store: IndexStore, raw: str) -> str:
    """The label's name, lower case; refused if search could not find exactly it."""
    from models.registry import all_specs

    name = " ".join(raw.lower().split())
    if not _NAME.match(name):
        raise CustomLabelError(f"label name {raw!r}: use letters, digits, and single spaces, '-' or '_' "
                               "between words, e.g. 'our garden'")
    if vocabulary.expand(name):
        raise CustomLabelError(f"{name!r} is a built-in search word (pipeline/vocabulary.json); "
                               "choose another name, e.g. 'my " + name + "'")
    builtin = {c.lower() for spec in all_specs() for c in spec.categories}
    if name in builtin:
        raise CustomLabelError(f"{name!r} is a model label already; choose another name")
    fts = " ".join('"' + w + '"' for w in re.findall(r"\w+", name))
    with store.engine.connect() as conn:
        others = set(conn.execute(text("SELECT label FROM label_fts WHERE label_fts MATCH :q"), {"q": fts}).scalars())
    others.discard(name)
    if others:
        raise CustomLabelError(f"searching {name!r} would also find the labels {', '.join(sorted(others)[:5])}; "
                               "choose a more specific name")
    return name


def list_heads(store: IndexStore) -> list[dict[str, Any]]:
    """Every custom label with its training figures and how many photos score >= 0.5."""
    with store.engine.begin() as conn:
        _metadata.create_all(conn)
        rows = conn.execute(select(custom_heads).order_by(custom_heads.c.name)).mappings().all()
        out = []
        for r in rows:
            matches = conn.execute(text("SELECT count(*) FROM labels WHERE source = :s AND label = :l "
                                        "AND score >= 0.5"), {"s": SOURCE, "l": r["name"]}).scalar_one()
            out.append({"name": r["name"], "model": r["model"], "examples": len(json.loads(r["examples"])),
                        "negatives": r["negatives"], "precision": round(r["precision"], 3),
                        "recall": round(r["recall"], 3), "photos": matches, "created_at": r["created_at"]})
    return out


def remove_label(store: IndexStore, name: str) -> None:
    name = " ".join(name.lower().split())
    with store.engine.begin() as conn:
        _metadata.create_all(conn)
        if conn.execute(delete(custom_heads).where(custom_heads.c.name == name)).rowcount == 0:
            raise CustomLabelError(f"no custom label {name!r} (see `photos labels`)")
        _forget_scores(conn, name)


def apply_custom_labels(index_dir: Path, store: IndexStore, run_id: int) -> int:
    """Score the photos run ``run_id`` committed with every custom label (the nightly hook);
    return how many photos were scored. A no-op on an index without custom labels."""
    with store.engine.begin() as conn:
        _metadata.create_all(conn)
        rows = conn.execute(select(custom_heads)).mappings().all()
        if not rows:
            return 0
        fresh = set(conn.execute(select(photos.c.path).where(photos.c.run_id == run_id)).scalars())
    if not fresh:
        return 0
    vectors = open_vectors(index_dir, store)
    scored = 0
    for r in rows:
        head = Head(r["name"], r["model"], json.loads(r["folds"]))
        scored = max(scored, _apply(store, head, vectors, fresh)[0])
    return scored


def _apply(store: IndexStore, head: Head, vectors: VectorSet, only: set[str] | None) -> tuple[int, int]:
    """Store ``head``'s scores for every photo (or those in ``only``); (scored, scoring >= 0.5)."""
    if head.model and vectors.model and head.model != vectors.model:
        raise CustomLabelError(f"custom label {head.name!r} was trained on {head.model} embeddings but the index "
                               f"now holds {vectors.model}'s: train it again")
    rows = np.arange(len(vectors.paths)) if only is None else np.array(
        sorted(i for i, p in enumerate(vectors.paths) if p in only), dtype=np.int64)
    scores = np.concatenate([head.scores(vectors.vectors[rows[i:i + 100_000]])
                             for i in range(0, len(rows), 100_000)]) if len(rows) else np.zeros(0)
    keep = scores >= STORED_MIN_SCORE
    wanted = {vectors.paths[i]: float(s) for i, s in zip(rows[keep], scores[keep])}
    with store.engine.begin() as conn:
        if only is None:
            _forget_scores(conn, head.name)
        ids = dict(conn.execute(select(photos.c.path, photos.c.id)).all()) if wanted else {}
        values = [{"photo_id": ids[p], "label": head.name, "score": s, "source": SOURCE, "model": f"custom:{head.model}"}
                  for p, s in wanted.items() if p in ids]
        for i in range(0, len(values), 50_000):
            conn.execute(insert(labels), values[i:i + 50_000])
        if values and not conn.execute(select(label_names.c.label).where(label_names.c.label == head.name)).first():
            conn.execute(insert(label_names).values(label=head.name))
            conn.execute(text("INSERT INTO label_fts(label) VALUES (:l)"), {"l": head.name})
    return len(rows), int(np.sum(scores >= 0.5))


def _forget_scores(conn: Any, name: str) -> None:
    conn.execute(delete(labels).where(labels.c.source == SOURCE, labels.c.label == name))
    conn.execute(delete(label_names).where(label_names.c.label == name))
    conn.execute(text("DELETE FROM label_fts WHERE label = :l"), {"l": name})


def _expand(items: Sequence[str]) -> list[str]:
    """Files as given, folders walked; each as the index spells it (absolute path text)."""
    out = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            out += [path_text(os.path.abspath(p)) for p in sorted(path.rglob("*")) if p.is_file()]
        elif path.exists():
            out.append(path_text(os.path.abspath(path)))
        else:
            raise CustomLabelError(f"{item}: no such file or folder")
    return out


def _rows(vectors: VectorSet, paths: list[str], what: str) -> list[int]:
    missing = [p for p in paths if vectors.row_of(p) is None]
    if missing:
        raise CustomLabelError(f"{len(missing)} {what} photo(s) are not in the index (or have no embedding), "
                               f"e.g. {missing[0]}: run `photos index` on their folder first")
    return sorted({r for p in paths if (r := vectors.row_of(p)) is not None})
