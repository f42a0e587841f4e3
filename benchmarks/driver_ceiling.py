"""Benchmark: how many result rows per second one driver can commit, whatever the cluster.

    python -m benchmarks.driver_ceiling                 # 20,000 rows, all three tasks
    python -m benchmarks.driver_ceiling --rows 50000 --existing 200000

Every result row comes back to the one driver, which commits it with
:class:`~pipeline.writer.IndexWriter` (a Parquet part plus one SQLite transaction per
``--commit-rows`` photos). However many GPUs a cluster adds, the index grows no faster
than this: the figure is the driver's ceiling. Rows are synthetic but shaped like real
ones: an ImageNet top-5, 0-8 COCO boxes, and a 512 x 384 segmentation mask as the
8-bit PNG the segmenter stores (a few blobs of VOC classes, 2-6 kB), fed to the writer
in blocks of 16 rows as Ray Data delivers them. ``--existing`` first fills the index
with that many photos, since SQLite's B-trees (and the replaced-row lookups) grow with it.

Prints rows/s end to end and the share of time in Parquet writing vs SQLite commits.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from pipeline import writer as writer_module
from pipeline.inference import RESULT_SCHEMA
from pipeline.parquet_sink import parquet_dir
from pipeline.store import IndexStore
from pipeline.writer import IndexWriter, ModelKey

BLOCK = 16
IMAGENET = [f"imagenet class {i}" for i in range(1000)]
COCO = ["person", "bicycle", "car", "dog", "cat", "chair", "cup", "bottle", "tv", "couch", "bird", "boat"]
VOC = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
       "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
KEYS = {"classify": ModelKey("efficientnet_lite0", "efficientnet-lite0-57934424.pth"),
        "detect": ModelKey("fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"),
        "segment": ModelKey("lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_large-d234d4ea.pth")}


def masks(rng: random.Random, count: int) -> list[tuple[bytes, list[int]]]:
    """``count`` PNG masks with 1-3 elliptic blobs of VOC classes, and the classes in each."""
    made = []
    for _ in range(count):
        image = Image.new("L", (512, 384), 0)
        draw = ImageDraw.Draw(image)
        classes = rng.sample(range(1, 21), rng.randint(1, 3))
        for cls in classes:
            x, y = rng.randint(0, 400), rng.randint(0, 280)
            draw.ellipse((x, y, x + rng.randint(40, 250), y + rng.randint(40, 200)), fill=cls)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False)
        made.append((buffer.getvalue(), classes))
    return made


def rows(rng: random.Random, start: int, count: int, pool: list[tuple[bytes, list[int]]]) -> pa.Table:
    records: list[dict[str, Any]] = []
    for n in range(start, start + count):
        probabilities = sorted((rng.random() for _ in range(5)), reverse=True)
        boxes = []
        for _ in range(rng.randint(0, 8)):
            x1, y1 = rng.uniform(0, 3000), rng.uniform(0, 2000)
            x2, y2 = x1 + rng.uniform(10, 1000), y1 + rng.uniform(10, 1000)
            boxes.append({"label": rng.choice(COCO), "score": rng.uniform(0.5, 1), "x1": x1, "y1": y1,
                          "x2": x2, "y2": y2, "area": (x2 - x1) * (y2 - y1) / 12e6})
        mask, classes = pool[n % len(pool)]
        records.append({
            "path": f"/library/{2000 + n % 25}/{n % 12 + 1:02d}/IMG_{n:08d}.jpg",
            "size": 3_500_000 + n, "mtime_ns": 1_700_000_000_000_000_000 + n, "width": 4000, "height": 3000,
            "fingerprint": f"{n:064x}", "tasks": "classify,detect,segment", "previous_path": None,
            "error_stage": "", "error_reason": "",
            "labels": [{"label": rng.choice(IMAGENET), "score": p / sum(probabilities)} for p in probabilities],
            "objects": boxes,
            "segmentation": {"encoding": "png-gray8", "mask_width": 512, "mask_height": 384, "mask": mask,
                             "classes": [{"index": c, "label": VOC[c], "fraction": rng.uniform(0.01, 0.5),
                                          "score": rng.uniform(0.5, 1)} for c in classes]},
        })
    return pa.Table.from_pylist(records, schema=RESULT_SCHEMA)


class Timed:
    """Total seconds spent in one function of a module, while installed."""

    def __init__(self, module: Any, name: str) -> None:
        self.module, self.name, self.seconds = module, name, 0.0
        self.original: Callable[..., Any] = getattr(module, name)

    def __enter__(self) -> Timed:  # noqa: PYI034 - a plain class, not subclassed
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *_: object) -> None:
        setattr(self.module, self.name, self.original)


def blocks(rng: random.Random, start: int, total: int, pool: list[tuple[bytes, list[int]]]) -> Iterator[pa.Table]:
    for offset in range(start, start + total, BLOCK):
        yield rows(rng, offset, min(BLOCK, start + total - offset), pool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--existing", type=int, default=0, help="photos already in the index")
    parser.add_argument("--commit-rows", type=int, default=500)
    args = parser.parse_args()

    rng = random.Random(0)
    np.random.seed(0)
    pool = masks(rng, 64)
    mean_mask = sum(len(m) for m, _ in pool) / len(pool)
    folder = Path(tempfile.mkdtemp(prefix="photos-driver-"))
    try:
        store = IndexStore.open(folder)
        if args.existing:
            fill = IndexWriter(store, parquet_dir(folder), store.begin_run(["/library"], {}), KEYS, 5000)
            for table in blocks(rng, 10_000_000, args.existing, pool):
                fill.add(table)
            fill.flush()
        run_id = store.begin_run(["/library"], {t: k.model for t, k in KEYS.items()})
        writer = IndexWriter(store, parquet_dir(folder), run_id, KEYS, args.commit_rows)
        tables = list(blocks(rng, 0, args.rows, pool))  # made beforehand: the actors make them
        with Timed(writer_module, "write_part") as parquet, Timed(store, "commit") as sqlite:
            started = time.perf_counter()
            for table in tables:
                writer.add(table)
            writer.flush()
            seconds = time.perf_counter() - started
        store.close()
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{args.rows} rows (all three tasks, masks {mean_mask / 1000:.1f} kB on average) into an index "
              f"holding {args.existing} photos, {args.commit_rows} rows per commit:")
        print(f"  {args.rows / seconds:8.0f} rows/s end to end ({seconds:.1f} s)")
        print(f"  Parquet parts {parquet.seconds / seconds:5.0%}, SQLite commits {sqlite.seconds / seconds:5.0%}, "
              f"the rest (batching, rows to records) {1 - (parquet.seconds + sqlite.seconds) / seconds:5.0%}")
        print(f"  index on disk: {size / 1e6:.0f} MB, {size / (args.rows + args.existing) / 1000:.1f} kB per photo")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
