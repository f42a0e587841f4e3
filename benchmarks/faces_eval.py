"""Measure the face task and grouping on ../shared/eval/faces (real photos, real weights).

    PYTHONPATH=. python benchmarks/faces_eval.py                 # all figures (README, "Faces and people")
    PYTHONPATH=. python benchmarks/faces_eval.py --sweep         # + the grouping parameter sweep

Each photo is decoded as `photos index` decodes it (EXIF rotation, alpha, a WebP named
.jpg; shorter side 640, the face task's input size) and run through ``FaceFinder`` with
the quality filters off, so one pass gives every face with its size, blur and score; the
filters are then applied here, with the defaults of ``models/faces.py``. Face results are
cached in ``--cache`` (an .npz) so the sweep reruns in seconds.

The labelled face of a single-person photo is its largest face (the set's README: the
label is for the central or largest face); other faces (people at the edges) take part
in grouping but not in the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from models import faces as face_model
from pipeline.decode import decode_photo
from pipeline.people import GroupingSettings, group_faces, pairwise_scores

ROOT = Path("../shared/eval/faces")
WEIGHTS = Path("../shared/weights/facenet-pytorch-2.6.0")


def photos() -> list[tuple[Path, str]]:
    out = []
    for d in sorted(ROOT.iterdir()):
        if d.is_dir() and not d.name.startswith("_"):
            out += [(f, d.name) for f in sorted(d.iterdir()) if f.is_file()]
    return out


def run_faces(cache: Path) -> dict:
    if cache.exists():
        return dict(np.load(cache, allow_pickle=True))
    finder = face_model.FaceFinder.from_folder(WEIGHTS)
    finder.min_blur, finder.min_score, finder.min_face = 0.0, 0.0, 12
    rows: dict[str, list] = {k: [] for k in ("photo", "who", "box", "score", "blur", "side", "emb", "largest")}
    seconds, failures = [], []
    items = photos() + [(ROOT / "_groups" / g["file"], "_group") for g in json.loads((ROOT / "_groups/groups.json").read_text())]
    for path, who in items:
        try:
            photo = decode_photo(str(path), 640, 100_000_000)
        except Exception as exc:  # noqa: BLE001 - reported, the measurement goes on
            failures.append(f"{path}: {exc}")
            continue
        t = time.perf_counter()
        found = finder.find(photo.pixels, (photo.width, photo.height))
        seconds.append(time.perf_counter() - t)
        scale = min(photo.pixels.shape[:2]) / min(photo.width, photo.height)
        sides = [min(f["x2"] - f["x1"], f["y2"] - f["y1"]) * scale for f in found]
        big = int(np.argmax(sides)) if found else -1
        for i, f in enumerate(found):
            rows["photo"].append(str(path.relative_to(ROOT)))
            rows["who"].append(who)
            rows["box"].append([f["x1"], f["y1"], f["x2"], f["y2"]])
            rows["score"].append(f["score"])
            rows["blur"].append(f["blur"])
            rows["side"].append(sides[i])
            rows["emb"].append(f["embedding"])
            rows["largest"].append(i == big)
        if not found:
            rows["photo"].append(str(path.relative_to(ROOT)))
            rows["who"].append(who)
            rows["box"].append([0, 0, 0, 0])
            rows["score"].append(-1.0)
            rows["blur"].append(0.0)
            rows["side"].append(0.0)
            rows["emb"].append([0.0] * 1024)
            rows["largest"].append(False)
    data = {k: np.array(v) for k, v in rows.items()}
    data["seconds"] = np.array(seconds)
    data["failures"] = np.array(failures)
    np.savez(cache, **data)  # type: ignore[arg-type]
    return data


def kept_mask(d: dict, min_face: float, min_blur: float, min_score: float) -> np.ndarray:
    return (d["score"] >= min_score) & (d["side"] >= min_face) & (d["blur"] >= min_blur)


def grouping_scores(d: dict, keep: np.ndarray, settings: GroupingSettings, min_photos: int = 4,
                    include_groups: bool = True) -> tuple[float, float, np.ndarray]:
    """Pairwise precision/recall over the labelled faces of people with >= ``min_photos`` photos."""
    use = keep & ((d["who"] != "_group") | include_groups)
    idx = np.flatnonzero(use)
    result = group_faces(d["emb"][idx], [-1] * len(idx), [False] * len(idx), settings)
    label = np.full(len(d["who"]), -1)
    for g, members in enumerate(result.new_people):
        label[idx[members]] = g
    counts = Counter(d["who"][d["largest"] & (d["who"] != "_group")])
    scored = np.flatnonzero(d["largest"] & np.isin(d["who"], [w for w, c in counts.items() if c >= min_photos]))
    # a labelled face dropped by the filters counts as "with nobody"
    p, r = pairwise_scores(list(d["who"][scored]), list(np.where(keep[scored], label[scored], -1)))
    return p, r, label


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/faces_eval.npz"))
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--speed", type=int, default=0, help="time the face task on this many photos")
    args = ap.parse_args()
    d = run_faces(args.cache)
    singles = sorted({(p, w) for p, w in zip(d["photo"], d["who"]) if w != "_group"})
    found = {p for p, s in zip(d["photo"], d["score"]) if s >= 0}
    keep = kept_mask(d, face_model.MIN_FACE_PX, face_model.MIN_BLUR, face_model.MIN_SCORE)
    kept_labelled = {p for p, k, big, w in zip(d["photo"], keep, d["largest"], d["who"]) if k and big and w != "_group"}
    print(f"photos {len(singles)} single-person; decode failures {list(d['failures'])}")
    print(f"detection recall (any face found, no filter): {sum(p in found for p, _ in singles)}/{len(singles)}")
    print(f"labelled face kept after filters (min side {face_model.MIN_FACE_PX}px, blur >= {face_model.MIN_BLUR}, "
          f"score >= {face_model.MIN_SCORE}): {len(kept_labelled)}/{len(singles)}")
    lab = d["largest"] & (d["who"] != "_group")
    print("labelled faces: blur quantiles 1/5/50%:", np.round(np.quantile(d["blur"][lab], [.01, .05, .5]), 1),
          " side quantiles 1/5/50%:", np.round(np.quantile(d["side"][lab], [.01, .05, .5]), 1))
    if args.speed:
        speed(args.speed)
    s = GroupingSettings()
    p, r, label = grouping_scores(d, keep, s)
    print(f"grouping (defaults {s}): pairwise precision {p:.3f} recall {r:.3f} (people with >= 4 photos)")
    for fam in (("George_W_Bush", "Jeb_Bush"), ("Venus_Williams",), ("Hillary_Clinton",)):
        sel = np.flatnonzero(np.isin(d["who"], fam) & d["largest"] & keep)
        if len(sel):
            table = Counter((w, int(g)) for w, g in zip(d["who"][sel], label[sel]))
            print("family", fam, "-> (person, group): count", dict(sorted(table.items())))
    groups = json.loads((ROOT / "_groups/groups.json").read_text())
    for g in groups:
        sel = np.flatnonzero((d["photo"] == f"_groups/{g['file']}") & (d["score"] >= 0))
        named = {}
        for i in sel:
            if keep[i] and label[i] >= 0:
                members = Counter(w for w in d["who"][(label == label[i]) & (d["who"] != "_group") & d["largest"]])
                named[int(i)] = members.most_common(1)[0][0] if members else f"new group {label[i]}"
        print(f"group photo {g['file']}: {len(sel)} faces found, {int(keep[sel].sum())} kept; grouped as "
              f"{sorted(named.values())}; labelled {g['people']}")
    if args.sweep:
        print("sweep, one pass over everything: cluster_distance, min_faces -> precision recall")
        for dist in (0.3, 0.34, 0.36, 0.38, 0.4, 0.41, 0.42, 0.43, 0.45, 0.5):
            for mf in (2, 3):
                p, r, _ = grouping_scores(d, keep, GroupingSettings(dist, dist, mf))
                print(f"  {dist:.2f} {mf}: {p:.3f} {r:.3f}")
        print("sweep, incremental: half of each person's photos grouped first (defaults), the rest joins "
              "by centroid: assign_distance -> precision recall")
        for dist in (0.3, 0.34, 0.36, 0.38, 0.4, 0.45, 0.5):
            print(f"  {dist:.2f}: " + " ".join(f"{v:.3f}" for v in incremental_scores(d, keep, dist)))


def incremental_scores(d: dict, keep: np.ndarray, assign_distance: float) -> tuple[float, float]:
    """Night 1: the even-numbered photos of each person (and no group photo) are grouped with
    the defaults; night 2: the rest arrive and join people within ``assign_distance``."""
    first = np.zeros(len(keep), bool)
    seen: Counter = Counter()
    for i, (w, p) in enumerate(zip(d["who"], d["photo"])):
        if w != "_group":
            first[i] = seen[p.split("/")[0]] % 2 == 0
            seen[p.split("/")[0]] += 1 if d["largest"][i] else 0
    idx = np.flatnonzero(keep)
    base = GroupingSettings()
    one = group_faces(d["emb"][idx[first[idx]]], [-1] * int(first[idx].sum()), [False] * int(first[idx].sum()), base)
    person = np.full(len(keep), -1)
    for g, members in enumerate(one.new_people):
        person[idx[first[idx]][members]] = g
    s = GroupingSettings(assign_distance, base.cluster_distance, base.min_faces)
    two = group_faces(d["emb"][idx], person[idx], [False] * len(idx), s)
    for i, pid in two.assigned.items():
        person[idx[i]] = pid
    for g, members in enumerate(two.new_people):
        person[idx[members]] = 1000 + g
    counts = Counter(d["who"][d["largest"] & (d["who"] != "_group")])
    scored = np.flatnonzero(d["largest"] & np.isin(d["who"], [w for w, c in counts.items() if c >= 4]))
    return pairwise_scores(list(d["who"][scored]), list(person[scored]))


def speed(n: int) -> None:
    """CPU seconds per photo of the face task with its defaults (decode not included): on
    every k-th photo of the set (mostly 250 px LFW crops), and on full-size photos alone."""
    import torch
    from PIL import Image

    finder = face_model.FaceFinder.from_folder(WEIGHTS)
    finder.find(np.zeros((64, 64, 3), np.uint8))  # load the models first
    every = photos()
    sampled = [p for p, _ in every[:: max(1, len(every) // n)][:n]]
    full_size = [p for p, _ in every if max(Image.open(p).size) > 1000][: max(1, n // 2)]
    for name, items in (("sampled", sampled), ("full-size (> 1000 px)", full_size)):
        seconds, cpu, found = [], [], 0
        for path in items:
            photo = decode_photo(str(path), 640, 100_000_000)
            t, c = time.perf_counter(), time.process_time()
            found += len(finder.find(photo.pixels, (photo.width, photo.height)))
            seconds.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        sec, cpu_s = np.array(seconds), np.array(cpu)
        print(f"face task on CPU ({torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores), {name}: {len(sec)} photos, {found} faces kept: wall median "
              f"{np.median(sec):.2f} s/photo (mean {sec.mean():.2f}, max {sec.max():.2f}); CPU time median "
              f"{np.median(cpu_s):.2f} s/photo (mean {cpu_s.mean():.2f})")

if __name__ == "__main__":
    main()
