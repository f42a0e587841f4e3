"""Benchmark: seconds per photo of named models, side by side in one process, and how much
of it is the forward pass.

    python -m benchmarks.model_speed --weights-dir ../shared/weights/human-models-3.0.4 \\
        nanodet fasterrcnn_mobilenet_v3_large_320_fpn selfie lraspp_mobilenet_v3_large
    python -m benchmarks.model_speed --device cuda --batch-size 32 \\
        --weights-dir ../shared/weights/human-models-3.0.4 efficientnet_lite0 nanodet selfie

Each model runs through its task wrapper (``predict``: preprocessing, forward pass and
decoding to records), channels-last as the pipeline runs it, on the real coco64 photos
decoded as the pipeline decodes them (shorter side = the model's input size). A model
whose weights are not here runs with random weights (``models/untrained.py``): same cost
per photo, results meaningless. Models alternate in rounds, so drift on a shared machine
hits them alike; the best round counts. "forward" is the network alone (synchronised on a
GPU), the rest is the wrapper's CPU work around it: preprocessing, decoding, mask encoding.
On CUDA the wrappers run at the pipeline's precision (``--precision auto``).

On an H200 at batch 32 (a throwaway copy of this measurement, 2026-11-26): forward
0.12-0.19 ms a photo for each of the three CPU defaults, the rest 1.1 ms (EfficientNet-Lite0),
1.9 ms (NanoDet) and 8.3 ms (Selfie, most of it PNG-encoding its mask at zlib's hardest
setting, since changed): a GPU actor is CPU-bound with these models (``pipeline/job.py``
LIGHT_MODELS).
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
from pipeline.inference import autocast_dtype
from pipeline.settings import IndexSettings

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "coco64" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    autocast = autocast_dtype("auto", torch.cuda.is_bf16_supported(including_emulation=False)) if cuda else None
    paths = sorted(PHOTOS.iterdir())[: args.photos]
    with tempfile.TemporaryDirectory() as tmp:
        wrappers = {}
        for name in args.models:
            spec = get_spec(name)
            weights = "real weights"
            folder = args.weights_dir
            if locate_weights(spec, args.weights_dir) is None:
                spec, folder, weights = save_untrained(name, Path(tmp)), Path(tmp), "RANDOM weights"
            wrapper = wrapper_for(spec.task, spec)(spec, load_state_dict(spec, folder, offline=True), args.device,
                                                   TaskOptions(), autocast=autocast)
            wrapper.load()  # channels-last, as the pipeline runs it
            decoded = [decode_photo(str(p), spec.input_size, IndexSettings.max_pixels) for p in paths]
            images, sizes = [d.pixels for d in decoded], [(d.width, d.height) for d in decoded]
            wrapper.predict(images[:2], sizes[:2])  # warm-up
            wrappers[name] = (wrapper, images, sizes, weights)
        device = torch.cuda.get_device_name() if cuda else "CPU"
        print(f"{len(paths)} coco64 photos, batch {args.batch_size}, torch threads {torch.get_num_threads()}, {device}")
        best = {name: (float("inf"), 0.0) for name in wrappers}
        for _ in range(args.rounds):
            for name, (wrapper, images, sizes, _) in wrappers.items():
                with _ForwardClock(wrapper.model, cuda) as forward:
                    start = time.perf_counter()
                    for i in range(0, len(images), args.batch_size):
                        wrapper.predict(images[i:i + args.batch_size], sizes[i:i + args.batch_size])
                    total = time.perf_counter() - start
                best[name] = min(best[name], (total / len(images), forward.seconds / len(images)))
        for name, (_wrapper, images, _, weights) in wrappers.items():
            shape = images[0].shape
            total, network = best[name]
            print(f"  {name:<40} {total * 1000:7.2f} ms/photo, forward {network * 1000:6.2f}, rest "
                  f"{(total - network) * 1000:6.2f}  ({weights}; working image e.g. {shape[1]}x{shape[0]})")


class _ForwardClock:
    """Adds up the time of ``model``'s forward passes while in the ``with`` block."""

    def __init__(self, model: torch.nn.Module, cuda: bool) -> None:
        self.model, self.cuda, self.seconds = model, cuda, 0.0

    def __enter__(self) -> _ForwardClock:
        self.handles = [self.model.register_forward_pre_hook(lambda *_: self._mark()),
                        self.model.register_forward_hook(lambda *_: self._add())]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _mark(self) -> None:
        self.started = self._now()

    def _add(self) -> None:
        self.seconds += self._now() - self.started


if __name__ == "__main__":
    main()
