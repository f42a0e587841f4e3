"""Which vector index for `photos similar` and `photos duplicates`: measured, not guessed.

Synthetic unit vectors shaped like real embeddings: each is one of the 1,000 real
EfficientNet-Lite0 embeddings of ``../shared/eval/imagenet-samples`` plus Gaussian noise,
renormalised (so the set has the clustered structure of photo embeddings; uniform random
vectors would flatter exact search and punish IVF unfairly). For each size and library:
build time, single-query latency p50/p95 (the `photos similar` case), recall@10 against
exact search, and the index's memory.

    python -m benchmarks.vectors --sizes 10000,100000,1000000
    python -m benchmarks.vectors --sizes 1000000 --scale-ops   # similar, duplicates, train, nightly refresh at 10^6
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from pipeline.vectors import FaissIndex

EMBEDDINGS_CACHE = Path("/tmp/photos-bench-imagenet-embeddings.npy")
K = 10


def real_embeddings() -> np.ndarray:
    """The 1,000 eval photos' embeddings (cached in /tmp; about 40 s to compute on 2 cores)."""
    if EMBEDDINGS_CACHE.exists():
        return np.load(EMBEDDINGS_CACHE)
    from pipeline.embeddings import embed_files

    vectors = embed_files([str(p) for p in _eval_photos()]).astype(np.float32)
    np.save(EMBEDDINGS_CACHE, vectors)
    return vectors


def real_rows_in(concept: str) -> np.ndarray:
    """The rows of :func:`real_embeddings` whose eval photo is of ``concept`` (a vocabulary
    word): example photos that share a concept, as a user's do."""
    from benchmarks.embedding_eval import label_of
    from pipeline import vocabulary

    labels = vocabulary.expand(concept)
    return np.flatnonzero([label_of(p) in labels for p in _eval_photos()])


def _eval_photos() -> list[Path]:
    return sorted((Path(__file__).resolve().parents[2] / "shared" / "eval" / "imagenet-samples").iterdir())


def synthetic(n: int, seed: int = 0, noise: float = 0.04) -> np.ndarray:
    """``n`` unit vectors around the real embeddings (float32, built in chunks)."""
    base = real_embeddings()
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        chunk = base[rng.integers(0, len(base), m)] + rng.normal(0, noise, (m, base.shape[1])).astype(np.float32)
        out[i:i + m] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def latencies(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[np.ndarray, float, float]:
    found, times = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(search(q[None, :]))
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return np.concatenate(found), float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact)]))


def numpy_topk(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def search(q: np.ndarray) -> np.ndarray:
        scores = (x @ q.T).ravel()
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])][None, :]
    return search


def build_faiss(kind: str, x: np.ndarray) -> Any:
    d = x.shape[1]
    index: Any
    if kind == "faiss-flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    else:
        return FaissIndex.build(x, kind="ivf").index
    index.add(x)
    return index


