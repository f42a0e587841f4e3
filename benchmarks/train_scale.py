"""Benchmark: `photos train` end to end on an index of a million photos, SQLite writes included.

    python -m benchmarks.search_scale --photos 1000000 --index /tmp/ss1m   # once: the index
    python -m benchmarks.train_scale --index /tmp/ss1m

``benchmarks/vectors.py --scale-ops`` times a head's fit and scoring on vectors alone; this
times what a user waits for: :func:`pipeline.custom_labels.train_label` reading the vector
cache, building the features, cross-validating, fitting, scoring every photo and writing
the scores as ``labels`` rows, then `photos search NAME` over them. Works on a copy of
``--index`` (a ``benchmarks.search_scale`` index: real schema, synthetic labels), given:

- a vector cache of synthetic embeddings, one per photo: one of the 1,000 real eval
  embeddings plus Gaussian noise (``--noise`` per dimension; 0.02 keeps a cosine of ~0.8
  with the source, so a photo's "class" is its source photo's; at 0.04, as
  ``benchmarks.vectors`` uses for search, the noise outweighs the photo and a head finds
  no concept at all);
- the classifier's class basis (real last layer, its measured probability scale 13.6),
  saved as a first `photos train` would;
- 10 example photos whose source photos are dogs, turned into empty files so the
  command's existence check passes (only their stored vectors are read);
- the per-concept search scores a `photos index` run adds (once, if the index lacks them).

Prints seconds and peak RSS for the train, how many photos it stored a score for, and
`search` latency for the new label.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from benchmarks.vectors import real_embeddings, real_rows_in
from pipeline.class_features import ClassBasis, class_trees, classifier_layer
from pipeline.concept_scores import ensure_concept_scores
from pipeline.custom_labels import STORED_MIN_SCORE, custom_bases, custom_heads, train_label
from pipeline.search import search
from pipeline.store import IndexStore
from pipeline.vectors import VECTORS_DIR, FaissIndex

MODEL = "efficientnet_lite0"
SCALE = 13.6
"""The probability scale fitted on the 1,000 eval photos' stored scores (class_features.fit_scale)."""


def prepare(index: Path, noise: float, seed: int = 0) -> list[str]:
    """Give ``index`` a vector cache and a class basis; return 10 dog example paths (made files)."""
    store = IndexStore.open(index, create=False)
    try:
        parts = sorted(store.parquet_file_names())
        ensure_concept_scores(store)  # as a run does: an index built with --no-concepts gets them
    finally:
        store.close()
    db = sqlite3.connect(index / "index.sqlite")
    ids, paths = zip(*db.execute("SELECT id, path FROM photos ORDER BY id").fetchall())
    base = real_embeddings()
    rng = np.random.default_rng(seed)
    sources = rng.integers(0, len(base), len(paths))
    vectors = np.empty((len(paths), base.shape[1]), np.float16)
    for i in range(0, len(paths), 100_000):
        chunk = base[sources[i:i + 100_000]] + rng.normal(0, noise, (len(sources[i:i + 100_000]), base.shape[1]))
        vectors[i:i + 100_000] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    examples_dir = index / "examples"
    examples_dir.mkdir(exist_ok=True)
    rows = rng.choice(np.flatnonzero(np.isin(sources, real_rows_in("dog"))), 10, replace=False)
    path_list = list(paths)
    for row in rows:
        path_list[row] = str(examples_dir / f"dog-{row}.jpg")
        Path(path_list[row]).touch()
        db.execute("UPDATE photos SET path = ? WHERE id = ?", (path_list[row], ids[row]))
    db.commit()
    db.close()
    folder = index / VECTORS_DIR
    folder.mkdir(exist_ok=True)
    (folder / "paths.json").write_text(json.dumps(path_list))
    np.save(folder / "vectors.npy", vectors)
    faiss.write_index(FaissIndex.build(vectors).index, str(folder / "faiss.index"))
    (folder / "state.json").write_text(json.dumps({"version": 1, "parts": {p: [0, 0] for p in parts}, "model": MODEL,
                                                   "kind": "ivf", "kind_asked": "auto", "trained": len(paths)}))
    weight, bias = classifier_layer(MODEL)
    basis = ClassBasis(MODEL, weight, bias, SCALE, class_trees(weight))
    store = IndexStore.open(index, create=False)
    try:
        with store.engine.begin() as conn:
            custom_heads.metadata.create_all(conn)
            conn.execute(custom_bases.delete())
            conn.execute(custom_bases.insert().values(model=MODEL, basis=basis.to_bytes(), created_at=time.time()))
    finally:
        store.close()
    return [path_list[r] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="a benchmarks.search_scale index (copied first)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.02)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="photos-train-scale-") as tmp:
        index = Path(tmp) / "index"
        index.mkdir()
        shutil.copy(args.index / "index.sqlite", index / "index.sqlite")
        t = time.perf_counter()
        examples = prepare(index, args.noise)
        print(f"prepared a copy of {args.index} with a vector cache and the class basis in {time.perf_counter() - t:.0f} s")
        store = IndexStore.open(index, create=False)
        try:
            t = time.perf_counter()
            report = train_label(index, store, "our dogs", examples)
            seconds = time.perf_counter() - t
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"train 'our dogs' (10 examples vs {report.negatives:,} unlabelled): {seconds:.1f} s end to end, "
                  f"{report.scored:,} photos scored, {report.matches:,} at >= 0.5; peak RSS {rss:.1f} GB")
            with store.engine.connect() as conn:
                stored = conn.exec_driver_sql("SELECT COUNT(*) FROM labels WHERE label = 'our dogs'").scalar()
            print(f"  {stored:,} scores >= {STORED_MIN_SCORE} written to SQLite")
            times = []
            for _ in range(args.queries):
                t = time.perf_counter()
                search(store, ["our dogs"], limit=20)
                times.append(time.perf_counter() - t)
            print(f"  `search 'our dogs'` (top 20): p50 {statistics.median(times) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms over {args.queries}")
        finally:
            store.close()


if __name__ == "__main__":
    main()
