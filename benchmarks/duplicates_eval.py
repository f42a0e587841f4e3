"""Proof for `photos duplicates`: pairwise precision and recall on generated copies of real photos.

From ``../shared/eval/imagenet-samples`` (seeded): ``--sources`` photos (half of them dogs)
each get four copies: resized to half, re-saved as JPEG quality 50, cropped by 10% (5% off
each side), and EXIF-rotated (pixels turned, Orientation tag set so it displays upright).
Hard negatives: every other dog breed and more photos, all distinct photos, many of the
same concept as a source. Everything is indexed with the real pipeline (`index_library`,
real EfficientNet-Lite0 weights), then the duplicates pass runs on that index.

The threshold is chosen on half of the sources (calibration: best F1 over a sweep) and
precision/recall are reported on the other half (test pairs), and for the whole set at the
module's default :data:`~pipeline.duplicates.NEAR_THRESHOLD`. Burst shots are simulated
(a window shifted by 15% and 10% brighter), embedded on the spot, to place the looser
burst threshold between them and the hard negatives.

    python -m benchmarks.duplicates_eval --work /tmp/dup-eval
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from pipeline.duplicates import BURST_THRESHOLD, NEAR_THRESHOLD, find_duplicates
from pipeline.embeddings import embed_files
from pipeline.store import IndexStore
from pipeline.vectors import open_vectors

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "imagenet-samples"
COPIES = ("resized", "q50", "crop10", "exif")


def is_dog(photo: Path) -> bool:
    from pipeline import vocabulary

    return photo.stem.split("_", 1)[1].replace("_", " ") in vocabulary.expand("dog")


def make_copies(source: Path, folder: Path, key: str) -> list[Path]:
    with Image.open(source) as opened:
        im = opened.convert("RGB")
    w, h = im.size
    out = {name: folder / f"{key}_{name}.jpg" for name in ("original", *COPIES)}
    shutil.copy(source, out["original"])
    im.resize((w // 2, h // 2), Image.Resampling.LANCZOS).save(out["resized"], quality=90)
    im.save(out["q50"], quality=50)
    im.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95))).save(out["crop10"], quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise: the stored pixels are turned back
    im.rotate(90, expand=True).save(out["exif"], quality=90, exif=exif.tobytes())
    return list(out.values())


def burst_shot(source: Path, target: Path) -> Path:
    with Image.open(source) as opened:
        im = opened.convert("RGB")
    w, h = im.size
    shifted = im.crop((int(w * 0.15), 0, w, h)).resize((w, h))
    ImageEnhance.Brightness(shifted).enhance(1.1).save(target, quality=90)
    return target


def index_folder(root: Path, index_dir: Path) -> float:
    from pipeline.indexer import index_library
    from pipeline.settings import IndexSettings

    t = time.perf_counter()
    summary = index_library(IndexSettings(roots=(str(root),), index_dir=index_dir, tasks=("classify",),
                                          ray_num_cpus=2))
    assert summary.failed == 0, summary.failures
    return time.perf_counter() - t


def pairwise(groups: list[list[str]], truth: dict[str, str], within: set[str] | None = None) -> tuple[float, float]:
    """Precision and recall over unordered photo pairs (restricted to ``within`` if given)."""
    def keep(p: str) -> bool:
        return within is None or p in within
    predicted = {frozenset(pair) for g in groups for pair in itertools.combinations([p for p in g if keep(p)], 2)}
    by_source: dict[str, list[str]] = {}
    for path, source in truth.items():
        if keep(path):
            by_source.setdefault(source, []).append(path)
    actual = {frozenset(pair) for ps in by_source.values() for pair in itertools.combinations(ps, 2)}
    hits = len(predicted & actual)
    return hits / max(1, len(predicted)), hits / max(1, len(actual))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/photos-dup-eval"))
    parser.add_argument("--sources", type=int, default=60)
    parser.add_argument("--negatives", type=int, default=240)
    parser.add_argument("--reuse", action="store_true", help="keep the library and index of a previous run")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    photos = sorted(EVAL.iterdir())
    dogs = [p for p in photos if is_dog(p)]
    others = [p for p in photos if not is_dog(p)]
    half = args.sources // 2
    sources = [dogs[i] for i in rng.choice(len(dogs), half, replace=False)]
    sources += [others[i] for i in rng.choice(len(others), args.sources - half, replace=False)]
    rest = [p for p in dogs if p not in sources]  # every other dog breed: the hardest negatives
    pool = [p for p in others if p not in sources]
    rest += [pool[i] for i in rng.choice(len(pool), max(0, args.negatives - len(rest)), replace=False)]
    reuse = args.reuse and (args.work / "index").is_dir()
    if not reuse:
        shutil.rmtree(args.work, ignore_errors=True)
    library = args.work / "library"
    library.mkdir(parents=True, exist_ok=True)
    truth: dict[str, str] = {}
    calibration: set[str] = set()
    for k, source in enumerate(sources):
        copies = ([library / f"s{k:03d}_{c}.jpg" for c in ("original", *COPIES)] if reuse
                  else make_copies(source, library, f"s{k:03d}"))
        for path in copies:
            truth[str(path)] = f"s{k}"
            if k % 2 == 0:
                calibration.add(str(path))
    for k, negative in enumerate(rest):
        target = library / f"neg{k:03d}_{negative.name}"
        if not reuse:
            shutil.copy(negative, target)
        truth[str(target)] = f"n{k}"
        if k % 2 == 0:
            calibration.add(str(target))
    test = set(truth) - calibration
    print(f"library: {len(sources)} sources x {1 + len(COPIES)} files + {len(rest)} distinct photos "
          f"({sum(is_dog(p) for p in rest)} of them other dog breeds) = {len(truth)} photos")
    index_dir = args.work / "index"
    if not reuse:
        print(f"indexed with the real pipeline in {index_folder(library, index_dir):.1f} s")
    store = IndexStore.open(index_dir, create=False)
    vectors = open_vectors(index_dir, store)
    x = vectors.vectors.astype(np.float32)
    sims = x @ x.T
    rows = {p: i for i, p in enumerate(vectors.paths)}
    pos: list[float] = []
    neg: list[float] = []
    for a, b in itertools.combinations(sorted(calibration), 2):
        (pos if truth[a] == truth[b] else neg).append(sims[rows[a], rows[b]])
    print(f"calibration half: {len(pos)} duplicate pairs (min similarity {min(pos):.3f}), "
          f"{len(neg)} distinct pairs (max similarity {max(neg):.3f})")
    sweep = np.round(np.arange(0.50, 0.995, 0.01), 2)
    f1 = np.array([_f1(np.array(pos), np.array(neg), t) for t in sweep])
    plateau = sweep[f1 == f1.max()]
    print(f"best F1 {f1.max():.3f} on calibration for thresholds {plateau.min():.2f}-{plateau.max():.2f} "
          f"(middle {np.median(plateau):.2f}); module default NEAR_THRESHOLD = {NEAR_THRESHOLD}")
    for name, copy_kind in [(c, c) for c in COPIES]:
        s = [sims[rows[str(library / f"s{k:03d}_original.jpg")], rows[str(library / f"s{k:03d}_{copy_kind}.jpg")]]
             for k in range(len(sources))]
        print(f"  similarity original vs {name}: min {min(s):.3f}, mean {np.mean(s):.3f}")
    t = time.perf_counter()
    groups = [[m.path for m in g.members] for g in find_duplicates(index_dir, store)]
    seconds = time.perf_counter() - t
    for name, within in (("test half", test), ("whole set", None)):
        precision, recall = pairwise(groups, truth, within)
        print(f"duplicates at default threshold {NEAR_THRESHOLD}, {name}: pairwise precision {precision:.3f}, "
              f"recall {recall:.3f}")
    print(f"{len(groups)} groups found in {seconds:.2f} s")
    bursts = [burst_shot(sources[k], args.work / f"burst{k:03d}.jpg") for k in range(len(sources))]
    embedded = embed_files([str(b) for b in bursts]).astype(np.float32)
    originals = x[[rows[str(library / f"s{k:03d}_original.jpg")] for k in range(len(sources))]]
    burst_sims = np.sum(embedded * originals, axis=1)
    print(f"simulated burst shots vs their original: min {burst_sims.min():.3f}, median {np.median(burst_sims):.3f}")
    for t in (NEAR_THRESHOLD, BURST_THRESHOLD):
        print(f"  at {t:.2f}: burst shots found {np.mean(burst_sims >= t):.2f}, "
              f"distinct calibration pairs joined {np.mean(np.array(neg) >= t):.5f}")
    precision, recall = pairwise([[m.path for m in g.members] for g in find_duplicates(index_dir, store, burst=True)],
                                 truth)
    print(f"with --burst ({BURST_THRESHOLD}), whole set: pairwise precision {precision:.3f}, recall {recall:.3f}")
    store.close()


def _f1(pos: np.ndarray, neg: np.ndarray, t: float) -> float:
    tp, fp, fn = int(np.sum(pos >= t)), int(np.sum(neg >= t)), int(np.sum(pos < t))
    return 2 * tp / max(1, 2 * tp + fp + fn)


if __name__ == "__main__":
    main()
