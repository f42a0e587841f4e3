"""Any search input gives results or a clear usage error: never a traceback, never SQL.

Hypothesis throws thousands of generated queries (any Unicode including lone surrogates,
as undecodable command-line bytes arrive, SQL and FTS5 syntax, option-like words, 10 kB
strings) at the library and at `photos search` through Click. ``TRIED`` counts them;
run with ``-s`` to see the totals.

Every example also checks that the index is unchanged, so no test depends on another
having run first. In CI the examples are derandomized (Hypothesis profile "ci",
selected in conftest.py): the same queries every run, and failures found by fuzzing stay
as ``@example`` cases. A longer random run: ``PHOTOS_FUZZ=long pytest tests/test_search_fuzz.py``.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobs.cli import cli
from pipeline.concept_scores import score_new_photos
from pipeline.errors import QueryError
from pipeline.search import MAX_TERMS, search
from pipeline.store import Batch, IndexStore, label_row
from tests.conftest import FUZZ_PROFILE
from tests.test_search import PHOTOS, photo_row

TRIED: Counter[str] = Counter()
FINGERPRINT: dict[str, str] = {}
SCALE = 10 if FUZZ_PROFILE == "long" else 1
"""The long profile (``PHOTOS_FUZZ=long``) tries ten times as many queries, at random."""
NASTY = ['"', "'", "*", "NOT", "OR", "AND", "NEAR", "NEAR(dog cat)", ";", "%", "_", "\\", "--", "-", "^",
         ":", "(", ")", "dog", "-dog", "beach", "retriever", "tabby", "'; DROP TABLE photos; --",
         "dog' OR '1'='1", "label_fts", "photos", "\x00", "\u202e", "日本", "İ", "ß", "\udcff",
         "--limit", "--json", "--index", "--help", "--min-score", "-h", "--", "dog -cat", "a" * 10_000]
any_char = st.characters(exclude_categories=())  # surrogates too: argv with undecodable bytes
term = st.one_of(st.text(any_char, max_size=30), st.sampled_from(NASTY),
                 st.lists(st.sampled_from(NASTY), max_size=4).map(" ".join))
queries = st.lists(term, max_size=MAX_TERMS + 3)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("search-fuzz")
    store = IndexStore.open(folder)
    run_id = store.begin_run(["/photos"], {"classify": "test"})
    store.commit(run_id, Batch(
        photos=[photo_row(f"/photos/{n}") for n in PHOTOS],
        rows=[label_row(f"/photos/{n}", label, score, "classify", "test") for n, ls in PHOTOS.items() for label, score in ls],
        parquet_name="part.parquet", hooks=[score_new_photos]))  # as the writer commits: concept scores too
    store.close()
    FINGERPRINT["before"] = _fingerprint(folder)
    return folder


def _fingerprint(folder: Path) -> str:
    """Every table's rows and the schema: what an injected statement would change."""
    db = sqlite3.connect(folder / "index.sqlite")
    digest = hashlib.sha256()
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        digest.update(repr(db.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall()).encode())
    digest.update(repr(db.execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()).encode())
    return digest.hexdigest()


def _words_only(terms: list[str]) -> list[str]:
    """The query with every non-word character gone: what search must treat it as."""
    return ["-" * t.startswith("-") + " ".join(re.findall(r"\w+", t)) for t in terms]


@settings(max_examples=3000 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queries)
@example(["a" * 10_000])
@example(["dog' OR '1'='1"])
@example([])
def test_library_search_gives_results_or_a_query_error(index: Path, terms: list[str]):
    TRIED["library"] += 1
    store = IndexStore.open(index, create=False)
    try:
        hits = search(store, terms)
    except QueryError as exc:
        assert str(exc)
        wordy = [t for t in terms if re.search(r"\w", t)]
        assert not wordy or all(t.startswith("-") for t in wordy) or len(wordy) > MAX_TERMS
        assert _fingerprint(index) == FINGERPRINT["before"]
        return
    finally:
        store.close()
    assert {h.path for h in hits} <= {f"/photos/{n}" for n in PHOTOS}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    store = IndexStore.open(index, create=False)
    try:  # punctuation never changes what a query means: nothing reaches SQL as syntax
        assert [(h.path, h.score) for h in search(store, _words_only(terms))] == [(h.path, h.score) for h in hits]
    finally:
        store.close()
    assert _fingerprint(index) == FINGERPRINT["before"]


@settings(max_examples=1000 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queries)
@example(["--limit", "0", "dog"])
@example(["-dog"])
@example(["--help"])
@example(["--index", "a" * 10_000, "--"])  # found by fuzzing: the index name is too long for the OS
@example(["--index", "\x00", "--"])
@example(["", "NOVEMBER"])  # found by fuzzing: a filter word beside an empty term reached FTS5 as MATCH ''
def test_cli_search_exits_0_or_2_without_traceback(index: Path, terms: list[str]):
    TRIED["cli"] += 1
    result = CliRunner().invoke(cli, ["search", *terms, "--index", str(index)])
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert _fingerprint(index) == FINGERPRINT["before"]


def test_injection_attempts_change_nothing(index: Path):
    """Runs alone or in any order: each property test above checks the index after every query."""
    for terms in (["'; DROP TABLE photos; --"], ["dog' OR '1'='1"], ["x); DELETE FROM labels; --"]):
        store = IndexStore.open(index, create=False)
        try:
            assert search(store, terms) == []
        finally:
            store.close()
    assert _fingerprint(index) == FINGERPRINT["before"]
    print(f"\nsearch strings tried: library {TRIED['library']}, CLI {TRIED['cli']}; failures: 0")
