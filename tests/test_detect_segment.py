"""Detection and segmentation through the whole path, with real architectures and random weights.

torchvision's COCO/VOC weights cannot be downloaded here, so the detector and the
segmenter run with random weights written to a real weight file (``models/untrained``):
what they find means nothing, but every record flows through Ray, Parquet and SQLite as
real ones would. The classifier is the real EfficientNet-Lite0.
"""

from __future__ import annotations

import io
import json
import sqlite3
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from jobs.cli import cli
from jobs.index_cmd import _print_summary, _ProgressBar
from models.base import TaskOptions
from models.detect import scale_box
from models.segment import Segmenter, decode_mask, encode_mask, mask_shape
from models.untrained import save_untrained
from models.weights import load_state_dict
from pipeline.decode import decode_photo
from pipeline.errors import WeightsMissingError
from pipeline.evaluate import match_boxes, truth_mask
from pipeline.indexer import RunSummary, index_library, select_models
from pipeline.records_reader import load_record
from pipeline.search import search
from pipeline.settings import IndexSettings
from pipeline.store import IndexStore
from tests.conftest import copy_photos

HUMAN_MODELS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "human-models-3.0.4"
DETECTOR, SEGMENTER = "fasterrcnn_mobilenet_v3_large_320_fpn", "lraspp_mobilenet_v3_large"


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("weights")
    return folder, {"detect": save_untrained(DETECTOR, folder), "segment": save_untrained(SEGMENTER, folder)}


