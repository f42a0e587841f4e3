"""Stored per-concept scores give exactly what summing label rows gives, or are not used.

Every comparison runs the same query twice on the same real SQLite index: through the
stored scores (``search(...)``) and by summing label rows (``search(..., stored=False)``,
the behaviour before the scores existed), and asks for the same photos, in the same
order, with the same scores and labels.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from benchmarks.search_scale import build, towns
from pipeline import concept_scores
from pipeline.concept_scores import StoredConcepts, ensure_concept_scores, score_new_photos
from pipeline.parquet_sink import parquet_dir
from pipeline.people_store import PEOPLE_SOURCE
from pipeline.places import fold
from pipeline.search import search
from pipeline.search_filters import build_filters, filter_clauses, split_query
from pipeline.store import Batch, IndexStore, label_row
from pipeline.writer import IndexWriter, ModelKey
from tests.test_search import PHOTOS, photo_row
from tests.test_search_filters import result_rows

WORDS = ["dog", "cat", "beach", "sea", "person", "car", "bicycle", "food", "building", "bird", "animal", "pet",
         "retriever", "terrier", "spaniel", "pizza", "mountain", "snow", "boat", "golden retriever"]


def same(store: IndexStore, terms: list[str], **options) -> list:
    """The hits of ``terms`` by stored scores, after checking that summing rows gives the same."""
    fast = search(store, terms, **options)
    exact = search(store, terms, stored=False, **options)
    assert [h.path for h in fast] == [h.path for h in exact], terms
    assert all(math.isclose(a.score, b.score, rel_tol=1e-12) for a, b in zip(fast, exact)), terms
    assert [h.labels for h in fast] == [h.labels for h in exact], terms
    return fast


def uses_stored_scores(store: IndexStore, word: str, min_score: float = 0.05) -> bool:
    from pipeline import vocabulary
    from pipeline.search import Term, matching_labels

    found = frozenset(matching_labels(store, Term(word, tuple(word.split()))))
    with store.engine.connect() as conn:
        stored = StoredConcepts.load(conn, min_score)
        return stored is not None and stored.concept_for(word, vocabulary.expand(word) or found) is not None


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """3,000 photos with the benchmark's label distribution (classifier top 5, boxes, masks,
    dates and places), and the concept scores a run builds on an older index."""
    folder = tmp_path_factory.mktemp("concepts")
    build(folder, 3000, seed=7)
    return folder


@pytest.fixture()
def big(synthetic):
    store = IndexStore.open(synthetic, create=False)
    yield store
    store.close()


def test_stored_scores_give_the_summed_results_for_single_words(big):
    for word in WORDS:
        assert uses_stored_scores(big, word) or word in ("pizza", "golden retriever"), word
        for limit in (1, 20, 500):
            same(big, [word], limit=limit)
    assert len(same(big, ["dog"], limit=500)) > 100  # the comparison sees many photos, not a few


def test_stored_scores_give_the_summed_results_for_several_words_and_exclusions(big):
    rng = random.Random(3)
    queries = [rng.sample(WORDS, k) for k in (2, 2, 2, 3, 3, 3, 3, 4) for _ in range(4)]
    queries += [["dog", "-person"], ["person", "-dog", "-car"], ["-beach", "sea"], ["pizza", "person"],
                ["retriever", "-golden retriever"]]
    found = 0
    for terms in queries:
        for min_score in (0.05, 0.3):
            found += len(same(big, terms, min_score=min_score))
    assert found > 100


def test_stored_scores_give_the_summed_results_with_date_and_place_filters(big, synthetic):
    home = fold(towns(300, 7)[0]["city"])
    for terms in (["dog", "2024"], ["person", "2023"], ["car", "beach", "2022"], ["retriever"], ["animal", "july"]):
        for common in (set(), {home}):  # the place by IN and by EXISTS
            words, filters = split_query(big, terms, build_filters(place=home))
            clauses = filter_clauses(filters, common)
            same(big, words, restrict=clauses)
            same(big, words, restrict=clauses, order=[text("photos.path DESC")])  # another sort first


def test_box_filters_and_a_low_min_score_still_agree(big):
    same(big, ["person"], min_count=2)
    same(big, ["dog"], objects_of=["person"], min_area=0.2)
    assert not uses_stored_scores(big, "dog", min_score=0.01)  # below what is stored: rows are summed
    same(big, ["dog"], min_score=0.01)


def test_searching_with_stored_scores_writes_nothing(synthetic):
    before = (synthetic / "index.sqlite").read_bytes()
    with IndexStore.open(synthetic, create=False) as store:
        search(store, ["dog", "beach"])
        search(store, ["retriever"])
    assert (synthetic / "index.sqlite").read_bytes() == before


# -- keeping the scores right as the index changes ---------------------------------------


def commit(store: IndexStore, photos: dict[str, list[tuple[str, float, str]]], hooked: bool = True) -> None:
    run_id = store.begin_run(["/photos"], {"classify": "test"})
    store.commit(run_id, Batch(photos=[photo_row(f"/photos/{n}") for n in photos],
                               rows=[label_row(f"/photos/{n}", label, score, source, "test")
                                     for n, rows in photos.items() for label, score, source in rows],
                               parquet_name=f"part{run_id}.parquet", hooks=[score_new_photos] if hooked else []))


@pytest.fixture()
def small(tmp_path: Path):
    store = IndexStore.open(tmp_path / "index")
    commit(store, {n: [(label, s, "classify") for label, s in rows] for n, rows in PHOTOS.items()})
    yield store
    store.close()


def test_an_index_from_before_the_scores_searches_by_sums_then_is_upgraded_once(tmp_path, caplog):
    store = IndexStore.open(tmp_path / "old")
    commit(store, {n: [(label, s, "classify") for label, s in rows] for n, rows in PHOTOS.items()}, hooked=False)
    with store.engine.connect() as conn:
        assert not concept_scores.has_tables(conn)
    before = [(h.path, h.score) for h in search(store, ["dog"])]
    assert [Path(p).name for p, _ in before] == ["lab.jpg", "dog_on_beach.jpg"]
    with caplog.at_level(logging.WARNING, logger="pipeline.concept_scores"):
        assert ensure_concept_scores(store) == len(PHOTOS)
    assert "scoring 5 photos for fast search" in caplog.text
    assert uses_stored_scores(store, "dog")
    assert [(h.path, h.score) for h in same(store, ["dog"])] == before
    assert ensure_concept_scores(store) == 0  # the next run has nothing to do
    store.close()


def test_new_photos_are_scored_in_their_commit_and_replaced_ones_leave_no_rows(small):
    commit(small, {"beagle.jpg": [("beagle", 0.8, "classify"), ("dog", 0.9, "detect")],
                   "lab.jpg": [("sofa", 0.9, "classify")]})  # lab.jpg re-indexed: no dog any more
    assert uses_stored_scores(small, "dog")
    assert [Path(h.path).name for h in same(small, ["dog"])] == ["beagle.jpg", "dog_on_beach.jpg"]
    db = sqlite3.connect(small.path)
    orphans = db.execute("SELECT count(*) FROM concept_scores WHERE photo_id NOT IN (SELECT id FROM photos)")
    assert orphans.fetchone()[0] == 0


def test_a_label_name_new_to_the_index_updates_the_words_that_find_it(small):
    """A library's first batches show few classes: "retriever" must grow as new breeds appear."""
    assert uses_stored_scores(small, "retriever")  # golden and Labrador, from the first commit
    commit(small, {"curly.jpg": [("curly-coated retriever", 0.97, "classify")]})
    assert uses_stored_scores(small, "retriever")
    assert [Path(h.path).name for h in same(small, ["retriever"])] == ["curly.jpg", "lab.jpg", "dog_on_beach.jpg"]
    assert [Path(h.path).name for h in same(small, ["retriever", "-beach"])] == ["curly.jpg", "lab.jpg"]


