"""Search semantics on a real SQLite index filled through the store's own commit path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.registry import all_specs
from pipeline import vocabulary
from pipeline.errors import QueryError
from pipeline.index_status import counts
from pipeline.search import parse_query, search
from pipeline.store import Batch, IndexStore, label_row

PHOTOS = {
    "lab.jpg": [("Labrador retriever", 0.7), ("golden retriever", 0.2)],
    "beach.jpg": [("seashore", 0.6), ("sandbar", 0.3), ("lakeside", 0.05)],
    "dog_on_beach.jpg": [("seashore", 0.5), ("Labrador retriever", 0.3)],
    "cat.jpg": [("tabby", 0.8), ("tiger cat", 0.15)],
    "weak_dog.jpg": [("sofa", 0.9), ("beagle", 0.01)],
}


def photo_row(path: str) -> dict:
    return {"path": path, "size": 1, "mtime_ns": 1, "width": 4, "height": 3, "fingerprint": path,
            "models": '{"classify": "test@test.pth"}'}


@pytest.fixture()
def store(tmp_path: Path) -> IndexStore:
    store = IndexStore.open(tmp_path / "index")
    run_id = store.begin_run(["/photos"], {"classify": "test"})
    photo_rows = [photo_row(f"/photos/{n}") for n in PHOTOS]
    label_rows = [label_row(f"/photos/{n}", label, score, "classify", "test")
                  for n, ls in PHOTOS.items() for label, score in ls]
    store.commit(run_id, Batch(photos=photo_rows, rows=label_rows, parquet_name="part.parquet"))
    yield store
    store.close()


def names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


def test_vocabulary_maps_everyday_words_to_labels(store):
    assert names(search(store, ["dog"])) == ["lab.jpg", "dog_on_beach.jpg"]
    assert names(search(store, ["beach"])) == ["beach.jpg", "dog_on_beach.jpg"]
    assert names(search(store, ["kitten"])) == ["cat.jpg"]


def test_scores_sum_a_terms_labels_and_multiply_across_terms(store):
    [lab, _] = search(store, ["dog"])
    assert lab.score == pytest.approx(0.9)
    [both] = search(store, ["dog", "beach"])
    assert Path(both.path).name == "dog_on_beach.jpg" and both.score == pytest.approx(0.5 * 0.3)
    assert {m["label"] for m in both.labels} == {"seashore", "Labrador retriever"}


def test_vocabulary_words_do_not_match_other_labels_by_full_text(store, tmp_path):
    run_id = store.begin_run(["/photos"], {"classify": "test"})
    store.commit(run_id, Batch(photos=[photo_row("/photos/wagon.jpg")],
                               rows=[label_row("/photos/wagon.jpg", "beach wagon", 0.9, "classify", "test")],
                               parquet_name="p2.parquet"))
    assert "wagon.jpg" not in names(search(store, ["beach"]))
    assert names(search(store, ["wagon"])) == ["wagon.jpg"]


def test_full_text_matches_label_words_with_stemming(store):
    assert names(search(store, ["retrievers"])) == ["lab.jpg", "dog_on_beach.jpg"]
    assert names(search(store, ["golden retriever"])) == ["lab.jpg"]
    assert names(search(store, ["TABBY"])) == ["cat.jpg"]


def test_exclusion_and_min_score(store):
    assert names(search(store, ["dog", "-beach"])) == ["lab.jpg"]
    assert "weak_dog.jpg" not in names(search(store, ["dog"]))
    assert "weak_dog.jpg" in names(search(store, ["dog"], min_score=0.0))
    assert names(search(store, ["dog"], limit=1)) == ["lab.jpg"]


@pytest.mark.parametrize("query", [
    ['"'], ["'"], ["*"], ["dog*"], ["NOT"], ["dog OR cat"], ["beach AND"], ["NEAR(dog)"],
    ["'; DROP TABLE photos; --"], ["%"], ["_"], ["\\"], ["日本"], ["a" * 10_000], ["dog", "-"],
    ["label_fts"], ["^dog"], ["dog:cat"],
])
def test_hostile_terms_give_results_or_a_usage_error(store, query):
    try:
        assert isinstance(search(store, query), list)
    except QueryError:
        assert not any(ch.isalnum() for ch in "".join(query))  # only word-less queries are refused
    assert counts(store)["photos"] == len(PHOTOS)


@pytest.mark.parametrize("query", [[], [""], ["*"], ["  "], ["-dog"], ["x"] * 17])
def test_queries_without_words_are_usage_errors(query):
    with pytest.raises(QueryError):
        parse_query(query)


def test_vocabulary_labels_are_real_model_categories():
    assert vocabulary.all_labels() <= set().union(*(spec.categories for spec in all_specs()))
    assert {"motorcycle", "motorbike"} <= vocabulary.expand("motorbike") and "tvmonitor" in vocabulary.expand("tv")
    assert len(vocabulary.expand("dog")) == 119  # the 118 breeds and COCO/VOC "dog"
    assert vocabulary.expand("beach") == {"seashore", "sandbar"}
    assert vocabulary.expand("pet") >= vocabulary.expand("dog") | vocabulary.expand("cat")


def test_vocabulary_file_documents_itself():
    data = json.loads((Path(vocabulary.__file__).parent / "vocabulary.json").read_text())
    assert "words" in data["_doc"] and data["concepts"]["dog"]["words"][0] == "dog"
    included = {name for c in data["concepts"].values() for name in c.get("includes", [])}
    assert included <= set(data["concepts"])


def test_a_term_scores_by_its_strongest_source(store):
    """The detector's "dog" finds a photo the classifier called a sofa; agreeing sources don't add up."""
    run_id = store.begin_run(["/photos"], {"classify": "test", "detect": "det"})
    rows = [photo_row(f"/photos/{n}") for n in ("sofa.jpg", "both.jpg")]
    store.commit(run_id, Batch(photos=rows, parquet_name="p3.parquet", rows=[
        label_row("/photos/sofa.jpg", "studio couch", 0.9, "classify", "test"),
        label_row("/photos/sofa.jpg", "dog", 0.8, "detect", "det"),
        label_row("/photos/both.jpg", "beagle", 0.6, "classify", "test"),
        label_row("/photos/both.jpg", "dog", 0.7, "detect", "det"),
    ]))
    scores = {Path(h.path).name: h.score for h in search(store, ["dog"])}
    assert scores["sofa.jpg"] == pytest.approx(0.8) and scores["both.jpg"] == pytest.approx(0.7)
    assert list(scores)[:2] == ["lab.jpg", "sofa.jpg"]


@pytest.mark.parametrize("word", ["person", "people", "man", "woman", "child", "kid", "baby", "crowd", "selfie",
                                  "portrait"])
def test_everyday_words_for_people_reach_the_detectors_person_class(word):
    from pipeline.vocabulary import expand

    assert "person" in expand(word)


@pytest.mark.parametrize(("word", "wanted", "unwanted"), [
    ("oven", {"stove", "oven"}, {"Dutch oven", "microwave"}),  # COCO's oven is the kitchen range
    ("teddy bear", {"teddy", "teddy bear"}, {"brown bear"}),  # full text needs both words in one label
    ("cup", {"cup", "coffee mug", "espresso"}, {"wine glass"}),
    ("bowl", {"bowl", "mixing bowl", "soup bowl"}, set()),
    ("bottle", {"bottle", "wine bottle", "beer bottle", "pop bottle", "water bottle"}, {"whiskey jug"}),
    ("fridge", {"refrigerator"}, set()),
])
def test_coco_class_names_reach_the_classifiers_labels_for_the_same_things(word, wanted, unwanted):
    """A search for a COCO class finds it through the classifier too, whatever the index holds."""
    labels = vocabulary.expand(word)
    assert wanted <= labels and not unwanted & labels
