"""The size principle of pipeline/class_sets.py on a library whose classes are known.

Six classes; groups: each class alone, "small" = classes 0-2, "all" = 0-5. Every photo is
one class (probability 0.9, the rest spread), 20 photos a class.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from pipeline.class_sets import ClassSets

CLASSES = 6
SMALL = [0, 1, 2]


def library() -> tuple[ClassSets, np.ndarray]:
    groups = np.zeros((CLASSES, CLASSES + 2), np.float32)
    groups[np.arange(CLASSES), np.arange(CLASSES)] = 1
    groups[SMALL, CLASSES] = 1
    groups[:, CLASSES + 1] = 1
    photo_class = np.repeat(np.arange(CLASSES), 20)
    prob = np.full((len(photo_class), CLASSES), 0.1 / (CLASSES - 1))
    prob[np.arange(len(photo_class)), photo_class] = 0.9
    return ClassSets(csr_matrix(groups), prob), photo_class


def test_examples_of_two_classes_stand_for_the_smallest_group_holding_them():
    sets, photo_class = library()
    examples = np.concatenate([np.flatnonzero(photo_class == k)[:5] for k in (0, 1)])
    weights = sets.weights(examples)
    # Class 2 was never shown, but the smallest group holding 0 and 1 holds it too.
    assert weights[[0, 1, 2]].min() > 0.95 and weights[3:].max() < 0.05
    scores = sets.scores(examples)
    assert (scores[np.isin(photo_class, SMALL)] >= 0.5).all() and (scores[~np.isin(photo_class, SMALL)] < 0.5).all()


def test_examples_of_one_class_stay_that_class_and_a_stray_does_not_widen_it():
    sets, photo_class = library()
    zeros = np.flatnonzero(photo_class == 0)[:10]
    assert sets.weights(zeros)[0] > 0.99 and sets.weights(zeros)[1:].max() < 0.01
    # Ten examples of "small" and one of class 4 (a mistake, or the classifier's): the
    # small group still explains them better than the group of all six.
    examples = np.concatenate([np.flatnonzero(photo_class == k)[:4] for k in SMALL] + [[np.flatnonzero(photo_class == 4)[0]]])
    weights = sets.weights(examples)
    assert weights[SMALL].min() > 0.9 and weights[4] < 0.1
    # Examples spread over every class need the group of all six.
    spread = np.concatenate([np.flatnonzero(photo_class == k)[:2] for k in range(CLASSES)])
    assert sets.weights(spread).min() > 0.95
