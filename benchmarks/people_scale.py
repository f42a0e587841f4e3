"""Grouping at library scale: 100,000 synthetic faces through ``pipeline/people.py``.

    PYTHONPATH=. python benchmarks/people_scale.py              # 100,000 faces
    PYTHONPATH=. python benchmarks/people_scale.py --faces 20000

Synthetic faces mimic FaceRes embeddings as measured on ../shared/eval/faces (1024-d,
L2-normalised; cosine similarity ~0.7 within a person, ~0.4 between people, from a
shared component): face = normalise(a*common + b*person + e*noise) with a^2 = 0.4,
b^2 = 0.3, e^2 = 0.3. People have Zipf-like sizes (a few with thousands of faces, most
with a handful), like a family library. Reports time and peak memory of (1) the first
pass over an index where no face has a person yet, (2) a nightly pass adding 1% new
faces to the people found, and the pairwise precision/recall on a sample.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from pipeline.people import GroupingSettings, group_faces, pairwise_scores


def synthetic(n: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = np.maximum(1, (n / np.arange(1, n + 1) ** 1.1 / np.sum(1 / np.arange(1, n + 1) ** 1.1))).astype(int)
    sizes = sizes[np.cumsum(sizes) <= n]
    who = np.repeat(np.arange(len(sizes)), sizes)
    who = np.concatenate([who, np.arange(len(sizes), len(sizes) + n - len(who))])  # the rest: one face each
    common = rng.standard_normal(dims).astype(np.float32)
    common /= np.linalg.norm(common)
    people = rng.standard_normal((who.max() + 1, dims)).astype(np.float32)
    people /= np.linalg.norm(people, axis=1, keepdims=True)
    noise = rng.standard_normal((n, dims)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x = np.sqrt(0.4) * common + np.sqrt(0.3) * people[who] + np.sqrt(0.3) * noise
    return x / np.linalg.norm(x, axis=1, keepdims=True), who


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=1024)
    args = ap.parse_args()
    extra = max(1, args.faces // 100)
    every, every_who = synthetic(args.faces + extra, args.dims, 0)
    order = np.random.default_rng(2).permutation(len(every))  # the newest 1% arrive on night 2
    x, who = every[order[: args.faces]], every_who[order[: args.faces]]
    new = every[order[args.faces:]]
    print(f"{len(x)} faces of {who.max() + 1} people ({np.sum(np.bincount(who) >= 2)} with >= 2 faces), "
          f"{args.dims}-d; memory before grouping {peak_mb():.0f} MB")
    settings = GroupingSettings()
    t = time.perf_counter()
    first = group_faces(x, [-1] * len(x), [False] * len(x), settings)
    took = time.perf_counter() - t
    label = np.full(len(x), -1)
    for g, members in enumerate(first.new_people):
        label[members] = g
    sample = np.random.default_rng(1).choice(len(x), min(len(x), 4000), replace=False)
    p, r = pairwise_scores(list(who[sample]), list(label[sample]))
    print(f"first pass: {took:.1f} s, {len(first.new_people)} people, peak memory {peak_mb():.0f} MB; "
          f"pairwise precision {p:.3f} recall {r:.3f} (4,000-face sample)")
    both = np.vstack([x, new])
    t = time.perf_counter()
    nightly = group_faces(both, list(label) + [-1] * len(new), [False] * len(both), settings)
    print(f"nightly pass (+{len(new)} faces): {time.perf_counter() - t:.1f} s, {len(nightly.assigned)} joined "
          f"people, {len(nightly.new_people)} new people; peak memory {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
