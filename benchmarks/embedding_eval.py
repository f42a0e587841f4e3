"""Proof for `photos similar` and `photos train` on the 1,000 real eval photos, real weights.

Indexes ``../shared/eval/imagenet-samples`` with the real pipeline (classify only; kept in
``--index`` between runs), then:

- similar: for every photo, its top-10 neighbours by `find_similar`; the share of them in
  the query's concept (the most specific concept of ``pipeline/vocabulary.json`` holding
  its label), against the random baseline (that concept's share of the other photos);
- transfer learning: per concept, ``--draws`` random sets of 10 example photos;
  `train_label` with sampled negatives (the default), then `search(NAME)` at score >= 0.5;
  precision and recall over the held-out photos (every photo but the examples) at score
  0.5, and the R-precision of the search ranking (share of the concept's N held-out photos
  among the first N results: what a user scrolling the results sees).

    python -m benchmarks.embedding_eval --index /tmp/photos-eval-index
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.duplicates_eval import EVAL, index_folder
from pipeline import vocabulary
from pipeline.custom_labels import remove_label, train_label
from pipeline.search import search
from pipeline.similar import find_similar
from pipeline.store import IndexStore

CONCEPTS = ("dog", "bird", "car", "vehicle", "food", "reptile", "insect", "sea life", "instrument")


def label_of(photo: Path) -> str:
    return photo.stem.split("_", 1)[1].replace("_", " ")


def concept_of(label: str, present: set[str]) -> frozenset[str] | None:
    """The smallest vocabulary concept holding ``label`` and at least one other photo's label."""
    import json

    concepts = json.loads((Path(vocabulary.__file__).with_name("vocabulary.json")).read_text())["concepts"]
    best: frozenset[str] | None = None
    for concept in concepts.values():
        labels = vocabulary.expand(concept["words"][0]) & present if concept.get("words") else frozenset()
        if label in labels and len(labels) >= 2 and (best is None or len(labels) < len(best)):
            best = labels
    return best


def similar_proof(index_dir: Path, store: IndexStore, photos: list[Path]) -> None:
    present = {label_of(p) for p in photos}
    same, baseline, skipped, times = [], [], 0, []
    for photo in photos:
        concept = concept_of(label_of(photo), present)
        if concept is None:
            skipped += 1
            continue
        t = time.perf_counter()
        hits, indexed = find_similar(index_dir, store, str(photo), limit=10)
        times.append(time.perf_counter() - t)
        assert indexed
        same.append(np.mean([label_of(Path(h.path)) in concept for h in hits]))
        baseline.append((len(concept) - 1) / (len(photos) - 1))
    print(f"similar: {len(same)} queries ({skipped} photos in no concept skipped): top-10 share in the query's "
          f"concept {np.mean(same):.3f} vs random {np.mean(baseline):.3f} ({np.mean(same) / np.mean(baseline):.0f}x); "
          f"find_similar p50 {np.percentile(times, 50) * 1000:.1f} ms, p95 {np.percentile(times, 95) * 1000:.1f} ms")


def transfer_proof(index_dir: Path, store: IndexStore, photos: list[Path], draws: int) -> None:
    print("| concept | photos | examples | held-out precision @0.5 | held-out recall @0.5 | R-precision of the ranking "
          "| train + apply s |")
    print("|---|---|---|---|---|---|---|")
    for concept in CONCEPTS:
        labels = vocabulary.expand(concept)
        positives = [str(p) for p in photos if label_of(p) in labels]
        precisions, recalls, ranked, seconds = [], [], [], []
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            examples = sorted(rng.choice(positives, 10, replace=False).tolist())
            name = "zz " + concept.replace(" ", "-") + " mine"
            report = train_label(index_dir, store, name, examples, seed=draw)
            seconds.append(report.seconds)
            ranking = [h for h in search(store, [name], limit=10_000) if h.path not in examples]
            found = {h.path for h in ranking if h.score >= 0.5}
            truth = set(positives) - set(examples)
            ranked.append(len({h.path for h in ranking[:len(truth)]} & truth) / len(truth))
            precisions.append(len(found & truth) / max(1, len(found)))
            recalls.append(len(found & truth) / max(1, len(truth)))
            remove_label(store, name)
        print(f"| {concept} | {len(positives)} | 10 x {draws} draws | {np.mean(precisions):.3f} | "
              f"{np.mean(recalls):.3f} | {np.mean(ranked):.3f} | {np.mean(seconds):.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=Path, default=Path("/tmp/photos-eval-index"))
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated: similar, train")
    args = parser.parse_args()
    photos = sorted(EVAL.iterdir())
    if not (args.index / "index.sqlite").exists():
        print(f"indexed {len(photos)} photos with the real pipeline in {index_folder(EVAL, args.index):.1f} s")
    store = IndexStore.open(args.index, create=False)
    try:
        if "similar" not in args.skip:
            similar_proof(args.index, store, photos)
        if "train" not in args.skip:
            transfer_proof(args.index, store, photos, args.draws)
    finally:
        store.close()


if __name__ == "__main__":
    main()
