"""Common words in a query: "a dog", "photos of the beach", "cat on a couch".

Search ANDs its terms, so a word that names nothing would make every such query empty
(measured on coco64: "a dog" and "cat on a couch" found nothing while "dog" found 5 photos). A
lone common word is dropped before the query is read, unless it is a vocabulary word or
exactly the name of a label in the index (a person or custom label called "our"):
full-text matching is not asked, since "of" and "the" would find ImageNet's
"hen-of-the-woods" and turn "photos of dogs" into a mushroom search. A quoted phrase
("pizza on a plate") is read as written; only when as written it matches no label is it
read as its other words ("a beach in lisbon" -> beach, lisbon); an excluded term ("-the")
is left alone.

English only, like the vocabulary; "or" and "not" are not dropped: reading "cat or dog" as
"cat dog" would answer another question, so those stay and match nothing (the CLI says so).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import text

from pipeline import vocabulary
from pipeline.search import matching_labels, parse_query
from pipeline.store import IndexStore

COMMON_WORDS = frozenset("""
a an the of on in at with and by for from to into onto under over near
my our your his her their its this that these those some any all
i me we us you he she they it is are was were be being been there here
photo photos picture pictures pic pics image images shot shots
show find search look looking taken having has have
""".split())
_WORDS = re.compile(r"\w+", re.UNICODE)
MAX_NAME_WORDS = 4
"""Longest label name looked for across terms ("my dogs", "our garden in spring")."""


def drop_common_words(store: IndexStore, raw_terms: Sequence[str]) -> tuple[list[str], list[str]]:
    """``raw_terms`` without the lone common words that name nothing here: (kept, dropped).

    Terms that together spell a label's name with a common word in it (`photos search my
    dogs` for the custom label "my dogs") are kept as that one phrase. Words are compared
    as their word characters, so "the." is "the"."""
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(raw_terms):
        for n in range(min(MAX_NAME_WORDS, len(raw_terms) - i), 1, -1):
            chunk = [w for raw in raw_terms[i : i + n] for w in _WORDS.findall(raw.lower())]
            if any(w in COMMON_WORDS for w in chunk) and _is_label(store, chunk):
                kept.append(" ".join(raw_terms[i : i + n]))
                i += n
                break
        else:
            raw = raw_terms[i]
            words = _WORDS.findall(raw.lower())
            if (len(words) == 1 and words[0] in COMMON_WORDS and not raw.startswith("-")
                    and not vocabulary.expand(words[0]) and not _is_label(store, words)):
                dropped.append(raw)
            else:
                terms, left_out = _phrase_without_common_words(store, raw)
                kept += terms
                dropped += left_out
            i += 1
    return kept, dropped


def _phrase_without_common_words(store: IndexStore, raw: str) -> tuple[list[str], list[str]]:
    """A quoted phrase that matches no label as written becomes its other words, each a
    term ("a dog" -> dog); any other term stays as it is. Returns (terms, words left out)."""
    words = _WORDS.findall(raw.lower())
    rest = [w for w in words if w not in COMMON_WORDS]
    if raw.startswith("-") or len(words) < 2 or not rest or len(rest) == len(words):
        return [raw], []
    if matching_labels(store, parse_query([raw])[0]):
        return [raw], []
    return rest, [w for w in words if w in COMMON_WORDS]


def _is_label(store: IndexStore, words: Sequence[str]) -> bool:
    """Whether some label (of a model, a person, a custom label) is named ``words``: the
    same words in the same order, case and punctuation aside ("Hen-of-the-woods")."""
    if not words:
        return False
    name = " ".join(words)
    with store.engine.connect() as conn:
        # An FTS5 phrase: labels holding these words next to each other, a few for a name of
        # several words; for one word, the exact match is checked by SQLite, since a common
        # word's token can be in many labels.
        found = conn.execute(text("SELECT label FROM label_fts WHERE label_fts MATCH :q"
                                  + (" AND lower(label) = :name LIMIT 1" if len(words) == 1 else "")),
                             {"q": '"' + name + '"', "name": name}).scalars()
        return any(" ".join(_WORDS.findall(label.lower())) == name for label in found)
