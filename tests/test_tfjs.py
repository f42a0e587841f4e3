"""TF.js graph models converted to torch: equal to the real TF.js runtime, and loud when
a file is damaged or uses an op the converter lacks.

The reference is TF.js 4.22.0 itself (its pure-JS CPU backend, run in node by
``tests/tfjs_reference/run.js``), installed once with npm into ~/.cache/photos; those
tests skip, saying why, where node or npm is missing. ``tests/data/tfjs_golden.json``
holds values the reference produced on the same real photos, so the comparison also
runs without node (regenerate with ``python tests/test_tfjs.py --write-golden``).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import nanodet, selfie
from models.tfjs import TfjsGraph, load_graph_model
from pipeline.errors import ModelFileError, UnsupportedModelError

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared"
WEIGHTS = SHARED / "weights" / "human-models-3.0.4"
COCO = SHARED / "eval" / "coco64"
FACES = SHARED / "eval" / "faces"
REFERENCE_SRC = ROOT / "tests" / "tfjs_reference"
REFERENCE_DIR = Path.home() / ".cache" / "photos" / "tfjs-reference"
GOLDEN = ROOT / "tests" / "data" / "tfjs_golden.json"
TOLERANCE = 1e-3
MODELS = ["nanodet", "selfie", "blazeface", "mobilefacenet", "faceres"]
COCO_PHOTOS = ["000000000436.jpg", "000000000036.jpg"]  # people large and small, plus other objects


def _photo(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _face_photos() -> list[np.ndarray]:
    folders = sorted(p for p in FACES.iterdir() if p.is_dir())[:2]
    return [_photo(min(f.iterdir())) for f in folders]


def _square(images: list[np.ndarray], size: int, scale: float, shift: float) -> np.ndarray:
    """NHWC float32 photos resized to size x size, then * scale + shift."""
    out = [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR), np.float32)
           for im in images]
    return np.stack(out) * scale + shift


def model_input(name: str) -> np.ndarray:
    """The real photos each model is checked on, preprocessed as the model expects."""
    if name == "nanodet":
        return nanodet.preprocess([_photo(COCO / "images" / f) for f in COCO_PHOTOS]).numpy()
    if name == "selfie":
        return selfie.preprocess([_photo(COCO / "images" / f) for f in COCO_PHOTOS]).numpy()
    faces = _face_photos()
    if name == "blazeface":
        return _square(faces, 256, 1 / 127.5, -1.0)
    if name == "mobilefacenet":
        return _square(faces, 112, 1 / 255, 0.0)
    return _square(faces, 224, 1 / 255, 0.0)  # faceres


@functools.cache
def graph(name: str) -> TfjsGraph:
    if not WEIGHTS.is_dir():
        pytest.fail(f"{WEIGHTS} is missing: the tests need the shared TF.js models")
    return load_graph_model(WEIGHTS / f"{name}.json", WEIGHTS / f"{name}.bin")


def run_torch(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        return {k: v.float().numpy() for k, v in graph(name)(torch.from_numpy(x)).items()}


# -- the real TF.js runtime -----------------------------------------------------------

def install_reference() -> Path:
    """TF.js 4.22.0 in ~/.cache/photos/tfjs-reference (installed once); skips if it can't be."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the TF.js reference runtime; not found on PATH")
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    for f in ("package.json", "run.js"):
        shutil.copy(REFERENCE_SRC / f, REFERENCE_DIR / f)
    installed = REFERENCE_DIR / "node_modules" / "@tensorflow" / "tfjs" / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != "4.22.0":
        try:
            subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=REFERENCE_DIR, check=True,
                           capture_output=True, text=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            pytest.skip(f"npm install of @tensorflow/tfjs@4.22.0 failed: {exc} {detail[-300:]}")
    return REFERENCE_DIR


