"""Custom labels: a small head trained on the frozen embeddings of a few example photos.

`photos train NAME --examples ...` fits a scikit-learn LogisticRegression on features of
the stored embeddings (``pipeline/class_features.py``: the embedding plus the classifier's
own class probabilities summed over groups of alike classes). No CNN runs: every score
comes from the Parquet ``embedding`` column (through ``pipeline/vectors.py``).

Without ``--negatives`` (the usual case) the head learns the examples against a random
sample of the rest of the index, which holds more photos of the concept, unlabelled:
positive-unlabelled learning. The regression then estimates g(x) = P(example | x); with
c = P(example | concept), the mean g of examples held out in cross-validation, a photo's
score is g(x) / c, the probability that it shows the concept (Elkan & Noto, 2008), so 0.5
means "more likely than not" in this library. Where the class basis is there, the score
is the examples' class set instead (``pipeline/class_sets.py``: the group of alike
classes they were most likely drawn from), vetoed where that regression scores low
(``label_heads.VETO``). The earlier way (negatives kept away from the examples,
class-balanced weights, Platt scaling) scored the probability under equal priors: with
118 dogs among 1,000 photos, 67% of the photos it put at >= 0.5 were not dogs.
With ``--negatives`` the photos are labelled both ways, and the head is Platt-calibrated
(``CalibratedClassifierCV``, sigmoid, balanced) as before.

Scores of at least :data:`STORED_MIN_SCORE` go into the ``labels`` table with source
``custom``, and NAME into the full-text table, so `photos search NAME` finds them ranked
by score, and combines with every other term. Heads are stored as plain numbers (JSON in
the ``custom_heads`` table), never pickled: (coefficients, intercept, sigmoid a, b, divisor
c, features, class weights, veto), one set per calibration fold if ``label_heads.ENSEMBLE``,
averaged as scikit-learn does; the class basis they need is kept per model in
``custom_bases`` (numpy ``.npz`` bytes, read without pickle). After each nightly run
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
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    insert,
    select,
    text,
)

from pipeline import vocabulary
from pipeline.class_features import FEATURES, ClassBasis, build_basis, classifier_layer
from pipeline.errors import PhotosError
from pipeline.label_heads import CustomLabelError, Head, cross_validate, fit_folds, fit_unlabelled
from pipeline.pathnames import path_text
from pipeline.store import IndexStore, label_names, labels, photos, table_exists

if TYPE_CHECKING:
    from pipeline.vectors import VectorSet

SOURCE = "custom"
MIN_EXAMPLES = 3
STORED_MIN_SCORE = 0.5
"""Scores below this are not stored, so search neither lists a photo under the label nor lets
it satisfy the label in an AND. 0.5 is the score's own "more likely than not", and below it
a head fitted on a few examples is noise: a label trained on 7 beetles scored every one of
217 photos of a mixed library (ImageNet and COCO photos) at >= 0.07, a hippopotamus 0.17,
so with the search default of 0.05 `photos search "my beetles" person` listed hippos. It
also bounds what a label costs at 10^6 photos: rows for the photos that match, not one per
photo (``benchmarks/train_scale.py``)."""
SAMPLED_NEGATIVES = 2000
"""Unlabelled photos drawn from the rest of the index when no negatives are given (at most)."""
SCALE_PHOTOS = 2000
"""Photos whose stored top-1 score fits the class basis's probability scale (at most)."""
CHUNK = 10_000
"""Photos scored at a time (their features take 17 KB each)."""
PARAMETERS = 10_000
"""Photo ids bound in one ``IN (...)``: SQLite's default limit is 32,766 parameters a statement
(this machine's build allows more, others may not)."""
_NAME = re.compile(r"^[a-z0-9]+(?:[ _-][a-z0-9]+)*$")

