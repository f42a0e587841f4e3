"""Which of the classifier's classes a custom label's examples stand for: Bayesian concept
learning over the class groups (the size principle; Tenenbaum & Xu, 2000).

A logistic regression on 10 examples learns their 10 classes well and the rest of the
concept less well: 10 of ImageNet's 59 bird species must stand for all of them, and the
regression put only 80% of the held-out birds at >= 0.5. People learn a word from a few
examples by asking which known category they were most likely drawn from. Here the known
categories are the class basis's groups (``pipeline/class_features.py``: every class, and
every group of alike classes in two trees), each a hypothesis h about the label:

- under h, the label's photos are the library's photos of h's classes, and the examples
  were drawn from them at random (the same assumption as the head's g / c), so an example
  x has likelihood mass_h(x) / N_h: its probability summed over h's classes, over N_h, the
  same sum over the library's photos;
- the examples are counted as whole photos of the label in N_h, whatever their mass: a
  group that holds a sliver of each example and nothing else (a class no photo is) would
  otherwise be a tiny label that the examples fill, and win (it did, in a library of 32);
- with probability :data:`STRAY` an example is a stray, any photo of the library (1 / N),
  so one example the classifier got wrong does not force a group ten times too large.

The prior is uniform over the basis's group columns, so a class set that both trees
found counts twice (557 of the 2,998 columns repeat another, the leaves and the root
among them): a mild preference for groups the two linkages agree on, measured as it is.
The product over the examples prefers the smallest group that holds them all: ten dog
breeds are far likelier drawn from the 121 dogs of 1,000 photos than from the 433
animals. A class's weight is the posterior of the groups that hold it, and a photo's
class-set score its class probabilities summed with those weights: the probability that
it shows one of the label's classes. No list of concepts is used, only the classifier's
own last layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

STRAY = 0.01
"""Prior share of examples that fit no group (0.01 and 0.05 measured alike; 0.2 let groups
too small for the examples win: 'animal' recall 0.99 -> 0.69)."""


class ClassSets:
    """Class weights learnt from examples among the rows of one sample of the library (the
    examples and the unlabelled photos a head is fitted on)."""

    def __init__(self, groups: Any, prob: np.ndarray, mass: np.ndarray) -> None:
        """``groups``: the classes x groups membership matrix (``ClassBasis.groups``);
        ``prob``: the rows' class probabilities, N x classes; ``mass``: the same summed per
        group, N x groups (``ClassBasis.group_mass``)."""
        self.groups = groups
        self.prob = np.asarray(prob, dtype=np.float64)
        self.mass = np.asarray(mass, dtype=np.float64)
        self.sizes = self.mass.sum(axis=0)  # N_h

    def weights(self, examples: np.ndarray) -> np.ndarray:
        """Per class, the posterior probability that the label covers it, from the rows
        ``examples``."""
        mass = self.mass[examples]
        sizes = self.sizes + (1 - np.minimum(mass, 1)).sum(axis=0)  # the examples counted whole
        log_likelihood = np.log((1 - STRAY) * mass / sizes + STRAY / len(self.mass)).sum(axis=0)
        posterior = np.exp(log_likelihood - log_likelihood.max())
        posterior /= posterior.sum()
        return np.asarray(self.groups @ posterior, dtype=np.float64).ravel()

    def scores(self, examples: np.ndarray) -> np.ndarray:
        """Every row's class-set score, learnt from the rows ``examples``."""
        return self.prob @ self.weights(examples)