def test_photos_committed_without_the_hook_make_search_sum_rows_until_the_next_run(small):
    commit(small, {"pup.jpg": [("beagle", 0.95, "classify")]}, hooked=False)  # as an older photos would
    assert not uses_stored_scores(small, "dog")
    assert Path(same(small, ["dog"])[0].path).name == "pup.jpg"
    assert ensure_concept_scores(small) == 1
    assert uses_stored_scores(small, "dog")
    assert Path(same(small, ["dog"])[0].path).name == "pup.jpg"


def test_a_person_named_like_a_label_is_summed_with_it(small):
    """People rows are not in the stored scores; a person called "beagle" sends "dog" to the sums."""
    from pipeline.people_store import ensure_tables

    ensure_tables(small)
    with small.engine.begin() as conn:
        conn.execute(text("INSERT INTO people (name, created_at) VALUES ('beagle', 0)"))
        conn.execute(text("INSERT INTO labels (photo_id, label, score, source, model) SELECT id, 'beagle', 1.0, "
                          ":s, :s FROM photos WHERE path = '/photos/cat.jpg'"), {"s": PEOPLE_SOURCE})
    assert not uses_stored_scores(small, "dog")
    assert "cat.jpg" in [Path(h.path).name for h in same(small, ["dog"])]
    assert uses_stored_scores(small, "beach")  # other words keep their stored scores


