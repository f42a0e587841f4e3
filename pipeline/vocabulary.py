"""Everyday search words to model labels, from the data file ``vocabulary.json``.

"dog" must find photos the classifier labelled "Labrador retriever", and "beach" those
labelled "seashore" or "sandbar". The mapping is data, kept in the repo and documented
in its own ``_doc`` field, so it can grow without code changes.
"""

from __future__ import annotations

import functools
import json
from importlib import resources


@functools.cache
def _concepts() -> dict[str, dict[str, list[str]]]:
    text = resources.files("pipeline").joinpath("vocabulary.json").read_text(encoding="utf-8")
    return json.loads(text)["concepts"]


@functools.cache
def _word_index() -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for name, concept in _concepts().items():
        for word in concept["words"]:
            index.setdefault(word.lower(), []).append(name)
    return {word: tuple(names) for word, names in index.items()}


def expand(term: str) -> frozenset[str]:
    """The model labels a search term stands for through the vocabulary (may be empty).

    ``term`` is matched whole and case-insensitively against each concept's words; a
    matching concept contributes its labels and those of every concept it includes.
    """
    labels: set[str] = set()
    pending = list(_word_index().get(term.lower().strip(), ()))
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        concept = _concepts()[name]
        labels.update(concept.get("labels", ()))
        pending.extend(concept.get("includes", ()))
    return frozenset(labels)


def words() -> tuple[str, ...]:
    """Every search word the vocabulary knows, lower case."""
    return tuple(_word_index())


def all_labels() -> frozenset[str]:
    """Every label the vocabulary mentions (for checks against the model registry)."""
    return frozenset(label for c in _concepts().values() for label in c.get("labels", ()))

