"""NanoDet and Selfie as the pipeline runs them: real weights on real COCO photos, found
and verified by the weight lookup, giving detect/segment records in the photo's pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import nanodet, selfie
from models.base import ModelWrapper, TaskOptions
from models.registry import get_spec
from models.segment import decode_mask
from models.tasks import wrapper_for
from models.tfjs_tasks import NanoDetDetector, SelfieSegmenter
from models.weights import ModelFiles, fetch_weights, load_state_dict, locate_weights
from pipeline.errors import WeightsMissingError
from pipeline.evaluate import box_iou, truth_mask

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / "shared" / "weights" / "human-models-3.0.4"
COCO = ROOT.parent / "shared" / "eval" / "coco64"
PHOTO = "000000000436.jpg"  # a man eating, 63% of the frame (COCO person annotation)


def coco_photo(name: str) -> tuple[np.ndarray, list[dict], dict]:
    coco = json.loads((COCO / "instances.json").read_text())
    image = next(im for im in coco["images"] if im["file_name"] == name)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns = [dict(a, label=names[a["category_id"]]) for a in coco["annotations"] if a["image_id"] == image["id"]]
    with Image.open(COCO / "images" / name) as im:
        return np.asarray(im.convert("RGB")).copy(), anns, image


def wrapper(name: str, options: TaskOptions | None = None) -> ModelWrapper:
    spec = get_spec(name)
    files = load_state_dict(spec, WEIGHTS, offline=True)
    return wrapper_for(spec.task, spec)(spec, files, "cpu", options or TaskOptions())


def test_the_registry_finds_and_verifies_both_files() -> None:
    spec = get_spec("nanodet")
    assert spec.companion_files == (nanodet.BIN_FILE,)
    assert locate_weights(spec, WEIGHTS) == WEIGHTS / nanodet.JSON_FILE
    files = load_state_dict(spec, WEIGHTS, offline=True)
    assert isinstance(files, ModelFiles) and files.paths == [WEIGHTS / "nanodet.json", WEIGHTS / "nanodet.bin"]
    assert wrapper_for("detect", spec) is NanoDetDetector
    assert wrapper_for("segment", get_spec("selfie")) is SelfieSegmenter


def test_a_json_without_its_bin_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    shutil.copy(WEIGHTS / "selfie.json", tmp_path)
    spec = get_spec("selfie")
    assert locate_weights(spec, tmp_path) is None
    with pytest.raises(WeightsMissingError, match=r"selfie\.json and selfie\.bin"):
        fetch_weights(spec, tmp_path, offline=True)


def test_an_altered_bin_fails_its_sha256(tmp_path: Path) -> None:
    shutil.copy(WEIGHTS / "selfie.json", tmp_path)
    data = bytearray((WEIGHTS / "selfie.bin").read_bytes())
    data[1000] ^= 0xFF  # same size, one byte flipped: only the hash can tell
    (tmp_path / "selfie.bin").write_bytes(bytes(data))
    with pytest.raises(WeightsMissingError, match=str(tmp_path / "selfie.bin")):
        fetch_weights(get_spec("selfie"), tmp_path, offline=True)


def test_nanodet_finds_the_person_in_the_photos_own_pixels() -> None:
    pixels, anns, image = coco_photo(PHOTO)
    detector = wrapper("nanodet")
    # Given a smaller working image plus the original size, boxes come back in the original's pixels.
    small = np.asarray(Image.fromarray(pixels).resize((320, 427)))
    (record,) = detector.predict([small], [(image["width"], image["height"])])
    people = [o for o in record if o["label"] == "person"]
    truth = next(a for a in anns if a["label"] == "person")
    x, y, w, h = truth["bbox"]
    assert people and people[0]["score"] >= nanodet.SCORE_THRESHOLD
    best = max(box_iou((o["x1"], o["y1"], o["x2"], o["y2"]), (x, y, x + w, y + h)) for o in people)
    assert best > 0.7
    assert all(0 <= o["x1"] < o["x2"] <= image["width"] and 0 <= o["y1"] < o["y2"] <= image["height"]
               for o in record)
    assert all(set(o) == {"label", "score", "x1", "y1", "x2", "y2", "area"} for o in record)
    assert 0.3 < people[0]["area"] <= 1


def test_nanodet_uses_its_own_threshold_unless_the_run_sets_one() -> None:
    pixels, _, _ = coco_photo(PHOTO)
    default = wrapper("nanodet").predict([pixels])[0]
    low = wrapper("nanodet", TaskOptions(score_threshold=0.1)).predict([pixels])[0]
    assert min(o["score"] for o in default) >= nanodet.SCORE_THRESHOLD
    assert len(low) > len(default) and min(o["score"] for o in low) < nanodet.SCORE_THRESHOLD


def test_selfie_masks_the_person() -> None:
    pixels, anns, image = coco_photo(PHOTO)
    segmenter = wrapper("selfie", TaskOptions(mask_size=200))
    (record,) = segmenter.predict([pixels])
    mask = decode_mask(record)
    assert mask.shape == (200, round(200 * image["width"] / image["height"]))  # the photo's aspect
    truth = truth_mask(anns, {a["category_id"]: a["label"] for a in anns}, selfie.CATEGORIES,
                       (image["width"], image["height"]), (mask.shape[1], mask.shape[0]))
    person = (mask == 1)
    iou = (person & (truth == 1)).sum() / (person | (truth == 1)).sum()
    assert iou > 0.8
    labels = {c["label"]: c for c in record["classes"]}
    assert labels["person"]["fraction"] == pytest.approx(person.mean(), abs=1e-6)
    assert 0.5 < labels["person"]["score"] <= 1


def test_nanodet_search_labels_leave_out_classes_whose_boxes_cover_under_one_percent() -> None:
    pixels, _, _ = coco_photo("000000000315.jpg")  # a beach: a woman, an umbrella, and no bottle
    (record,) = wrapper("nanodet").predict([pixels])
    covered: dict[str, float] = {}
    for o in record:
        covered[o["label"]] = covered.get(o["label"], 0.0) + o["area"]
    labels = dict(NanoDetDetector.labels_of(record))
    small = {label for label, area in covered.items() if area < nanodet.SEARCH_MIN_AREA}
    assert small == {"bottle"} and set(labels) == {"person", "umbrella"}  # a 0.6% "bottle" makes no label
    assert all(score == max(o["score"] for o in record if o["label"] == label) for label, score in labels.items())


def test_show_draws_selfie_people_only_inside_detected_person_boxes() -> None:
    from pipeline.errors import QueryError
    from pipeline.show import cutout, render, shown_mask

    detector, segmenter = wrapper("nanodet"), wrapper("selfie", TaskOptions(mask_size=256))
    records = {}
    for name in ("000000000036.jpg", "000000000620.jpg"):  # a woman under an umbrella; pizzas, no people
        pixels, anns, image = coco_photo(name)
        (objects,), (segmentation,) = detector.predict([pixels]), segmenter.predict([pixels])
        records[name] = ({"width": image["width"], "height": image["height"], "objects": objects,
                          "segmentation": segmentation, "models": {"detect": "nanodet", "segment": "selfie"}},
                         anns, pixels)
    record, anns, pixels = records["000000000620.jpg"]
    assert decode_mask(record["segmentation"]).mean() > 0.02  # Selfie marks the pizzas "person"
    mask, limited = shown_mask(record)
    assert limited and not (mask == 1).any()
    with pytest.raises(QueryError, match="no detected 'person' box"):
        cutout(record, Image.fromarray(pixels), "person")
    assert render(record, Image.fromarray(pixels)).size[0] == pixels.shape[1]

    record, anns, pixels = records["000000000036.jpg"]
    stored, (mask, limited) = decode_mask(record["segmentation"]), shown_mask(record)
    truth = truth_mask(anns, {a["category_id"]: a["label"] for a in anns}, selfie.CATEGORIES,
                       (record["width"], record["height"]), (mask.shape[1], mask.shape[0])) == 1
    iou = {name: ((m == 1) & truth).sum() / ((m == 1) | truth).sum() for name, m in (("stored", stored),
                                                                                     ("shown", mask))}
    assert iou["shown"] > max(0.85, iou["stored"] + 0.05)  # the umbrella outside her box is gone (0.78 -> 0.87)
    alpha = np.asarray(cutout(record, Image.fromarray(pixels), "people"))[..., 3]
    assert alpha.shape == pixels.shape[:2] and 0.2 < (alpha > 0).mean() < (stored == 1).mean()
