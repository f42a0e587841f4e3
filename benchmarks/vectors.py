"""Which vector index for `photos similar` and `photos duplicates`: measured, not guessed.

Synthetic unit vectors shaped like real embeddings: each is one of the 1,000 real
EfficientNet-Lite0 embeddings of ``../shared/eval/imagenet-samples`` plus Gaussian noise,
renormalised (so the set has the clustered structure of photo embeddings; uniform random
vectors would flatter exact search and punish IVF unfairly). For each size and library:
build time, single-query latency p50/p95 (the `photos similar` case), recall@10 against
exact search, and the index's memory.

    python -m benchmarks.vectors --sizes 10000,100000,1000000
    python -m benchmarks.vectors --sizes 1000000 --only ivf-fp16 --scale-ops   # + duplicates & train at 1M
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from pipeline.vectors import FaissIndex, ivf_nlist

EMBEDDINGS_CACHE = Path("/tmp/photos-bench-imagenet-embeddings.npy")
K = 10


def real_embeddings() -> np.ndarray:
    """The 1,000 eval photos' embeddings (cached in /tmp; about 40 s to compute on 2 cores)."""
    if EMBEDDINGS_CACHE.exists():
        return np.load(EMBEDDINGS_CACHE)
    from pipeline.embeddings import embed_files

    photos = sorted((Path(__file__).resolve().parents[2] / "shared" / "eval" / "imagenet-samples").iterdir())
    vectors = embed_files([str(p) for p in photos]).astype(np.float32)
    np.save(EMBEDDINGS_CACHE, vectors)
    return vectors


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


def build_faiss(kind: str, x: np.ndarray) -> faiss.Index:
    d = x.shape[1]
    if kind == "faiss-flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    else:
        return FaissIndex.build(x, kind="ivf").index
    index.add(x)
    return index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--only", default="numpy,faiss-flat,ivf,faiss-hnsw")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="HNSW builds above this take too long on 2 cores")
    args = parser.parse_args()
    faiss.omp_set_num_threads(2)
    print(f"faiss {faiss.__version__}, threads 2")
    print("| vectors | library | build s | query p50 ms | query p95 ms | recall@10 | memory MB |")
    print("|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        x = synthetic(n)
        rng = np.random.default_rng(1)
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
                search = (lambda ix: lambda q: ix.search(q, K)[1])(index)
            build = time.perf_counter() - t
            found, p50, p95 = latencies(search, queries)
            print(f"| {n:,} | {kind} | {build:.1f} | {p50:.2f} | {p95:.2f} | {recall(found, exact):.3f} | "
                  f"{memory / 2**20:,.0f} |", flush=True)
            del rng
            rng = np.random.default_rng(1)
            index = None
        del x
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB")


def _index_bytes(index: faiss.Index, x: np.ndarray) -> int:
    """Vectors' bytes as the index stores them (serialising a 5 GB index just to measure it is wasteful)."""
    if isinstance(index, faiss.IndexFlat):
        return x.nbytes
    if isinstance(index, faiss.IndexIVF):
        return index.ntotal * (index.code_size + 8) + index.nlist * x.shape[1] * 4
    return x.nbytes


if __name__ == "__main__":
    main()