def rotated_jpeg(path: Path) -> Path:
    """1600x1200 as stored, EXIF orientation 6: a person sees it 1200 wide, 1600 high."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((1200, 1600, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif, quality=80)
    return path


def settings_for(root: Path, index: Path, weights: Path, **kw) -> IndexSettings:
    return IndexSettings(roots=(str(root),), index_dir=index, weights_dir=weights, score_threshold=0.0,
                         batch_size=4, commit_rows=2, **kw)


# -- pure functions -------------------------------------------------------------------


def test_boxes_scale_from_working_image_to_original_pixels():
    assert scale_box((10, 20, 100, 200), working=(520, 693), original=(1200, 1600)) == pytest.approx(
        (10 * 1200 / 520, 20 * 1600 / 693, 100 * 1200 / 520, 200 * 1600 / 693))
    assert scale_box((-5, -5, 600, 800), (520, 693), (1200, 1600)) == (0, 0, 1200, 1600)  # clipped


def test_mask_png_round_trips_exactly():
    """Every bit depth (1 bit for a person mask, 8 for VOC's 21 classes), read as greyscale
    or as palette indices; and a record written as 8-bit greyscale by an older version."""
    rng = np.random.default_rng(1)
    for top in (0, 1, 3, 15, 20, 255):
        for shape in [(1, 1), (384, 512), (512, 37)]:
            mask = rng.integers(0, top + 1, shape, dtype=np.uint8)
            encoded = encode_mask(mask)
            assert np.array_equal(decode_mask({"encoding": "png-gray8", "mask": encoded}), mask)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded))), mask)
    old_style = rng.integers(0, 21, (60, 80), dtype=np.uint8)  # what earlier versions wrote
    buffer = io.BytesIO()
    Image.fromarray(old_style).save(buffer, format="PNG", optimize=True)
    assert np.array_equal(decode_mask({"encoding": "png-gray8", "mask": buffer.getvalue()}), old_style)
    bit_depth = lambda mask: encode_mask(mask)[24]  # noqa: E731 - the PNG header's IHDR field
    assert [bit_depth(np.full((4, 4), top, np.uint8)) for top in (1, 3, 15, 20)] == [1, 2, 4, 8]
    assert mask_shape((1200, 1600), 512) == (512, 384) and mask_shape((100, 50), 512) == (50, 100)


def test_stored_mask_is_exactly_the_models_argmax(untrained, eval_photos):
    weights, specs = untrained
    spec = specs["segment"]
    segmenter = Segmenter(spec, load_state_dict(spec, weights, offline=True), "cpu", TaskOptions(mask_size=200))
    photo = decode_photo(str(eval_photos[207]), 520, 200_000_000)
    [record] = segmenter.predict([photo.pixels], [(photo.width, photo.height)])
    with torch.inference_mode():
        logits = segmenter.model(segmenter.preprocess(segmenter.to_tensor(photo.pixels))[None])["out"]
        resized = torch.nn.functional.interpolate(logits, size=mask_shape((photo.width, photo.height), 200),
                                                  mode="bilinear", align_corners=False)
    expected = resized[0].argmax(0).to(torch.uint8).numpy()
    assert np.array_equal(decode_mask(record), expected)
    fractions = {c["label"]: c["fraction"] for c in record["classes"]}
    assert sum(fractions.values()) == pytest.approx(1.0)


def test_box_matching_and_truth_masks():
    truth = [("dog", (0, 0, 10, 10)), ("dog", (20, 20, 30, 30)), ("cat", (0, 0, 10, 10))]
    box = lambda label, score, b: {"label": label, "score": score, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]}
    perfect = [box(label, 0.9, b) for label, b in truth]
    assert match_boxes(perfect, truth, 0.5) == 3
    shifted = [box("dog", 0.9, (0, 0, 10, 10)), box("dog", 0.8, (1, 1, 11, 11)), box("cat", 0.7, (5, 5, 15, 15))]
    assert match_boxes(shifted, truth, 0.5) == 1  # a duplicate is no second hit; IoU 25/175 is too low
    names = {1: "person", 2: "couch", 3: "giraffe"}
    categories = ("__background__", "person", "sofa")
    anns = [{"category_id": 1, "segmentation": [[0, 0, 50, 0, 50, 100, 0, 100]]},
            {"category_id": 2, "segmentation": {"size": [100, 100], "counts": [5000, 5000]}},  # right half
            {"category_id": 3, "segmentation": [[0, 0, 100, 0, 100, 100]]}]  # not a VOC class
    mask = truth_mask(anns, names, categories, (100, 100), (10, 10))
    assert (mask[:, 6:] == 2).all() and (mask[:, :5] == 1).all()


def test_strict_models_and_all_missing_are_errors(tmp_path, untrained, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights, specs = untrained
    settings = settings_for(tmp_path, tmp_path / "index", weights, strict_models=True)
    with pytest.raises(WeightsMissingError, match="--strict-models.*nanodet"):
        select_models(settings, gpu=False, specs={"segment": specs["segment"]})
    chosen, skipped, substituted = select_models(settings_for(tmp_path, tmp_path / "i", weights), False,
                                                 {"segment": specs["segment"]})
    assert set(chosen) == {"classify", "segment"} and "photos models download" in skipped["detect"]
    assert substituted == {}
    with pytest.raises(WeightsMissingError, match="no selected task can run"):
        select_models(settings_for(tmp_path, tmp_path / "i", weights, tasks=("detect",)), False)


def test_a_gpu_without_the_torchvision_weights_runs_the_cpu_defaults(tmp_path, monkeypatch):
    """An offline GPU machine with only the npm files: NanoDet and Selfie run, and say why;
    never a model the user named, never under --strict-models, and never on an index whose
    earlier runs used the GPU default (skipping keeps those results; swapping re-runs all)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no hub cache
    for proxy in ("https_proxy", "HTTPS_PROXY"):  # hub downloads (https) fail at once, as offline
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    # urlopen keeps the first opener it builds, with the proxies of that moment: dropped at
    # teardown, so later tests (the npm mirror's local server) see their own environment.
    monkeypatch.setattr(urllib.request, "_opener", None)
    settings = lambda **kw: settings_for(tmp_path, tmp_path / "i", HUMAN_MODELS,  # noqa: E731
                                          tasks=("detect", "segment"), **kw)
    chosen, skipped, substituted = select_models(settings(), gpu=True)
    assert {task: spec.name for task, spec in chosen.items()} == {"detect": "nanodet", "segment": "selfie"}
    assert skipped == {}
    assert "detect runs nanodet, the CPU default" in substituted["detect"]
    assert "photos models download fasterrcnn_resnet50_fpn_v2 --to DIR" in substituted["detect"]
    chosen, skipped, substituted = select_models(settings(models={"detect": "fasterrcnn_resnet50_fpn_v2"}), gpu=True)
    assert set(chosen) == {"segment"} and set(skipped) == {"detect"} and set(substituted) == {"segment"}
    chosen, skipped, substituted = select_models(settings(), gpu=True, models_run={"detect": {"fasterrcnn_resnet50_fpn_v2"}})
    assert set(chosen) == {"segment"} and set(skipped) == {"detect"} and set(substituted) == {"segment"}
    with pytest.raises(WeightsMissingError, match="no selected task can run; detect: .*fasterrcnn_resnet50_fpn_v2"):
        select_models(settings(strict_models=True), gpu=True)


def test_the_cli_tells_of_a_cpu_model_on_the_gpu(tmp_path, capsys):
    note = "detect runs nanodet, the CPU default, on the GPU: fasterrcnn_resnet50_fpn_v2, the GPU default, ..."
    _ProgressBar(enabled=False).substituted({"detect": note})
    _print_summary(RunSummary(1, tmp_path, {"detect": "nanodet"}, status="done", substituted_models={"detect": note}))
    out, err = capsys.readouterr()
    assert f"NOTE: {note}." in err
    assert "CPU MODEL  detect: ran nanodet, the GPU default's weights are missing" in out


# -- the whole path -------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, untrained, eval_photos, ray_local):
    weights, specs = untrained
    root = tmp_path_factory.mktemp("library")
    photos = copy_photos([eval_photos[207], eval_photos[817]], root)  # a dog breed, a sports car
    rotated = rotated_jpeg(root / "rotated.jpg")
    index = root.parent / (root.name + "-index")
    summary = index_library(settings_for(root, index, weights), specs=specs)
    return index, photos + [rotated], rotated, summary


def test_records_flow_to_parquet_and_sqlite(indexed):
    index, photos, _, summary = indexed
    assert summary.status == "done" and summary.indexed == 3 and not summary.skipped_tasks
    frame = pd.read_parquet(index / "parquet")
    assert len(frame) == 3 and {"labels", "objects", "segmentation"} <= set(frame.columns)
    db = sqlite3.connect(index / "index.sqlite")
    assert db.execute("SELECT count(*) FROM objects").fetchone()[0] == sum(len(o) for o in frame["objects"])
    assert db.execute("SELECT count(*) FROM segments").fetchone()[0] == sum(
        len(s["classes"]) for s in frame["segmentation"])
    assert db.execute("SELECT t.key, count(*) FROM photos, json_each(photos.models) t GROUP BY 1 ORDER BY 1"
                      ).fetchall() == [("classify", 3), ("detect", 3), ("segment", 3)]
    assert {r[0] for r in db.execute("SELECT DISTINCT source FROM labels")} == {"classify", "detect", "segment"}


def test_boxes_and_masks_are_in_original_pixels_after_exif_rotation(indexed):
    index, _, rotated, _ = indexed
    store = IndexStore.open(index, create=False)
    record = load_record(store, index, str(rotated))
    store.close()
    assert (record["width"], record["height"]) == (1200, 1600)
    boxes = np.array([[o["x1"], o["y1"], o["x2"], o["y2"]] for o in record["objects"]])
    assert len(boxes) > 10
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 1200).all() and (boxes[:, [1, 3]] <= 1600).all()
    # The working image was 520 x 693: boxes beyond it prove they were scaled back up.
    assert boxes[:, 2].max() > 520 and boxes[:, 3].max() > 693
    assert decode_mask(record["segmentation"]).shape == (512, 384)  # portrait, as a person sees it
    fractions = np.bincount(decode_mask(record["segmentation"]).ravel(), minlength=21) / (512 * 384)
    for c in record["segmentation"]["classes"]:
        assert c["fraction"] == pytest.approx(fractions[c["index"]])