def test_a_word_spelled_like_a_label_outside_its_concept_is_summed(small):
    commit(small, {"toy.jpg": [("puppy", 0.9, "custom")]})  # a label "puppy": "puppy" matches it too
    assert not uses_stored_scores(small, "puppy")
    assert "toy.jpg" in [Path(h.path).name for h in same(small, ["puppy"])]
    assert uses_stored_scores(small, "dog")


def test_concepts_follow_the_vocabulary(small, monkeypatch):
    """A concept the vocabulary no longer has goes, a new one is scored for every photo."""
    db = sqlite3.connect(small.path)
    db.execute("INSERT INTO concepts (labels, photos) VALUES ('[\"gone\"]', 0)")
    db.commit()
    from pipeline import vocabulary

    extra = frozenset({"tabby", "seashore"})
    monkeypatch.setattr(vocabulary, "words", lambda: ("tabby seashore",))
    monkeypatch.setattr(vocabulary, "expand", lambda term: extra if term == "tabby seashore" else frozenset())
    ensure_concept_scores(small)
    keys = {r[0] for r in db.execute("SELECT labels FROM concepts")}
    assert concept_scores.key_of(extra) in keys and '["gone"]' not in keys
    with small.engine.connect() as conn:
        stored = StoredConcepts.load(conn, 0.05)
        assert stored is not None
        concept = stored.concept_for("tabby seashore", extra)
    assert concept is not None
    scored = {r[0] for r in db.execute("SELECT p.path FROM concept_scores c JOIN photos p ON p.id = c.photo_id "
                                       "WHERE c.concept_id = ?", (concept[0],))}
    assert {Path(p).name for p in scored} == {"beach.jpg", "dog_on_beach.jpg", "cat.jpg"}
    # Each of those photos' rows carries the new concept's bits in its mask.
    bits = concept_scores.bits_of(concept[0])
    masks = db.execute("SELECT mask FROM concept_scores c JOIN photos p ON p.id = c.photo_id "
                       "WHERE p.path = '/photos/beach.jpg'").fetchall()
    assert masks and all(m & bits == bits for (m,) in masks)