_metadata = MetaData()
custom_heads = Table(
    "custom_heads", _metadata,
    Column("name", Text, primary_key=True),
    Column("model", Text, nullable=False),  # the classifier whose embeddings it was trained on
    Column("dim", Integer, nullable=False),
    Column("folds", Text, nullable=False),  # JSON [{coef, intercept, a, b[, c, classes, veto], features}]
    Column("examples", Text, nullable=False),  # JSON list of paths
    Column("negatives", Integer, nullable=False),
    Column("precision", Float, nullable=False),  # cross-validated, at score 0.5
    Column("recall", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)
custom_bases = Table(
    "custom_bases", _metadata,
    Column("model", Text, primary_key=True),
    Column("basis", LargeBinary, nullable=False),  # ClassBasis.to_bytes()
    Column("created_at", Float, nullable=False),
)


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
    features: str = FEATURES  # "embedding" when the classifier's last layer was not available
    unlabelled: bool = True  # negatives sampled from the index: precision is estimated, not counted


def train_label(index_dir: Path, store: IndexStore, name: str, examples: Sequence[str],
                negatives: Sequence[str] = (), seed: int = 0) -> TrainReport:
    """Fit, cross-validate, store and apply the custom label ``name`` (replacing one of that name)."""
    started = time.perf_counter()
    from pipeline.vectors import open_vectors  # faiss loads only where labels are trained or applied

    name = check_name(store, name)
    vectors = open_vectors(index_dir, store)
    positive_rows = _rows(vectors, _expand(examples), "example")
    if len(positive_rows) < MIN_EXAMPLES:
        raise CustomLabelError(f"{name!r} needs at least {MIN_EXAMPLES} example photos; got {len(positive_rows)}")
    if negatives:
        negative_rows = sorted(set(_rows(vectors, _expand(negatives), "negative")) - set(positive_rows))
    else:
        others = np.setdiff1d(np.arange(len(vectors.paths)), positive_rows)
        rng = np.random.default_rng(seed)
        negative_rows = sorted(rng.choice(others, min(len(others), SAMPLED_NEGATIVES), replace=False).tolist())
    if len(negative_rows) < MIN_EXAMPLES:
        raise CustomLabelError(f"{name!r} needs at least {MIN_EXAMPLES} negative photos; the index has "
                               f"{len(negative_rows)} besides the examples (give --negatives, or index more photos)")
    basis = class_basis(store, vectors)
    if basis is None and not negatives:
        # Measured: on the embedding alone the scores of unlabelled photos are useless
        # (precision at 0.5 0.01-0.39 on the eval concepts; benchmarks/embedding_eval.py --embedding-only).
        raise CustomLabelError(f"training {name!r} needs the last layer of the classifier {vectors.model or '?'} "
                               "once (its weights are not on this machine; see `photos models list`), "
                               "or photos that are not this label: give --negatives")
    x = np.asarray(vectors.vectors[positive_rows + negative_rows], dtype=np.float32)
    classes = None
    if basis is not None:
        x, classes = basis.training_features(x, class_sets=not negatives)
    y = np.array([1] * len(positive_rows) + [0] * len(negative_rows))
    if negatives:
        precision, recall = cross_validate(x, y, seed)
        folds = fit_folds(x, y, seed)
    else:
        fold, precision, recall = fit_unlabelled(x, y, seed, classes)
        folds = [fold]
    features = basis.features_name if basis is not None else "embedding"
    for fold in folds:
        fold["features"] = features
    head = Head(name, vectors.model or "", folds, basis)
    with store.engine.begin() as conn:
        _metadata.create_all(conn)
        conn.execute(delete(custom_heads).where(custom_heads.c.name == name))
        conn.execute(insert(custom_heads).values(
            name=name, model=head.model, dim=x.shape[1], folds=json.dumps(head.folds),
            examples=json.dumps([vectors.paths[i] for i in positive_rows]), negatives=len(negative_rows),
            precision=precision, recall=recall, created_at=time.time()))
    scored, matches = _apply(store, head, vectors, None)
    return TrainReport(name, len(positive_rows), len(negative_rows), precision, recall, scored, matches,
                       time.perf_counter() - started, features, not negatives)


def class_basis(store: IndexStore, vectors: VectorSet) -> ClassBasis | None:
    """The class basis of the index's classifier: saved with the custom labels, else built
    from its local weights and the index's stored top-1 scores, and saved. None when the
    weights or the scores are not there (only a head with --negatives can then be trained,
    on the embedding alone)."""
    from models.registry import get_spec

    model = vectors.model
    if not model:
        return None
    saved = saved_basis(store, model)
    if saved is not None:
        return saved
    try:
        weight, bias = classifier_layer(model)
    except (PhotosError, ValueError):
        return None
    names = get_spec(model).categories
    index = {n: i for i, n in enumerate(names) if names.count(n) == 1}  # ImageNet has two "crane"s
    with store.engine.connect() as conn:
        top = conn.execute(text(
            "SELECT p.path, l.label, MAX(l.score) FROM labels l JOIN photos p ON p.id = l.photo_id "
            "WHERE l.source = 'classify' AND l.model = :m GROUP BY l.photo_id LIMIT :n"),
            {"m": model, "n": SCALE_PHOTOS}).all()
    found = [(row, index[label], score) for path, label, score in top
             if label in index and (row := vectors.row_of(path)) is not None]
    if not found:
        return None
    rows, classes, scores = zip(*found)
    basis = build_basis(model, weight, bias, np.asarray(vectors.vectors[list(rows)]), classes, scores)
    with store.engine.begin() as conn:
        conn.execute(delete(custom_bases).where(custom_bases.c.model == model))
        conn.execute(insert(custom_bases).values(model=model, basis=basis.to_bytes(), created_at=time.time()))
    return basis


def saved_basis(store: IndexStore, model: str) -> ClassBasis | None:
    with store.engine.begin() as conn:
        _metadata.create_all(conn)
        data = conn.execute(select(custom_bases.c.basis).where(custom_bases.c.model == model)).scalar()
    return None if data is None else ClassBasis.from_bytes(model, data)


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
        if table_exists(conn, "people") and conn.execute(
                text("SELECT 1 FROM people WHERE lower(name) = :n"), {"n": name}).first():
            raise CustomLabelError(f"{name!r} is the name of a person (`photos people`); choose another name")
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
                        "negatives": r["negatives"], "unlabelled": "c" in json.loads(r["folds"])[0],
                        "precision": round(r["precision"], 3),
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
        # Labels trained when scores from 0.05 were stored lose those rows here, once
        # (cheap by the (label, score) index; a no-op afterwards).
        for r in rows:
            conn.execute(delete(labels).where(labels.c.label == r["name"], labels.c.source == SOURCE,
                                              labels.c.score < STORED_MIN_SCORE))
        fresh = dict(conn.execute(select(photos.c.path, photos.c.id).where(photos.c.run_id == run_id)).all())
    if not fresh:
        return 0
    from pipeline.vectors import open_vectors  # here, not at import: a nightly run without labels needs no faiss

    vectors = open_vectors(index_dir, store)
    basis = saved_basis(store, vectors.model) if vectors.model else None
    scored = 0
    for r in rows:
        head = Head(r["name"], r["model"], json.loads(r["folds"]), basis if basis and basis.model == r["model"] else None)
        scored = max(scored, _apply(store, head, vectors, fresh)[0])
    return scored


def _apply(store: IndexStore, head: Head, vectors: VectorSet, only: dict[str, int] | None) -> tuple[int, int]:
    """Store ``head``'s scores for every photo (or those in ``only``: path -> photo id);
    (scored, scoring >= 0.5)."""
    if head.model and vectors.model and head.model != vectors.model:
        raise CustomLabelError(f"custom label {head.name!r} was trained on {head.model} embeddings but the index "
                               f"now holds {vectors.model}'s: train it again")
    rows = np.arange(len(vectors.paths)) if only is None else np.array(
        sorted(i for i, p in enumerate(vectors.paths) if p in only), dtype=np.int64)
    scores = np.concatenate([head.scores(vectors.vectors[rows[i:i + CHUNK]])
                             for i in range(0, len(rows), CHUNK)]) if len(rows) else np.zeros(0)
    keep = scores >= STORED_MIN_SCORE
    wanted = {vectors.paths[i]: float(s) for i, s in zip(rows[keep], scores[keep])}
    with store.engine.begin() as conn:
        if only is None:
            _forget_scores(conn, head.name)
        # The nightly hook knows its photos' ids; only a train, scoring every photo, reads them all.
        ids = only if only is not None else dict(conn.execute(select(photos.c.path, photos.c.id)).all()) if wanted else {}
        values = [{"photo_id": ids[p], "label": head.name, "score": s, "source": SOURCE, "model": f"custom:{head.model}"}
                  for p, s in wanted.items() if p in ids]
        if only is not None:  # photos scored again (e.g. by a train while a run applied it) keep one row
            again = sorted(only.values())
            for i in range(0, len(again), PARAMETERS):
                conn.execute(delete(labels).where(labels.c.label == head.name, labels.c.source == SOURCE,
                                                  labels.c.photo_id.in_(again[i:i + PARAMETERS])))
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
