"""Benchmark: how long a small `photos index` takes to start, end to end, on the real CLI.

    python -m benchmarks.startup                      # 16 photos, classify, 3 runs each way
    python -m benchmarks.startup --photos 64 --runs 5
    python -m benchmarks.startup --baseline /tmp/main     # also time another checkout's CLI

Each run is a fresh `photos index` process (a new Python, nothing imported or started
beforehand) on copies of ``../shared/eval`` photos into a new index, as a user runs it.
Runs alternate between the two ways a small run can go, so both see the same machine
load:

- **in-process** (the default below ``--ray-min-photos``): decode in a child process,
  models in the CLI's process, no Ray;
- **ray** (``--ray-min-photos 0``, what every run did before): start a local Ray, plan a
  Ray Data pipeline, start a model actor.

- **baseline** (with ``--baseline DIR``): the CLI of another checkout of this project,
  e.g. ``git archive <commit> | tar -x -C DIR`` of the code before a change, run the same
  way, for a before/after measured under the same load.

For each it prints the median (and min, max) of: seconds from process start to the
first progress update (the bar's first photo), seconds end to end (process exit), and,
once, an unchanged re-run (which never starts Ray).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval" / "imagenet-samples"
ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(rb"\b([1-9]\d*)/\d+ \[")
"""A tqdm update with at least one photo done: "  4/16 [00:03<...]"."""


def run_cli(args: list[str], root: Path = ROOT) -> tuple[float | None, float, int, bytes]:
    """(seconds to the first progress update, seconds to exit, exit code, stderr) of one run
    of the CLI of the checkout at ``root`` (also the working directory: ``python -c`` puts
    it first on ``sys.path``)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "from jobs.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=root)
    assert proc.stderr is not None
    first: float | None = None
    err = b""
    while True:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        err += chunk
        if first is None and PROGRESS.search(err):
            first = time.perf_counter() - started
    code = proc.wait()
    return first, time.perf_counter() - started, code, err


def describe(values: list[float]) -> str:
    return f"{statistics.median(values):5.1f} s (min {min(values):.1f}, max {max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="classify")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout's CLI to time too")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="photos-startup-"))
    try:
        library = base / "photos"
        library.mkdir()
        for src in sorted(EVAL_DIR.iterdir())[:: max(1, 1000 // args.photos)][: args.photos]:
            shutil.copy(src, library / src.name)
        ways: dict[str, tuple[list[str], Path]] = {"in-process": ([], ROOT), "ray": (["--ray-min-photos", "0"], ROOT)}
        if args.baseline:
            ways["baseline"] = ([], args.baseline.resolve())
        first: dict[str, list[float]] = {w: [] for w in ways}
        total: dict[str, list[float]] = {w: [] for w in ways}
        for run in range(args.runs):
            for way, (extra, root) in ways.items():
                index = base / f"index-{way}-{run}"
                started, seconds, code, err = run_cli(
                    ["index", str(library), "--index", str(index), "--models", args.models, *extra], root)
                if code != 0 or started is None:
                    raise SystemExit(f"{way} run failed (exit {code}):\n{err.decode(errors='replace')[-2000:]}")
                first[way].append(started)
                total[way].append(seconds)
                print(f"run {run + 1} {way:10s} first progress {started:5.1f} s, end to end {seconds:5.1f} s",
                      flush=True)
        _, rerun, code, _ = run_cli(["index", str(library), "--index", str(base / "index-in-process-0"),
                                     "--models", args.models])
        print(f"\n{args.photos} photos, --models {args.models}, {os.cpu_count()} CPUs, median of {args.runs}:")
        for way in ways:
            print(f"  {way:10s} first progress {describe(first[way])}   end to end {describe(total[way])}")
        for way in ways:
            if way != "in-process":
                ratio = statistics.median(total[way]) / statistics.median(total["in-process"])
                print(f"  end to end, {way} / in-process: {ratio:.2f}x")
        print(f"  unchanged re-run (no Ray): {rerun:.1f} s (exit {code})")
        if args.baseline:
            _, old, code, _ = run_cli(["index", str(library), "--index", str(base / "index-baseline-0"),
                                       "--models", args.models], args.baseline.resolve())
            print(f"  unchanged re-run, baseline: {old:.1f} s (exit {code})")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
