"""Benchmark: images/s per stage, end to end, and against a plain baseline, in one run.

    python -m benchmarks.throughput                               # classification
    python -m benchmarks.throughput --models classify,detect,segment
    python -m benchmarks.throughput --photos 32                   # photos per size
    python -m benchmarks.throughput --models classify,detect,segment \
        --weights-dir ../shared/weights/human-models-3.0.4           # NanoDet + Selfie, real weights
    python -m benchmarks.throughput --models classify,detect,segment \
        --detector fasterrcnn_mobilenet_v3_large_320_fpn --segmenter lraspp_mobilenet_v3_large

Photos are made from the real evaluation photos, upscaled to 4000x3000 (12 MP) and
1600x1200 (2 MP) and saved as JPEG (quality 90), so decoding costs what a camera's
files cost. Models are the CPU defaults; one whose weights are not on this machine runs
with random weights (``models/untrained.py``), which cost the same per image, and is
marked so; TF.js models (NanoDet, Selfie) have no random stand-in and need their files
(``--weights-dir`` or ``PHOTOS_WEIGHTS_DIR``). Every figure comes from this one process, so ratios hold where absolute
speeds drift. Prints:

- decode alone, with and without JPEG draft (one core);
- each model alone (channels-last, as the pipeline runs it) and all of them back to back
  on pre-decoded images, by batch size; forward-pass variants (autograd, no_grad,
  inference_mode, channels_last);
- the plain baseline: per image, a full PIL decode, one call of each model, one SQLite
  insert and commit per result row;
- the full pipeline (`index_library` on local Ray, started beforehand) over ``--copies``
  hard-linked copies of the set: end to end, and in steady state (first to last result);
- committing results one photo per transaction vs in batches of 500;
- peak RSS of the driver and of each Ray worker process.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ray
import torch
from PIL import Image

from models.base import TaskOptions
from models.faces import find_embedder
from models.registry import ModelSpec, default_model, get_spec
from models.tasks import wrapper_for
from models.untrained import save_untrained
from models.weights import load_state_dict, locate_weights
from pipeline.decode import decode_photo
from pipeline.indexer import index_library
from pipeline.inference import ModelPlan, working_size
from pipeline.job import CPU_BATCH
from pipeline.parquet_sink import parquet_dir, read_part
from pipeline.settings import IndexSettings
from pipeline.store import Batch, IndexStore

EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval" / "imagenet-samples"
SIZES = {"12MP": (4000, 3000), "2MP": (1600, 1200)}
MAX_PIXELS = IndexSettings.max_pixels


def make_photos(folder: Path, per_size: int) -> dict[str, list[Path]]:
    sources = sorted(EVAL_DIR.iterdir())[:: max(1, 1000 // per_size)][:per_size]
    made: dict[str, list[Path]] = {}
    for label, size in SIZES.items():
        (folder / label).mkdir(parents=True)
        made[label] = []
        for src in sources:
            path = folder / label / f"{src.stem}.jpg"
            Image.open(src).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
            made[label].append(path)
    return made


def rate(n: int, fn: Callable[[], object], repeat: int = 1) -> float:
    """Images per second of ``fn`` processing ``n`` images (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def full_decode(path: Path, image_size: int) -> np.ndarray:
    """What a plain loop does: decode every pixel, then resize."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    scale = image_size / min(w, h)
    return np.array(rgb.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR))


class PeakRss:
    """Samples the peak resident memory of every Ray worker process while running."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            for proc in Path("/proc").iterdir():
                try:
                    name = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
                    if not name.startswith("ray::MapWorker") and not name.startswith("ray::MapBatches"):
                        continue
                    rss = next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                               if line.startswith("VmRSS:"))
                except (OSError, StopIteration, UnicodeDecodeError):
                    continue
                key = name.split("(")[0].strip()
                self.peaks[key] = max(self.peaks.get(key, 0), rss)


