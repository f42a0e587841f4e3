"""Benchmark: `photos index` end to end at several --gpus-per-actor values, on one machine.

    python -m benchmarks.gpu_share --weights-dir ../shared/weights/human-models-3.0.4 \\
        --copies 60 1.0 0.25 0.125

Indexes ``--copies`` hard-linked copies of the coco64 photos (distinct paths, so every
copy is indexed) into a fresh index per value, through the real CLI in a subprocess, so
each run starts its own Ray as a user's run does. The models are pinned to the three
light CPU defaults (``pipeline/job.py`` LIGHT_MODELS), whatever the hub cache holds. Prints photos/s per value, start-up
included, the ratio to the first value (the baseline), and whether `photos search` finds
the same photos for a few words in every index. Needs a CUDA GPU: on a CPU-only machine
the value has no effect and the script says so.

Measured on an H200 with 16 CPUs (60 copies, 1,080 photos, the CPU defaults on the GPU):
1.0 -> 21.6 photos/s, 0.25 -> 30.1 (x1.39), 0.125 -> 32.9 (x1.52), same search results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.throughput import hard_linked_copies

COCO = Path(__file__).resolve().parents[2] / "shared" / "eval" / "coco64" / "images"
CLI = [sys.executable, "-c", "from jobs.cli import main; main()"]
WORDS = ("person", "dog", "car", "cup", "umbrella", "bowl")


def index_rate(library: Path, index: Path, photos: int, share: str, weights_dir: Path | None) -> float:
    extra = ["--weights-dir", str(weights_dir)] if weights_dir else []
    start = time.perf_counter()
    run = subprocess.run([*CLI, "index", str(library), "--index", str(index), "--gpus-per-actor", share,
                          "--classifier", "efficientnet_lite0", "--detector", "nanodet", "--segmenter", "selfie",
                          "--strict-models", *extra], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"photos index failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return photos / (time.perf_counter() - start)


def found(index: Path, word: str) -> set[str]:
    out = subprocess.run([*CLI, "search", word, "--index", str(index), "--json", "--limit", "1000000"],
                         check=True, capture_output=True, text=True)
    return {hit["path"] for hit in json.loads(out.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shares", nargs="+", help="--gpus-per-actor values; the first is the baseline")
    parser.add_argument("--copies", type=int, default=60)
    parser.add_argument("--weights-dir", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: --gpus-per-actor changes nothing on a CPU-only machine")
    with tempfile.TemporaryDirectory() as tmp:
        library = hard_linked_copies(COCO, Path(tmp) / "library", args.copies)
        photos = len(list(COCO.glob("*.jpg"))) * args.copies
        rates, hits = {}, {}
        for share in args.shares:
            index = Path(tmp) / f"index-{share}"
            rates[share] = index_rate(library, index, photos, share, args.weights_dir)
            hits[share] = {word: found(index, word) for word in WORDS}
            print(f"--gpus-per-actor {share:<6} {rates[share]:7.1f} photos/s end to end "
                  f"(x{rates[share] / rates[args.shares[0]]:.2f})", flush=True)
        same = all(hits[s] == hits[args.shares[0]] for s in args.shares)
        print(f"{photos} photos; search results for {', '.join(WORDS)}: {'the same' if same else 'DIFFER'} in every index")


if __name__ == "__main__":
    main()
