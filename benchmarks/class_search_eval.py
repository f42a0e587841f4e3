"""Photo-level search quality per COCO class: `photos search CLASS` against annotations.

Issue 10's target: on an indexed COCO-annotated set (``../shared/eval/coco64``), search
for every COCO class present in at least ``--min-photos`` photos, and score the photos
each search returns against the annotations.

- A photo is a **positive** for a class when that class's annotations (crowd ones too,
  COCO's ``area``: mask pixels) cover at least ``--min-fraction`` (2%) of the frame; the
  classes scored are those with at least ``--min-photos`` (2) positives.
- A photo where the class is annotated but covers less counts **neither way**: finding it
  is not a false positive, missing it is not a miss (a 1% cup is no fair target for a
  whole-photo search).
- Precision = positives returned / (returned - neither); recall = positives returned /
  positives. A search that returns nothing scorable has precision 0 (it found nothing).
  The means are unweighted over classes.
- AP: average precision of the returned ranking (neither left out; a positive never
  returned adds 0), i.e. how good the order is, whatever the cut-off ``min_score`` makes.

The query is the class name as one term (``"dining table"``, as ``photos search "dining
table"`` sends it), through :func:`pipeline.search.search` with its defaults and no
result limit, so vocabulary, full-text matching and the ranking's ``min_score`` all count.

    python -m benchmarks.class_search_eval ../shared/eval/coco64/instances.json \\
        --images ../shared/eval/coco64/images --index /tmp/classes10/base

``--half even|odd`` scores only the photos whose COCO image id is even / odd (the other
half is left out of both positives and returned photos), to tune on one half and report
on the other.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.pathnames import path_text
from pipeline.search import DEFAULT_MIN_SCORE, search
from pipeline.store import IndexStore


@dataclass
class ClassResult:
    """One class's search against the annotations."""

    name: str
    positives: int
    returned: int
    neither: int
    hits: int
    false_positives: list[str]
    misses: list[str]
    average_precision: float

    @property
    def precision(self) -> float:
        scored = self.returned - self.neither
        return self.hits / scored if scored else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.positives if self.positives else 0.0


def coverage(annotations_path: Path, images_dir: Path) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per photo path (as the index spells it), per class, the fraction of the frame its
    annotations cover; and each path's COCO image id."""
    coco = json.loads(annotations_path.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {im["id"]: im for im in coco["images"]}
    paths = {i: path_text(os.path.abspath(images_dir / im["file_name"])) for i, im in images.items()}
    cover: dict[str, dict[str, float]] = {p: defaultdict(float) for p in paths.values()}
    for ann in coco["annotations"]:
        image = images[ann["image_id"]]
        cover[paths[ann["image_id"]]][names[ann["category_id"]]] += ann["area"] / (image["width"] * image["height"])
    return cover, {p: i for i, p in paths.items()}


def evaluate(store: IndexStore, cover: dict[str, dict[str, float]], min_fraction: float, min_photos: int,
             min_score: float = DEFAULT_MIN_SCORE) -> list[ClassResult]:
    """Search each class present (>= ``min_fraction``) in >= ``min_photos`` of ``cover``'s photos."""
    counts: dict[str, int] = defaultdict(int)
    for classes in cover.values():
        for name, fraction in classes.items():
            counts[name] += fraction >= min_fraction
    results = []
    for name in sorted(n for n, c in counts.items() if c >= min_photos):
        hits = search(store, [name], limit=1_000_000, min_score=min_score)
        returned = [h.path for h in hits if h.path in cover]  # best first
        positive = {p for p, classes in cover.items() if classes.get(name, 0.0) >= min_fraction}
        neither = {p for p, classes in cover.items() if 0.0 < classes.get(name, 0.0) < min_fraction}
        ranked = [p in positive for p in returned if p not in neither]
        precisions = [sum(ranked[:k + 1]) / (k + 1) for k, hit in enumerate(ranked) if hit]
        results.append(ClassResult(
            name, len(positive), len(returned), sum(p in neither for p in returned),
            sum(p in positive for p in returned),
            sorted(Path(p).name for p in returned if p not in positive and p not in neither),
            sorted(Path(p).name for p in positive - set(returned)), sum(precisions) / len(positive)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--min-fraction", type=float, default=0.02)
    parser.add_argument("--min-photos", type=int, default=2)
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    parser.add_argument("--half", choices=("even", "odd"), default=None)
    parser.add_argument("--verbose", action="store_true", help="list each class's false positives and misses")
    args = parser.parse_args()
    cover, ids = coverage(args.annotations, args.images)
    if args.half is not None:
        parity = 0 if args.half == "even" else 1
        cover = {p: c for p, c in cover.items() if ids[p] % 2 == parity}
    with IndexStore.open(args.index, create=False) as store:
        results = evaluate(store, cover, args.min_fraction, args.min_photos, args.min_score)
    print(f"{len(cover)} photos, {len(results)} classes present (>= {args.min_fraction:.0%}) in "
          f">= {args.min_photos} photos, min_score {args.min_score}")
    print("class            positives  returned  neither  hits  precision  recall     AP")
    for r in results:
        print(f"{r.name:<16} {r.positives:9d}  {r.returned:8d}  {r.neither:7d}  {r.hits:4d}  "
              f"{r.precision:9.3f}  {r.recall:6.3f}  {r.average_precision:5.3f}")
        if args.verbose and (r.false_positives or r.misses):
            print(f"    false positives: {' '.join(r.false_positives) or '-'}; misses: {' '.join(r.misses) or '-'}")
    if results:
        mean_p = sum(r.precision for r in results) / len(results)
        mean_r = sum(r.recall for r in results) / len(results)
        mean_ap = sum(r.average_precision for r in results) / len(results)
        print(f"mean over {len(results)} classes: precision {mean_p:.3f}  recall {mean_r:.3f}  AP {mean_ap:.3f}")


if __name__ == "__main__":
    main()