def pick_specs(tasks: tuple[str, ...], folder: Path, weights_dir: Path | None = None,
               names: dict[str, str | None] | None = None) -> dict[str, ModelSpec]:
    """Per task the named model, else the CPU default, with its weights in ``folder``:
    the real files (linked from ``weights_dir``, the environment's folder or the hub
    cache) where they are here, else random weights saved there."""
    specs = {}
    folder.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        spec = get_spec((names or {}).get(task) or default_model(task, gpu=False))
        found = locate_weights(spec, weights_dir)
        if found is not None:
            files = [found.parent / name for name in (found.name, *spec.companion_files)]
            if spec.load_file is not None:  # several files (faces: MTCNN's three and FaceRes beside them)
                files = [f for f in found.parent.iterdir() if f.is_file()]
                embedder = find_embedder(found.parent)
                files += [embedder, embedder.with_suffix(".bin")] if embedder else []
            for file in files:
                if not (folder / file.name).exists():
                    (folder / file.name).symlink_to(file.resolve())
            specs[task] = spec
        elif spec.build_from_files is not None:
            raise SystemExit(f"{spec.name}: its TF.js files ({spec.file_name} and its .bin) are needed: "
                             "give --weights-dir (random weights cannot stand in for a TF.js graph)")
        else:
            specs[task] = save_untrained(spec.name, folder)
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=16, help="photos per size (12 MP and 2 MP)")
    parser.add_argument("--batch-size", type=int, default=CPU_BATCH)
    parser.add_argument("--models", default="classify", help="tasks, comma-separated")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="folder with real weight files (else PHOTOS_WEIGHTS_DIR, the hub cache)")
    for task in ("classifier", "detector", "segmenter"):
        parser.add_argument(f"--{task}", default=None, help=f"{task} model name (default: the CPU default)")
    parser.add_argument("--copies", type=int, default=4,
                        help="the pipeline indexes this many hard-linked copies of the set, so "
                             "start-up (actors, model load) weighs less")
    args = parser.parse_args()
    tasks = tuple(args.models.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights"
        specs = pick_specs(tasks, weights, args.weights_dir,
                           {"classify": args.classifier, "detect": args.detector, "segment": args.segmenter})
        size = working_size([ModelPlan(t, s) for t, s in specs.items()], None)
        photos = make_photos(Path(tmp) / "library", args.photos)
        every = [p for paths in photos.values() for p in paths]
        n = len(every)
        print(f"{n} photos ({args.photos} x 12 MP, {args.photos} x 2 MP), decoded to {size} px; "
              f"torch threads {torch.get_num_threads()}, batch {args.batch_size}")
        for task, spec in specs.items():
            print(f"  {task:<9} {spec.name:<38} {spec.weights_name}")

        print("\ndecode alone, one core                          img/s")
        for label, paths in photos.items():
            draft = rate(len(paths), lambda: [decode_photo(str(p), size, MAX_PIXELS) for p in paths])
            full = rate(len(paths), lambda: [full_decode(p, size) for p in paths])
            print(f"  {label:<5} full decode + resize                 {full:8.1f}")
            print(f"  {label:<5} with JPEG draft (what the pipeline does) {draft:6.1f}   x{draft / full:.1f}")
        decoded = [decode_photo(str(p), size, MAX_PIXELS) for p in every]
        images, sizes = [d.pixels for d in decoded], [(d.width, d.height) for d in decoded]

        wrappers = []
        print("\nmodel alone on pre-decoded images               img/s")
        for task, spec in specs.items():
            wrapper = wrapper_for(task, spec)(spec, load_state_dict(spec, weights, offline=True), "cpu", TaskOptions())
            wrapper.load()  # channels-last, as the pipeline runs it
            wrapper.predict(images[:2], sizes[:2])  # warm-up
            for bs in sorted({1, 4, 8, 32, args.batch_size}):
                r = rate(n, lambda: [wrapper.predict(images[i:i + bs], sizes[i:i + bs]) for i in range(0, n, bs)])
                print(f"  {spec.name:<38} batch {bs:>3}  {r:8.1f}")
            wrappers.append(wrapper)
        bs = args.batch_size
        models_rate = rate(n, lambda: [w.predict(images[i:i + bs], sizes[i:i + bs])
                                       for w in wrappers for i in range(0, n, bs)])
        print(f"  all models back to back, batch {bs:<3}             {models_rate:8.1f}")
        if wrappers[0].spec.build_from_files is None:  # its own preprocess and a plain forward
            _variants(wrappers[0], images, bs)

        print("\nplain baseline: full decode, one call per model, one SQLite commit per row")
        base_rate = _baseline(wrappers, every[: max(8, n // 4)], size, Path(tmp) / "baseline.sqlite")
        print(f"  {base_rate:8.1f} img/s")

        library = hard_linked_copies(Path(tmp) / "library", Path(tmp) / "copies", args.copies)
        print(f"\nfull pipeline: index_library on local Ray (2 CPUs, Ray already started), "
              f"{n * args.copies} photos")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        clock = _Clock()
        with PeakRss() as peaks:
            settings = IndexSettings(roots=(str(library),), index_dir=Path(tmp) / "index",
                                     tasks=tasks, batch_size=bs, weights_dir=weights)
            start = time.perf_counter()
            summary = index_library(settings, progress=clock, specs=specs)
            end_to_end = summary.indexed / (time.perf_counter() - start)
        assert summary.indexed == n * args.copies, summary
        pipeline_rate = clock.steady_rate()
        print(f"  end to end (actors and models start, scan, decode, infer, commit) {end_to_end:8.1f} img/s")
        print(f"  steady state (from the first results to the last)                {pipeline_rate:8.1f} img/s")
        print(f"  start-up (plan to first results)                                 {clock.startup():8.1f} s")
        _commit_batching(Path(tmp) / "index")
        ray.shutdown()

        print("\nratios")
        print(f"  pipeline / models back to back on pre-decoded images  {pipeline_rate / models_rate:5.2f}"
              f"   (end to end {end_to_end / models_rate:.2f})")
        print(f"  pipeline / plain baseline                             {pipeline_rate / base_rate:5.2f}"
              f"   (end to end {end_to_end / base_rate:.2f})")

        print("\npeak RSS")
        driver_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  driver (this process, incl. the in-process model runs above) {driver_mb:6.0f} MB")
        for name, kb in sorted(peaks.peaks.items()):
            print(f"  {name:<60} {kb / 1024:6.0f} MB")


def hard_linked_copies(library: Path, target: Path, copies: int) -> Path:
    """``copies`` hard-linked copies of ``library``'s JPEGs (distinct paths, same bytes, so
    every copy is indexed); plain copies where ``target`` is on another file system."""
    for i in range(copies):
        for photo in library.rglob("*.jpg"):
            link = target / f"copy{i}" / photo.relative_to(library)
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(photo, link)
            except OSError:  # another file system: a copy costs disk, not the figures
                shutil.copyfile(photo, link)
    return target


class _Clock:
    """Progress listener that notes when results arrive."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def planned(self, plan, models) -> None:
        self.marks.append((time.perf_counter(), 0))

    def skipped(self, tasks) -> None:
        pass

    def substituted(self, tasks) -> None:
        pass

    def advanced(self, photos: int) -> None:
        self.marks.append((time.perf_counter(), self.marks[-1][1] + photos))

    def startup(self) -> float:
        return self.marks[1][0] - self.marks[0][0]

    def steady_rate(self) -> float:
        (t_first, n_first), (t_last, n_last) = self.marks[1], self.marks[-1]
        return (n_last - n_first) / (t_last - t_first) if t_last > t_first else float("nan")


def _variants(wrapper, images: list[np.ndarray], batch_size: int) -> None:
    """Forward pass only, on the first model: autograd, no_grad, inference_mode, channels_last."""
    batch = torch.stack([wrapper.preprocess(wrapper.to_tensor(im)) for im in images[:batch_size]])
    model = wrapper.model.to(memory_format=torch.contiguous_format)

    def forward(context, x) -> None:
        with context():
            model(x)

    results = {
        "autograd": rate(len(batch), lambda: forward(torch.enable_grad, batch), repeat=3),
        "no_grad": rate(len(batch), lambda: forward(torch.no_grad, batch), repeat=3),
        "inference_mode": rate(len(batch), lambda: forward(torch.inference_mode, batch), repeat=3),
    }
    model.to(memory_format=torch.channels_last)
    last = batch.contiguous(memory_format=torch.channels_last)
    results["inference_mode + channels_last"] = rate(len(batch), lambda: forward(torch.inference_mode, last), repeat=3)
    print(f"  {wrapper.spec.name} forward only, batch {len(batch)}: "
          + ", ".join(f"{k} {v:.1f}" for k, v in results.items()) + " img/s")


def _baseline(wrappers, paths: list[Path], size: int, db_path: Path) -> float:
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE results (path TEXT, label TEXT, score REAL)")

    def loop() -> None:
        for path in paths:
            pixels = full_decode(path, size)
            with Image.open(path) as im:
                original = im.size
            for wrapper in wrappers:
                with torch.no_grad():
                    record = wrapper.predict([pixels], [original])[0]
                for label, score in wrapper.labels_of(record):
                    db.execute("INSERT INTO results VALUES (?, ?, ?)", (str(path), label, score))
                    db.commit()

    result = rate(len(paths), loop)
    db.close()
    return result


def _commit_batching(index: Path) -> None:
    """Re-commit the pipeline's real results: one photo per transaction vs 500."""
    parts = sorted(parquet_dir(index).glob("*.parquet"))
    rows = [r for p in parts for r in read_part(parquet_dir(index), p.name).to_pylist()]
    photo_rows = [{**{k: r[k] for k in ("size", "mtime_ns", "width", "height", "fingerprint")},
                   "path": f"{r['path']}#{i}", "models": "{}"} for i in range(20) for r in rows]
    for per_commit in (1, 500):
        with tempfile.TemporaryDirectory() as tmp:
            store = IndexStore.open(Path(tmp))
            run_id = store.begin_run([], {})
            r = rate(len(photo_rows), lambda: [
                store.commit(run_id, Batch(photos=photo_rows[i:i + per_commit], parquet_name=f"p{i}.parquet"))
                for i in range(0, len(photo_rows), per_commit)])
            store.close()
        print(f"  SQLite commits, {per_commit:>3} photo(s) per transaction: {r:10.0f} photos/s")


if __name__ == "__main__":
    main()