def test_search_finds_detected_classes_and_counts_boxes(indexed):
    index, _, rotated, _ = indexed
    store = IndexStore.open(index, create=False)
    try:
        db = sqlite3.connect(index / "index.sqlite")
        label, count = db.execute(
            "SELECT o.label, count(*) FROM objects o JOIN photos p ON p.id = o.photo_id WHERE p.path = ? "
            "GROUP BY o.label ORDER BY count(*) DESC LIMIT 1", (str(rotated),)).fetchone()
        hits = search(store, [label], min_score=0.0, limit=10)
        hit = next(h for h in hits if h.path == str(rotated))
        assert any(m["source"] == "detect" for m in hit.labels)
        boxed = [h.path for h in search(store, [], objects_of=[label], min_count=count, limit=10)]
        assert str(rotated) in boxed
        assert str(rotated) not in [h.path for h in search(store, [], objects_of=[label], min_count=count + 1)]
        assert search(store, [], objects_of=[label], min_area=1.01) == []
    finally:
        store.close()


def test_show_draws_the_index_and_cuts_out_a_class(indexed, tmp_path):
    index, _, rotated, _ = indexed
    out = tmp_path / "shown.png"
    result = CliRunner().invoke(cli, ["show", str(rotated), "--index", str(index), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).width == 768  # 1200 x 1600 drawn with its longer side at 1024
    store = IndexStore.open(index, create=False)
    record = load_record(store, index, str(rotated))
    store.close()
    top = max((c for c in record["segmentation"]["classes"] if c["index"]), key=lambda c: c["fraction"])
    cut = tmp_path / "cut.png"
    result = CliRunner().invoke(cli, ["show", str(rotated), "--index", str(index), "--cutout", top["label"],
                                      "--out", str(cut)])
    assert result.exit_code == 0, result.output
    alpha = np.asarray(Image.open(cut))[..., 3]
    assert alpha.shape == (1600, 1200) and (alpha > 0).mean() == pytest.approx(top["fraction"], abs=0.01)
    result = CliRunner().invoke(cli, ["show", str(rotated), "--index", str(index), "--cutout", "zeppelin"])
    assert result.exit_code == 2 and "classes present" in result.output


def test_status_shows_per_task_coverage(indexed):
    index, *_ = indexed
    result = CliRunner().invoke(cli, ["status", "--index", str(index)])
    assert result.exit_code == 0
    assert f"detect        3 100%  {DETECTOR} (3)" in result.output
    assert "faces         0   0%  off by default (`photos index ... --models classify,detect,segment,faces`)" \
        in result.output  # first: nobody asked for faces


def test_missing_weights_skip_a_task_and_a_later_run_adds_only_it(tmp_path, untrained, eval_photos, ray_local):
    weights, specs = untrained
    root = tmp_path / "library"
    photos = copy_photos(eval_photos[300:302], root)
    index = tmp_path / "index"
    first = index_library(settings_for(root, index, tmp_path / "empty", tasks=("classify", "detect")),
                          specs={"detect": specs["detect"]})
    assert set(first.skipped_tasks) == {"detect"} and first.indexed == 2
    assert "--weights-dir" in first.skipped_tasks["detect"] and specs["detect"].file_name in first.skipped_tasks["detect"]
    db = sqlite3.connect(index / "index.sqlite")
    classified = db.execute("SELECT count(*) FROM labels WHERE source = 'classify'").fetchone()[0]
    second = index_library(settings_for(root, index, weights, tasks=("classify", "detect")),
                           specs={"detect": specs["detect"]})
    assert (second.indexed, second.changed, second.unchanged) == (2, 2, 0)  # re-run: detect only
    assert db.execute("SELECT count(*) FROM labels WHERE source = 'classify'").fetchone()[0] == classified
    assert db.execute("SELECT t.key, count(*) FROM photos, json_each(photos.models) t GROUP BY 1 ORDER BY 1"
                      ).fetchall() == [("classify", 2), ("detect", 2)]
    store = IndexStore.open(index, create=False)
    record = load_record(store, index, str(photos[0]))
    store.close()
    assert record["labels"] and record["objects"] is not None
    assert record["models"] == {"classify": "efficientnet_lite0", "detect": DETECTOR}
    third = index_library(settings_for(root, index, weights, tasks=("classify", "detect")),
                          specs={"detect": specs["detect"]})
    assert (third.indexed, third.unchanged) == (0, 2)


def test_eval_command_scores_an_annotated_set(tmp_path, untrained, ray_local):
    """A generated COCO-style set: three images with a box and a polygon each."""
    weights, specs = untrained
    images = tmp_path / "images"
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    for i in range(3):
        name = f"img{i}.png"
        canvas = np.full((240, 320, 3), 200, np.uint8)
        canvas[60:180, 40 + 40 * i:160 + 40 * i] = (30 * i, 90, 160)
        images.mkdir(exist_ok=True)
        Image.fromarray(canvas).save(images / name)
        coco["images"].append({"id": i, "file_name": name, "width": 320, "height": 240})
        x = 40 + 40 * i
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 18 if i % 2 else 1, "iscrowd": 0,
                                    "bbox": [x, 60, 120, 120], "segmentation": [[x, 60, x + 120, 60, x + 120, 180, x, 180]]})
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(coco))
    index = tmp_path / "index"
    index_library(settings_for(images, index, weights, tasks=("detect", "segment")), specs=specs)
    result = CliRunner().invoke(cli, ["eval", str(annotations), "--images", str(images), "--index", str(index), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["images_in_index"] == 3 and figures["annotations"] == 3 and figures["boxes"] > 0
    assert 0 <= figures["precision"] <= 1 and 0 <= figures["recall"] <= 1 and 0 <= figures["mean_iou"] <= 1
    assert set(figures["class_iou"]) >= {"__background__"}
    classes = figures["classes"]
    assert classes["person"]["annotations"] == 2 and classes["dog"]["annotations"] == 1
    assert sum(c["boxes"] for c in classes.values()) == figures["boxes"]
    assert all(c["precision"] is None for c in classes.values() if not c["boxes"])  # undefined, not 0
    text = CliRunner().invoke(cli, ["eval", str(annotations), "--images", str(images), "--index", str(index)]).output
    assert "class             boxes annotated precision recall" in text and "\n  person " in text
    print(f"\nrandom-weight models on the generated set: {figures}")
