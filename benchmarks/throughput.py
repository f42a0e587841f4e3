"""Benchmark: images/s per stage, end to end, and against a plain baseline, in one run.

    python -m benchmarks.throughput                 # 16 x 12 MP + 16 x 2 MP JPEGs
    python -m benchmarks.throughput --photos 32     # per size

Photos are made from the real evaluation photos, upscaled to 4000x3000 (12 MP) and
1600x1200 (2 MP) and saved as JPEG (quality 90), so decoding costs what a camera's
files cost. Every figure comes from this one process on this machine, so the ratios
hold even where absolute speeds drift. Prints:

- decode alone, with and without JPEG draft (one core);
- each model alone on pre-decoded images, at several batch sizes, with inference_mode
  and channels_last variants;
- the plain baseline: per image, a full PIL decode, one model call, one SQLite insert
  (and commit) per label row;
- the full pipeline (`index_library` on local Ray), end to end and in steady state;
- committing results one photo per transaction vs in batches;
- peak RSS of the driver and of each Ray worker process.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.registry import choose_models, get_spec
from models.tasks import TASK_WRAPPERS, TaskOptions
from models.weights import load_state_dict
from pipeline.decode import decode_photo
from pipeline.indexer import index_library
from pipeline.settings import IndexSettings

EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval" / "imagenet-samples"
SIZES = {"12MP": (4000, 3000), "2MP": (1600, 1200)}
IMAGE_SIZE = IndexSettings.image_size
MAX_PIXELS = IndexSettings.max_pixels


def make_photos(folder: Path, per_size: int) -> dict[str, list[Path]]:
    sources = sorted(EVAL_DIR.iterdir())[:: max(1, 1000 // per_size)][:per_size]
    made: dict[str, list[Path]] = {}
    for label, size in SIZES.items():
        out = folder / label
        out.mkdir(parents=True)
        made[label] = []
        for src in sources:
            path = out / f"{src.stem}.jpg"
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


def full_decode(path: Path) -> np.ndarray:
    """What a plain loop does: decode every pixel, then resize."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    scale = IMAGE_SIZE / min(w, h)
    return np.asarray(rgb.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR))


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
                if not proc.name.isdigit():
                    continue
                try:
                    name = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
                    if not name.startswith("ray::"):
                        continue
                    rss = next(int(line.split()[1]) for line in (proc / "status").read_text().splitlines()
                               if line.startswith("VmRSS:"))
                except (OSError, StopIteration, UnicodeDecodeError):
                    continue
                key = name.split("(")[0].split("[")[0].strip()
                self.peaks[key] = max(self.peaks.get(key, 0), rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=16, help="photos per size (12 MP and 2 MP)")
    parser.add_argument("--batch-size", type=int, default=IndexSettings.batch_size)
    parser.add_argument("--models", default="classify", help="tasks, comma-separated")
    args = parser.parse_args()
    tasks = tuple(args.models.split(","))
    threads = torch.get_num_threads()
    print(f"torch threads {threads}, tasks {','.join(tasks)}, batch size {args.batch_size}")

    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(Path(tmp) / "library", args.photos)
        every = [p for paths in photos.values() for p in paths]
        n = len(every)
        print(f"\n{n} photos ({args.photos} x 12 MP, {args.photos} x 2 MP)\n")

        print("decode alone, one core                     img/s")
        for label, paths in photos.items():
            draft = rate(len(paths), lambda: [decode_photo(str(p), IMAGE_SIZE, MAX_PIXELS) for p in paths])
            full = rate(len(paths), lambda: [full_decode(p) for p in paths])
            print(f"  {label:<5} full decode + resize            {full:8.1f}")
            print(f"  {label:<5} with JPEG draft (the pipeline)  {draft:8.1f}   x{draft / full:.1f}")
        decode_rate = rate(n, lambda: [decode_photo(str(p), IMAGE_SIZE, MAX_PIXELS) for p in every])

        images = [decode_photo(str(p), IMAGE_SIZE, MAX_PIXELS).pixels for p in every]
        names = choose_models(tasks, {}, gpu=torch.cuda.is_available())
        wrappers = []
        print("\nmodel alone on pre-decoded images          img/s")
        for task, name in names.items():
            spec = get_spec(name)
            wrapper = TASK_WRAPPERS[task](spec, load_state_dict(spec, None, offline=False), "cpu", TaskOptions())
            wrapper.load()
            wrapper.predict(images[:2])  # warm-up
            for bs in sorted({1, 8, args.batch_size}):
                r = rate(n, lambda: [wrapper.predict(images[i:i + bs]) for i in range(0, n, bs)])
                print(f"  {name:<28} batch {bs:>3}        {r:8.1f}")
            wrappers.append(wrapper)
        models_rate = rate(n, lambda: [w.predict(images[i:i + args.batch_size])
                                       for w in wrappers for i in range(0, n, args.batch_size)])
        print(f"  all selected models back to back, batch {args.batch_size}  {models_rate:8.1f}")
        _variants(wrappers[0], images, args.batch_size)

        print("\nplain baseline: full decode, one model call and one SQLite commit per row")
        base_rate = _baseline(wrappers, every[: max(8, n // 2)], Path(tmp) / "baseline.sqlite")
        print(f"  {base_rate:8.1f} img/s")

        print("\nfull pipeline: photos index on local Ray (2 CPUs)")
        with PeakRss() as peaks:
            end_to_end, steady = _pipeline(Path(tmp) / "library", Path(tmp) / "index", tasks, args.batch_size)
        driver_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  end to end (Ray start, model load, scan, commit) {end_to_end:8.1f} img/s")
        print(f"  steady state (first result to last)              {steady:8.1f} img/s")

        print("\nratios")
        print(f"  pipeline / model-only      {steady / models_rate:5.2f}   (steady state)")
        print(f"  pipeline / plain baseline  {steady / base_rate:5.2f}   (end to end: {end_to_end / base_rate:.2f})")
        print(f"  decode alone, one core     {decode_rate:8.1f} img/s: the CPU pipeline's bound per decode core")

        print("\npeak RSS")
        print(f"  driver (this process, incl. the in-process model runs above) {driver_mb:8.0f} MB")
        for name, kb in sorted(peaks.peaks.items()):
            print(f"  {name:<60} {kb / 1024:8.0f} MB")


def _variants(wrapper, images: list[np.ndarray], batch_size: int) -> None:
    """inference_mode vs no_grad, and channels_last, on the first model."""
    batch = torch.stack([wrapper.preprocess(wrapper.to_tensor(im)) for im in images[:batch_size]])
    model = wrapper.model

    def forward(ctx, x):
        with ctx():
            model(x)

    grad = rate(len(batch), lambda: forward(torch.enable_grad, batch), repeat=3)
    no_grad = rate(len(batch), lambda: forward(torch.no_grad, batch), repeat=3)
    inference = rate(len(batch), lambda: forward(torch.inference_mode, batch), repeat=3)
    model.to(memory_format=torch.channels_last)
    channels_last = rate(len(batch), lambda: forward(torch.inference_mode, batch.contiguous(
        memory_format=torch.channels_last)), repeat=3)
    model.to(memory_format=torch.contiguous_format)
    print(f"  {wrapper.spec.name} forward only, batch {len(batch)}: autograd on {grad:.1f}, no_grad {no_grad:.1f}, "
          f"inference_mode {inference:.1f}, + channels_last {channels_last:.1f} img/s")


def _baseline(wrappers, paths: list[Path], db_path: Path) -> float:
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE labels (path TEXT, label TEXT, score REAL)")

    def loop() -> None:
        for path in paths:
            pixels = full_decode(path)
            for wrapper in wrappers:
                with torch.no_grad():
                    record = wrapper.predict([pixels])[0]
                for label, score in wrapper.labels_of(record):
                    db.execute("INSERT INTO labels VALUES (?, ?, ?)", (str(path), label, score))
                    db.commit()

    result = rate(len(paths), loop)
    db.close()
    return result


def _pipeline(library: Path, index: Path, tasks: tuple[str, ...], batch_size: int) -> tuple[float, float]:
    marks: list[tuple[float, int]] = []

    class Clock:
        def planned(self, plan, models) -> None:
            marks.append((time.perf_counter(), 0))

        def advanced(self, photos: int) -> None:
            marks.append((time.perf_counter(), marks[-1][1] + photos))

    start = time.perf_counter()
    summary = index_library(IndexSettings(roots=(str(library),), index_dir=index, tasks=tasks,
                                          batch_size=batch_size, ray_num_cpus=2), progress=Clock())
    total = time.perf_counter() - start
    (t_first, n_first), (t_last, n_last) = marks[1], marks[-1]
    steady = (n_last - n_first) / (t_last - t_first) if t_last > t_first else float("nan")
    return summary.indexed / total, steady


if __name__ == "__main__":
    main()