def _searcher(index: Any, k: int) -> Callable[[np.ndarray], np.ndarray]:
    def search(q: np.ndarray) -> np.ndarray:
        return index.search(q, k)[1]
    return search


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--only", default="numpy,faiss-flat,ivf,faiss-hnsw")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--scale-ops", action="store_true", help="time the commands' work at each size instead")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="HNSW builds above this take too long on 2 cores")
    args = parser.parse_args()
    faiss.omp_set_num_threads(2)
    print(f"faiss {faiss.__version__}, threads 2")
    if args.scale_ops:
        for n in (int(s) for s in args.sizes.split(",")):
            scale_ops(n, args.queries)
        return
    print("| vectors | library | build s | query p50 ms | query p95 ms | recall@10 | memory MB |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        x = synthetic(n)
        queries = synthetic(args.queries, seed=2)
        exact_index = faiss.IndexFlatIP(x.shape[1])
        exact_index.add(x)
        _, exact = exact_index.search(queries, K)
        del exact_index
        for kind in args.only.split(","):
            if kind == "faiss-hnsw" and n > args.hnsw_max:
                print(f"| {n:,} | {kind} | not run (build > 10 min on 2 cores, extrapolated) | | | | |")
                continue
            gc.collect()
            t = time.perf_counter()
            if kind == "numpy":
                search = numpy_topk(x)
                memory = x.nbytes
            else:
                index = build_faiss(kind, x)
                memory = len(faiss.serialize_index(index)) if n <= 100_000 else _index_bytes(index, x)
                if kind == "ivf":
                    index.nprobe = FaissIndex.default_nprobe(index.nlist)
                if kind == "faiss-hnsw":
                    index.hnsw.efSearch = 64
                search = _searcher(index, K)
            build = time.perf_counter() - t
            found, p50, p95 = latencies(search, queries)
            print(f"| {n:,} | {kind} | {build:.1f} | {p50:.2f} | {p95:.2f} | {recall(found, exact):.3f} | "
                  f"{memory / 2**20:,.0f} |", flush=True)
        del x
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB")


def _index_bytes(index: faiss.Index, x: np.ndarray) -> int:
    """Vectors' bytes as the index stores them (serialising a 5 GB index just to measure it is wasteful)."""
    if isinstance(index, faiss.IndexFlat):
        return x.nbytes
    if isinstance(index, faiss.IndexIVF):
        return index.ntotal * (index.code_size + 8) + index.nlist * x.shape[1] * 4
    return x.nbytes



def plant_duplicates(x: np.ndarray, share: float = 0.01, noise: float = 0.012) -> set[tuple[int, int]]:
    """Overwrite ``share`` of the rows with noisy copies of others (cosine ~0.9, like a
    resized or recompressed photo); return the (i, j) pairs planted."""
    rng = np.random.default_rng(5)
    m = int(len(x) * share)
    rows = rng.choice(len(x), 2 * m, replace=False)
    originals, copies = rows[:m], rows[m:]
    noisy = x[originals] + rng.normal(0, noise, (m, x.shape[1])).astype(np.float32)
    x[copies] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return {(int(min(a, b)), int(max(a, b))) for a, b in zip(originals, copies)}


def scale_ops(n: int, queries: int = 200) -> None:
    """At ``n`` vectors, what the commands do: `similar` latency (incl. loading the cache from
    disk), a full duplicates pass, and a custom label's train + apply-to-all, with memory."""
    import tempfile

    from pipeline.class_features import FEATURES, ClassBasis, class_trees, classifier_layer
    from pipeline.custom_labels import CHUNK, SAMPLED_NEGATIVES, STORED_MIN_SCORE
    from pipeline.duplicates import _IVF_CELLS, NEAR_THRESHOLD
    from pipeline.label_heads import Head, fit_unlabelled

    def rss_gb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    x = synthetic(n)
    planted = plant_duplicates(x)
    t = time.perf_counter()
    index = FaissIndex.build(x)
    print(f"{n:,} vectors: {index.kind} index built in {time.perf_counter() - t:.1f} s, peak RSS {rss_gb():.1f} GB")
    if index.kind == "ivf":  # a nightly run: one part of 1,000 photos dropped, one of 1,000 new ones added
        fresh = synthetic(1000, seed=7)
        moved = np.concatenate([np.full(1000, -1, np.int64), np.arange(n - 1000)])
        t = time.perf_counter()
        index.updated(moved, fresh, np.arange(n - 1000, n))
        print(f"  nightly refresh (1,000 photos dropped, 1,000 added): index updated in {time.perf_counter() - t:.1f} s "
              f"(a full build is the line above), peak RSS {rss_gb():.1f} GB")
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = str(Path(tmp) / "faiss.index")
        t = time.perf_counter()
        faiss.write_index(index.index, path)
        print(f"  cache written in {time.perf_counter() - t:.1f} s ({Path(path).stat().st_size / 2**20:,.0f} MB)")
        for name, flags in (("read", 0), ("mmap", faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)):
            t = time.perf_counter()
            loaded = FaissIndex(faiss.read_index(path, flags))
            if isinstance(loaded.index, faiss.IndexIVF):
                loaded.index.nprobe = FaissIndex.default_nprobe(loaded.index.nlist)
            opened = time.perf_counter() - t
            _, p50, p95 = latencies(_searcher(loaded.index, 21), synthetic(queries, seed=3))
            print(f"  `similar` ({name} the cache: {opened:.2f} s): query p50 {p50:.2f} ms, p95 {p95:.2f} ms")
            del loaded
    t = time.perf_counter()
    pairs = index.pairs_within(x, NEAR_THRESHOLD, cells=_IVF_CELLS)
    print(f"  duplicates pass (pairs >= {NEAR_THRESHOLD} within each vector's {_IVF_CELLS} nearest cells): "
          f"{time.perf_counter() - t:.1f} s, {len(pairs):,} pairs, planted pairs found "
          f"{len(planted & {(i, j) for i, j, _ in pairs}):,}/{len(planted):,}, peak RSS {rss_gb():.1f} GB")
    if n <= 200_000:  # check against exact all pairs where that is affordable
        exact = FaissIndex.build(x, kind="flat").pairs_within(x, NEAR_THRESHOLD)
        hits = len({(i, j) for i, j, _ in pairs} & {(i, j) for i, j, _ in exact})
        print(f"  duplicates pass recall vs exact: {hits}/{len(exact)}")
    rng = np.random.default_rng(4)
    base = real_embeddings()
    positives = base[rng.choice(real_rows_in("dog"), 10, replace=False)]
    negatives = x[rng.choice(n, SAMPLED_NEGATIVES, replace=False)]
    weight, bias = classifier_layer("efficientnet_lite0")
    # 13.6: the probability scale fitted on the 1,000 eval photos' stored scores (class_features.fit_scale)
    basis = ClassBasis("efficientnet_lite0", weight, bias, 13.6, class_trees(weight))
    y = np.array([1] * 10 + [0] * SAMPLED_NEGATIVES)
    t = time.perf_counter()
    features, classes = basis.training_features(np.concatenate([positives, negatives]), class_sets=True)
    fold, _, _ = fit_unlabelled(features, y, classes=classes)
    assert "classes" in fold, "the dog examples' class set covers most of the sample"
    head = Head("bench", "", [{**fold, "features": FEATURES}], basis)
    trained = time.perf_counter() - t
    t = time.perf_counter()
    scores = np.concatenate([head.scores(x[i:i + CHUNK]) for i in range(0, n, CHUNK)])
    print(f"  train (features, cross-validation + fit, 10 vs {SAMPLED_NEGATIVES}): {trained:.1f} s; apply to all {n:,}: "
          f"{time.perf_counter() - t:.1f} s ({int(np.sum(scores >= STORED_MIN_SCORE)):,} scores >= {STORED_MIN_SCORE} to store)")
    print(f"  peak RSS {rss_gb():.1f} GB")


if __name__ == "__main__":
    main()
