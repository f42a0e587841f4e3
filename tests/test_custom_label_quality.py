"""A custom label learnt from 10 real dog photos finds the held-out dogs among real non-dogs.

Real ImageNet photos from ../shared/eval (59 dogs of 59 breeds, 126 other classes), the
real EfficientNet-Lite0 weights, a real `index_library` run (in-process: under 200 photos),
real Parquet and SQLite, and `photos train` through the CLI. The 10 examples are a seeded
draw; precision and recall are counted over the other 175 photos only.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.embedding_eval import head_of
from jobs.cli import cli
from pipeline import vocabulary
from pipeline.custom_labels import train_label
from pipeline.indexer import index_library
from pipeline.search import search
from pipeline.settings import IndexSettings
from pipeline.store import IndexStore
from pipeline.vectors import open_vectors
from tests.conftest import copy_photos, true_label


@pytest.fixture(scope="module")
def dog_library(tmp_path_factory, eval_photos):
    dogs = [p for p in eval_photos if true_label(p) in vocabulary.expand("dog")][::2]
    others = [p for p in eval_photos if true_label(p) not in vocabulary.expand("dog")][::7]
    root = tmp_path_factory.mktemp("dog-library")
    copied = copy_photos(dogs + others, root / "photos")
    index = root / "index"
    summary = index_library(IndexSettings(roots=(str(root / "photos"),), index_dir=index, tasks=("classify",)))
    assert summary.failed == 0 and summary.indexed == len(copied)
    return index, copied[:len(dogs)], copied[len(dogs):]


def held_out_figures(index: Path, dogs: list[Path], examples: list[str], name: str) -> tuple[float, float, float]:
    """Precision and recall at score 0.5 (what search lists) and the R-precision of the head's
    ranking of every photo, over the photos that are not examples."""
    with IndexStore.open(index, create=False) as store:
        found = {h.path for h in search(store, [name], limit=1000) if h.path not in examples}
        vectors = open_vectors(index, store)
        scores = head_of(store, name).scores(vectors.vectors)
    ranking = [vectors.paths[i] for i in np.argsort(-scores, kind="stable") if vectors.paths[i] not in examples]
    held_out = {str(p) for p in dogs} - set(examples)
    first = set(ranking[:len(held_out)])
    return (len(found & held_out) / max(1, len(found)), len(found & held_out) / len(held_out),
            len(first & held_out) / len(held_out))


@pytest.mark.slow
def test_ten_dogs_teach_a_label_that_finds_the_held_out_dogs(dog_library):
    index, dogs, _ = dog_library
    figures = []
    for seed in range(3):
        examples = sorted(np.random.default_rng(seed).choice([str(p) for p in dogs], 10, replace=False).tolist())
        if seed == 0:  # through the command, as a user runs it
            result = CliRunner().invoke(cli, ["train", "good boys", "--index", str(index), "--examples", *examples],
                                        catch_exceptions=False)
            assert result.exit_code == 0, result.output
            assert "10 examples vs 175 other indexed photos" in result.output
            assert "estimated from the scores" in result.output and "weights were not found" not in result.output
        else:
            with IndexStore.open(index, create=False) as store:
                train_label(index, store, "good boys", examples, seed=seed)
        figures.append(held_out_figures(index, dogs, examples, "good boys"))
    precision, recall, r_precision = np.mean(figures, axis=0)
    # Measured, seeds 0-2: precision 1.00/0.83/1.00, recall 0.98/0.31/0.96, R-precision
    # 0.98/0.90/1.00 (seeds 0-9: precision 1.00 but seed 1, recall 0.96-0.98 but seed 1,
    # whose examples the size principle reads as one smaller group of breeds). The
    # regression alone, before the class set: precision 0.72/0.91/0.92, recall
    # 1.00/0.43/0.96; on the embedding alone: precision 0.47, recall 0.77, R-precision 0.61.
    assert r_precision >= 0.88
    assert precision >= 0.8 and recall >= 0.7

    with sqlite3.connect(index / "index.sqlite") as conn:
        folds = json.loads(conn.execute("SELECT folds FROM custom_heads WHERE name = 'good boys'").fetchone()[0])
        bases = conn.execute("SELECT model, length(basis) FROM custom_bases").fetchall()
    assert folds[0]["features"] == "embedding+class-groups-v1" and 0 < folds[0]["c"] <= 1
    assert len(folds[0]["classes"]) == 1000 and 0 < folds[0]["veto"] < 1  # the class set and its veto
    assert len(bases) == 1 and bases[0][0] == "efficientnet_lite0" and bases[0][1] > 1_000_000


@pytest.mark.slow
def test_examples_with_nothing_in_common_fall_back_to_the_regression_and_warn(dog_library):
    index, dogs, others = dog_library
    rng = np.random.default_rng(0)
    examples = sorted(str(p) for p in [*rng.choice(dogs, 3, replace=False), *rng.choice(others, 7, replace=False)])
    result = CliRunner().invoke(cli, ["train", "odds and ends", "--index", str(index), "--examples", *examples],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # Their smallest common group is (nearly) every class: a class set would pass most photos.
    with sqlite3.connect(index / "index.sqlite") as conn:
        folds = json.loads(conn.execute("SELECT folds FROM custom_heads WHERE name = 'odds and ends'").fetchone()[0])
    assert "classes" not in folds[0]
    assert "warning: the label matches most photos" in result.output  # as the regression alone said before
    listed = CliRunner().invoke(cli, ["labels", "--index", str(index)], catch_exceptions=False).output
    assert "odds and ends: 10 examples, 175 other photos (unlabelled), cross-validated precision" in listed
    assert "(estimated) recall" in listed