def test_the_writer_scores_every_batch_it_commits(tmp_path):
    """Through IndexWriter, as `photos index` commits: the hook is wired in."""
    store = IndexStore.open(tmp_path)
    writer = IndexWriter(store, parquet_dir(tmp_path), store.begin_run(["/p"], {}),
                         {"classify": ModelKey("m", "m.pth")}, commit_rows=3)
    writer.add(result_rows(["lisbon-beach-2019.jpg", "porto-beach-2019.jpg", "no-exif-beach.jpg",
                            "orange-fruit.jpg"]))
    writer.flush()
    assert uses_stored_scores(store, "beach")
    assert [Path(h.path).name for h in same(store, ["beach"])] == [
        "no-exif-beach.jpg", "lisbon-beach-2019.jpg", "porto-beach-2019.jpg"]
    writer.delete(["/p/no-exif-beach.jpg"], keep=False)  # a vanished photo
    writer.delete(["/p/porto-beach-2019.jpg"], keep=True)  # --keep-deleted: marked, still stored
    assert uses_stored_scores(store, "beach")
    assert [Path(h.path).name for h in same(store, ["beach"])] == ["lisbon-beach-2019.jpg"]
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT count(*) FROM concept_scores WHERE photo_id NOT IN (SELECT id FROM photos)"
                      ).fetchone()[0] == 0
    store.close()


def test_a_custom_label_is_read_best_first_from_its_rows_with_the_summed_results(synthetic, tmp_path, monkeypatch):
    """A custom label's rows (one per photo) drive the search like a stored concept: same
    photos, order and scores as summing, alone and with words, exclusions and filters."""
    from pipeline import search_ranked
    from pipeline.custom_labels import custom_heads

    monkeypatch.setattr(search_ranked, "FIRST_BAND", 10)  # several bands even for 900 rows (50 x limit each)
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "index.sqlite").write_bytes((synthetic / "index.sqlite").read_bytes())
    store = IndexStore.open(tmp_path / "index", create=False)
    try:
        rng = random.Random(5)
        with store.engine.begin() as conn:
            custom_heads.metadata.create_all(conn)
            conn.execute(text("INSERT INTO custom_heads VALUES ('our dogs', 'm', 1, '[]', '[]', 0, 1, 1, 0)"))
            ids = conn.execute(text("SELECT id FROM photos")).scalars().all()
            conn.execute(text("INSERT INTO labels VALUES (:p, 'our dogs', :s, 'custom', 'custom:m')"),
                         [{"p": i, "s": round(rng.uniform(0.5, 1.0), 3)} for i in rng.sample(ids, 900)])
            conn.execute(text("INSERT INTO label_names VALUES ('our dogs')"))
            conn.execute(text("INSERT INTO label_fts(label) VALUES ('our dogs')"))
        for limit in (1, 20, 500, 2000):
            assert len(same(store, ["our dogs"], limit=limit)) == min(limit, 900)
        for terms in (["our dogs", "beach"], ["person", "our dogs"], ["our dogs", "-person"], ["dog", "our dogs", "car"]):
            same(store, terms, limit=50)
        home = fold(towns(300, 7)[0]["city"])
        words, filters = split_query(store, ["our dogs", "2024"], build_filters(place=home))
        same(store, words, restrict=filter_clauses(filters, {home}))

        def summed(*args, **kwargs):
            raise AssertionError("the custom label was summed, not read from its rows")

        with monkeypatch.context() as patched:
            patched.setattr(search_ranked, "summed_scores", summed)
            assert len(search(store, ["our dogs"], limit=5)) == 5
        # Rows not from `photos train` make the label summed, with the same results: a person
        # named like it, a model label spelled like it.
        for source, photo in ((PEOPLE_SOURCE, "(SELECT MAX(photo_id) FROM labels WHERE label = 'our dogs')"),
                              ("classify", "(SELECT MIN(id) FROM photos)")):
            with store.engine.begin() as conn:
                conn.execute(text(f"INSERT INTO labels VALUES ({photo}, 'our dogs', 0.97, :s, 'x')"), {"s": source})
            for limit in (1, 20, 2000):
                same(store, ["our dogs"], limit=limit)
            same(store, ["our dogs", "person"], limit=50)
    finally:
        store.close()