def run_reference(name: str, x: np.ndarray, work: Path) -> dict[str, np.ndarray]:
    """The TF.js runtime's outputs for input ``x`` (one photo per call, concatenated)."""
    folder = install_reference()
    model = graph(name)
    work.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(x, np.float32).tofile(work / "input.f32")
    request = {"model": str(WEIGHTS / f"{name}.json"), "weights": [str(WEIGHTS / f"{name}.bin")],
               "input": {"name": model.input_names[0], "file": str(work / "input.f32"), "shape": list(x.shape)},
               "outputs": model.output_names, "out_dir": str(work / "out")}
    (work / "request.json").write_text(json.dumps(request))
    done = subprocess.run(["node", str(folder / "run.js"), str(work / "request.json")],
                          check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((work / "out" / "outputs.json").read_text())
    assert meta["version"] == "4.22.0" and meta["backend"] == "cpu"
    return {k: np.fromfile(work / "out" / v["file"], np.float32).reshape(v["shape"])
            for k, v in meta["outputs"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_matches_the_tfjs_runtime_on_real_photos(name: str, tmp_path: Path) -> None:
    x = model_input(name)
    reference = run_reference(name, x, tmp_path)
    ours = run_torch(name, x)
    assert set(ours) == set(reference)
    for output, expected in reference.items():
        assert ours[output].shape == expected.shape, output
        diff = float(np.abs(ours[output] - expected).max())
        print(f"{name} {output}: max abs diff {diff:.3g} (max |value| {np.abs(expected).max():.3g})")
        assert diff <= TOLERANCE, f"{name} {output}: max abs diff {diff}"
        assert np.abs(expected).max() > 0, f"{name} {output} is all zeros: a useless check"


# -- golden values from the reference, checked without node ---------------------------

GOLDEN_POINTS = 16


def summarise(values: np.ndarray) -> dict:
    """A few numbers that pin an output: per-photo sums and values at spread indices."""
    flat = values.reshape(values.shape[0], -1)
    points = np.linspace(0, flat.shape[1] - 1, GOLDEN_POINTS).astype(int)
    top = flat.argmax(axis=1)
    return {"shape": list(values.shape), "sum": flat.sum(1, dtype=np.float64).tolist(),
            "abs_sum": np.abs(flat).sum(1, dtype=np.float64).tolist(), "points": points.tolist(),
            "values": flat[:, points].tolist(), "argmax": top.tolist(),
            "max": flat[np.arange(len(flat)), top].tolist()}


@pytest.mark.parametrize("name", MODELS)
def test_golden_values_from_the_tfjs_runtime(name: str) -> None:
    golden = json.loads(GOLDEN.read_text())[name]
    ours = run_torch(name, model_input(name))
    assert set(ours) == set(golden)
    for output, expected in golden.items():
        got = ours[output].reshape(ours[output].shape[0], -1)
        assert list(ours[output].shape) == expected["shape"]
        np.testing.assert_allclose(got[:, expected["points"]], expected["values"], atol=TOLERANCE, rtol=0)
        n = got.shape[1]
        np.testing.assert_allclose(got.sum(1), expected["sum"], atol=TOLERANCE * n ** 0.5, rtol=1e-4)
        np.testing.assert_allclose(np.abs(got).sum(1), expected["abs_sum"], atol=TOLERANCE * n ** 0.5, rtol=1e-4)
        np.testing.assert_allclose(got.max(1), expected["max"], atol=TOLERANCE, rtol=0)


def write_golden() -> None:
    """Regenerate tests/data/tfjs_golden.json from the TF.js runtime."""
    import tempfile

    golden = {}
    for name in MODELS:
        with tempfile.TemporaryDirectory() as work:
            outputs = run_reference(name, model_input(name), Path(work))
        golden[name] = {k: summarise(v) for k, v in outputs.items()}
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")


# -- batches, memory format, precision, device --------------------------------------

@pytest.mark.parametrize("name", ["nanodet", "selfie"])
def test_a_batch_of_three_equals_three_singles(name: str) -> None:
    x = np.concatenate([model_input(name), model_input(name)[:1]])  # the JSON says batch 1
    batch = run_torch(name, x)
    for i in range(3):
        single = run_torch(name, x[i:i + 1])
        for output in batch:
            np.testing.assert_allclose(batch[output][i:i + 1], single[output], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["nanodet", "selfie"])
def test_channels_last_gives_the_same_result(name: str) -> None:
    x = model_input(name)
    plain = run_torch(name, x)
    model = load_graph_model(WEIGHTS / f"{name}.json", WEIGHTS / f"{name}.bin").to(memory_format=torch.channels_last)
    tensor = torch.from_numpy(x)
    if tensor.shape[1] == 3:  # NCHW input: feed it channels-last too
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ours = {k: v.numpy() for k, v in model(tensor).items()}
    for output in plain:
        np.testing.assert_allclose(ours[output], plain[output], atol=1e-4, rtol=0)


def test_autocast_bfloat16_on_cpu_stays_close() -> None:
    """bf16 keeps 8 bits of mantissa: measured 1.2% of selfie's mask pixels flip at 0.5
    and nanodet's scores move by at most 0.007 on these photos."""
    with torch.inference_mode():
        x = torch.from_numpy(model_input("selfie"))
        exact = graph("selfie")(x)["activation_10"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = graph("selfie")(x)["activation_10"]
        assert low.dtype == torch.bfloat16  # the convolutions really ran in bf16
        assert float((low.float() - exact).abs().mean()) < 0.02
        assert float(((low.float() >= 0.5) != (exact >= 0.5)).float().mean()) < 0.03
        x = torch.from_numpy(model_input("nanodet"))
        exact = graph("nanodet")(x)["Identity"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = graph("nanodet")(x)["Identity"]
        assert float((low.float() - exact).abs().max()) < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("name", ["nanodet", "selfie"])
def test_cuda_matches_cpu(name: str) -> None:
    x = model_input(name)
    cpu = run_torch(name, x)
    model = load_graph_model(WEIGHTS / f"{name}.json", WEIGHTS / f"{name}.bin").cuda()
    # cuDNN's default TF32 convolutions moved Selfie's probability by 0.04 (H200): the
    # exact comparison is in fp32; the task wrappers also keep autocast off (tfjs_tasks.py).
    with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        gpu = {k: v.cpu().numpy() for k, v in model(torch.from_numpy(x).cuda()).items()}
    for output in cpu:
        np.testing.assert_allclose(gpu[output], cpu[output], atol=1e-3, rtol=0)


# -- damaged and unsupported files ----------------------------------------------------

def _copy(tmp_path: Path, name: str) -> tuple[Path, Path, dict]:
    json_path, bin_path = tmp_path / f"{name}.json", tmp_path / f"{name}.bin"
    shutil.copy(WEIGHTS / f"{name}.bin", bin_path)
    spec = json.loads((WEIGHTS / f"{name}.json").read_text())
    return json_path, bin_path, spec


def test_an_unknown_op_is_named_at_load_time(tmp_path: Path) -> None:
    json_path, bin_path, spec = _copy(tmp_path, "selfie")
    node = next(n for n in spec["modelTopology"]["node"] if n["op"] == "Relu6")
    node["op"] = "HardSwishDeluxe"
    json_path.write_text(json.dumps(spec))
    with pytest.raises(UnsupportedModelError) as caught:
        load_graph_model(json_path, bin_path)
    message = str(caught.value)
    assert "HardSwishDeluxe" in message and node["name"] in message and str(json_path) in message


def test_a_truncated_weights_file_is_named(tmp_path: Path) -> None:
    json_path, bin_path, spec = _copy(tmp_path, "nanodet")
    json_path.write_text(json.dumps(spec))
    data = bin_path.read_bytes()
    bin_path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFileError, match="truncated") as caught:
        load_graph_model(json_path, bin_path)
    assert str(bin_path) in str(caught.value)


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    json_path, _, spec = _copy(tmp_path, "nanodet")
    json_path.write_text(json.dumps(spec))
    with pytest.raises(ModelFileError) as caught:
        load_graph_model(json_path, WEIGHTS / "blazeface.bin")
    assert "blazeface.bin" in str(caught.value)


def test_a_weight_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    json_path, bin_path, spec = _copy(tmp_path, "selfie")
    entry = next(w for w in spec["weightsManifest"][0]["weights"] if w["name"] == "Conv2D/filter")
    entry["shape"] = [entry["shape"][0], entry["shape"][1], entry["shape"][3], entry["shape"][2]]  # same size
    json_path.write_text(json.dumps(spec))
    with pytest.raises(ModelFileError) as caught:
        load_graph_model(json_path, bin_path)
    assert str(json_path) in str(caught.value) and "Conv2D" in str(caught.value)


def test_a_json_that_is_not_a_model_is_named(tmp_path: Path) -> None:
    json_path = tmp_path / "x.json"
    json_path.write_text('{"format": "graph-model"}')
    with pytest.raises(ModelFileError, match=str(json_path)):
        load_graph_model(json_path, WEIGHTS / "selfie.bin")


if __name__ == "__main__" and "--write-golden" in sys.argv:
    write_golden()
