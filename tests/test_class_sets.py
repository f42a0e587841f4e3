"""The size principle of pipeline/class_sets.py on a library whose classes are known.

Six classes; groups: each class alone, "small" = classes 0-2, "all" = 0-5. Every photo is
one class (probability 0.9, the rest spread), 20 photos a class.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from pipeline.class_sets import ClassSets
from pipeline.label_heads import Head, _combined, fit_unlabelled

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
    membership = csr_matrix(groups)
    return ClassSets(membership, prob, membership.T.dot(prob.T).T), photo_class


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


def test_a_head_keeps_its_class_set_unless_the_set_covers_most_photos():
    sets, photo_class = library()
    features = sets.prob  # as a head's features: enough for its regression here
    small = np.concatenate([np.flatnonzero(photo_class == k)[:3] for k in SMALL])
    y = np.isin(np.arange(len(photo_class)), small).astype(int)
    fold, _, recall = fit_unlabelled(features, y, classes=sets)
    assert len(fold["classes"]) == CLASSES and 0 < fold["veto"] < 1 and recall == 1.0
    spread = np.concatenate([np.flatnonzero(photo_class == k)[:2] for k in range(CLASSES)])
    y = np.isin(np.arange(len(photo_class)), spread).astype(int)
    fold, _, _ = fit_unlabelled(features, y, classes=sets)
    assert "classes" not in fold  # every class: the set would say nothing, the regression decides


def test_the_veto_lowers_photos_the_regression_doubts_and_old_heads_score_as_before():
    head = Head("", "", [{"coef": [1.0, 0.0], "intercept": 0.0, "a": -1.0, "b": 0.0, "c": 0.5}])
    x = np.array([[-3.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    g = 1 / (1 + np.exp(-x[:, 0]))
    # A head stored before class sets (no "classes"): g / c, kept in order above 1.
    assert np.allclose(head.scores(x)[:2], g[:2] / 0.5, atol=1e-5) and 0.999 < head.scores(x)[2] < 1
    class_set = np.array([0.9, 0.9, 0.9, 0.2, 0.3])
    combined = _combined(class_set, np.array([0.1, 0.4, 0.6, 0.9, 0.7]), veto=0.4)
    # Under the veto: 0.5 x 0.1 / 0.4, not listed; at it: 0.5; up to twice it: in proportion.
    # The regression's 0.9 with a class set of 0.2: not seconded (0.4); 0.7 with 0.3: 0.6.
    assert np.allclose(combined, [0.125, 0.5, 0.75, 0.4, 0.6])
