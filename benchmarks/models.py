"""Images per second for each default CPU model alone and for the three together.

    PYTHONPATH=. python -m benchmarks.models [--photos 32] [--batch-size 8] [--threads 2]

Model time only (decoding excluded; it runs in parallel Ray tasks during `photos index`),
on real photos from ../shared/eval decoded once at each model's own input size, and at
the largest of them (520) for the three together, as the pipeline does. The classifier
has its real weights; the detector and segmenter run with random weights
(``models/untrained``), which cost the same per image except for the detector's
per-box post-processing (random weights keep no box above the 0.5 threshold).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from models.registry import default_model, get_spec
from models.tasks import TASK_WRAPPERS, TaskOptions
from models.untrained import save_untrained
from models.weights import load_state_dict, locate_weights
from pipeline.decode import decode_photo

EVAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "imagenet-samples"


def images_per_s(wrappers: list, photos: list, batch_size: int) -> float:
    """Throughput of running every wrapper on every photo, after one warm-up batch."""
    batches = [photos[i:i + batch_size] for i in range(0, len(photos), batch_size)]
    for w in wrappers:
        w.predict([p.pixels for p in batches[0]], [(p.width, p.height) for p in batches[0]])
    start = time.perf_counter()
    for batch in batches:
        for w in wrappers:
            w.predict([p.pixels for p in batch], [(p.width, p.height) for p in batch])
    return len(photos) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(EVAL_DIR.iterdir())[:: max(1, 1000 // args.photos)][: args.photos]
    with tempfile.TemporaryDirectory() as tmp:
        wrappers = {}
        for task in TASK_WRAPPERS:
            spec = get_spec(default_model(task, gpu=False))
            if locate_weights(spec, None) is None:
                spec = save_untrained(spec.name, Path(tmp))
            wrappers[task] = TASK_WRAPPERS[task](spec, load_state_dict(spec, Path(tmp), offline=True), "cpu",
                                                 TaskOptions())
            wrappers[task].load()
        print(f"{len(paths)} photos, batch {args.batch_size}, {args.threads} torch threads, CPU")
        for task, w in wrappers.items():
            photos = [decode_photo(str(p), w.spec.input_size, 200_000_000) for p in paths]
            print(f"  {task:<9} {w.spec.name:<40} {w.spec.weights_name[:34]:<34} "
                  f"{images_per_s([w], photos, args.batch_size):6.1f} images/s")
        size = max(w.spec.input_size for w in wrappers.values())
        photos = [decode_photo(str(p), size, 200_000_000) for p in paths]
        print(f"  all three (decoded at {size})" + " " * 58
              + f"{images_per_s(list(wrappers.values()), photos, args.batch_size):6.1f} images/s")


if __name__ == "__main__":
    main()
