"""Benchmark: seconds per photo of named models on CPU, side by side in one process.

    python -m benchmarks.model_speed --weights-dir ../shared/weights/human-models-3.0.4 \\
        nanodet fasterrcnn_mobilenet_v3_large_320_fpn selfie lraspp_mobilenet_v3_large

Each model runs through its task wrapper (``predict``: preprocessing, forward pass and
decoding to records), channels-last as the pipeline runs it, on the real coco64 photos
decoded as the pipeline decodes them (shorter side = the model's input size). A model
whose weights are not here runs with random weights (``models/untrained.py``): same cost
per photo, results meaningless. Models alternate in rounds, so drift on a shared machine
hits them alike; the best round counts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from models.base import TaskOptions
from models.registry import get_spec
from models.tasks import wrapper_for
from models.untrained import save_untrained
from models.weights import load_state_dict, locate_weights
from pipeline.decode import decode_photo
from pipeline.settings import IndexSettings

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "coco64" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = sorted(PHOTOS.iterdir())[: args.photos]
    with tempfile.TemporaryDirectory() as tmp:
        wrappers = {}
        for name in args.models:
            spec = get_spec(name)
            weights = "real weights"
            folder = args.weights_dir
            if locate_weights(spec, args.weights_dir) is None:
                spec, folder, weights = save_untrained(name, Path(tmp)), Path(tmp), "RANDOM weights"
            wrapper = wrapper_for(spec.task, spec)(spec, load_state_dict(spec, folder, offline=True), "cpu",
                                                   TaskOptions())
            wrapper.load()  # channels-last, as the pipeline runs it
            decoded = [decode_photo(str(p), spec.input_size, IndexSettings.max_pixels) for p in paths]
            images, sizes = [d.pixels for d in decoded], [(d.width, d.height) for d in decoded]
            wrapper.predict(images[:2], sizes[:2])  # warm-up
            wrappers[name] = (wrapper, images, sizes, weights)
        print(f"{len(paths)} coco64 photos, batch {args.batch_size}, torch threads {torch.get_num_threads()}, CPU")
        best = {name: float("inf") for name in wrappers}
        for _ in range(args.rounds):
            for name, (wrapper, images, sizes, _) in wrappers.items():
                start = time.perf_counter()
                for i in range(0, len(images), args.batch_size):
                    wrapper.predict(images[i:i + args.batch_size], sizes[i:i + args.batch_size])
                best[name] = min(best[name], (time.perf_counter() - start) / len(images))
        for name, (_wrapper, images, _, weights) in wrappers.items():
            shape = images[0].shape
            print(f"  {name:<40} {best[name] * 1000:7.1f} ms/photo  ({weights}; working image e.g. {shape[1]}x{shape[0]})")


if __name__ == "__main__":
    main()
