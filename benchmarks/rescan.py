"""Benchmark: the nightly re-run over an unchanged library.

    python -m benchmarks.rescan --files 100000

Generates N tiny files (they are never decoded), times a first-run scan + plan against
an empty index, records every file in a real index through the store's own commit path
(as a first run would, without running the models), then times a full `index_library`
re-run, which must find nothing to do. Prints seconds and the ratio re-run / first scan.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from models.registry import choose_models, get_spec
from pipeline.indexer import index_library, model_key
from pipeline.plan import plan_run
from pipeline.scan import scan_library
from pipeline.settings import IndexSettings
from pipeline.store import Batch, IndexStore


def make_library(root: Path, files: int, per_folder: int = 1000) -> None:
    for i in range(files):
        folder = root / f"{i // per_folder:04d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True)
        (folder / f"IMG_{i:07d}.jpg").write_bytes(os.urandom(64))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, index = Path(tmp) / "library", Path(tmp) / "index"
        _, made = timed(lambda: make_library(root, args.files))
        print(f"generated {args.files} files in {made:.1f} s")
        name = choose_models(["classify"], {}, gpu=False)["classify"]
        key = str(model_key("classify", get_spec(name)))
        wanted = {"classify": key}

        for threads in (1, 8):
            scanned, seconds = timed(lambda: list(scan_library([str(root)], threads=threads)))
            print(f"scan only, {threads} thread(s): {seconds:.2f} s ({len(scanned) / seconds:,.0f} files/s)")
        plan, first = timed(lambda: plan_run(scan_library([str(root)]), {}, {}, wanted, [str(root)]))
        print(f"first run, scan + plan (empty index): {first:.2f} s, {len(plan.todo)} files to index")

        store = IndexStore.open(index)
        run_id = store.begin_run([str(root)], {"classify": name})
        models = json.dumps({"classify": key})
        rows = [{"path": w.file.path, "size": w.file.size, "mtime_ns": w.file.mtime_ns, "width": 1,
                 "height": 1, "fingerprint": "", "models": models} for w in plan.todo]
        for i in range(0, len(rows), 5000):
            store.commit(run_id, Batch(photos=rows[i : i + 5000], parquet_name=f"bench-{i}.parquet"))
        store.finish_run(run_id, "done")
        store.close()
        (index / "parquet").mkdir()
        for i in range(0, len(rows), 5000):  # the parts the rows point at, so no cleanup runs
            (index / "parquet" / f"bench-{i}.parquet").touch()

        summary, rerun = timed(lambda: index_library(IndexSettings(roots=(str(root),), index_dir=index)))
        assert summary.unchanged == args.files and summary.indexed == 0, summary
        print(f"re-run, unchanged library (full index_library call): {rerun:.2f} s "
              f"({args.files / rerun:,.0f} files/s)")
        print(f"ratio re-run / first-run scan: {rerun / first:.2f}")


if __name__ == "__main__":
    main()
