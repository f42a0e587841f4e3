"""Find, fetch, verify and load model weight files.

Lookup order, so that offline machines and clusters work without a model hub:

1. ``--weights-dir`` / ``$PHOTOS_WEIGHTS_DIR`` (a folder you copy the files into);
2. the torch hub cache, ``$TORCH_HOME/hub/checkpoints`` (where torchvision itself caches);
3. a Python package that ships the file (EfficientNet-Lite0);
4. download into the torch hub cache with ``torch.hub.download_url_to_file``, as torchvision
   does, unless ``offline``.

Every file is checked against the SHA-256 prefix in its name (torchvision's convention,
e.g. ``resnet50-11ad3fa6.pth``) and loaded with ``weights_only=True``, so a truncated or
tampered file is an error, never a silently wrong model. A TF.js graph model is two files
(``X.json`` + ``X.bin``, ``spec.companion_files``): both must lie in the same folder and
both are checked against their full SHA-256 (``spec.sha256``).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline.errors import WeightsMissingError

if TYPE_CHECKING:
    from models.registry import ModelSpec

DOWNLOAD_STALL_S = 60.0
"""A download whose connection takes this long, or that then receives nothing for this
long, fails (torch.hub sets no timeout: on a network that drops packets, an offline GPU
run's start-up would wait for TCP to give up, once per missing model). Slow but moving
downloads are not cut short; name resolution is the system's and not bounded here. The
limit is the process default while the download runs (the driver, at start-up), so
sockets other threads open meanwhile get it too."""


def hub_checkpoints_dir() -> Path:
    """torchvision's weight cache: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def default_weights_dir() -> Path | None:
    env = os.environ.get("PHOTOS_WEIGHTS_DIR")
    return Path(env).expanduser() if env else None


def locate_weights(spec: ModelSpec, weights_dir: Path | None) -> Path | None:
    """The first local copy of ``spec``'s weight file, or None. Does not verify it."""
    folders = [d for d in (weights_dir or default_weights_dir(), hub_checkpoints_dir()) if d]
    for folder in folders:
        candidate = folder / spec.file_name
        if candidate.is_file() and all((folder / name).is_file() for name in spec.companion_files):
            return candidate
    if spec.packaged_path is not None:
        packaged = spec.packaged_path()
        if packaged is not None and packaged.is_file():
            return packaged
    return None


def missing_message(spec: ModelSpec, weights_dir: Path | None) -> str:
    """What to tell a user whose weights for ``spec`` are nowhere to be found."""
    looked = [str(d) for d in (weights_dir or default_weights_dir(), hub_checkpoints_dir()) if d]
    files = " and ".join((spec.file_name, *spec.companion_files))
    fetch = f"Run `photos models download {spec.name}` (on a machine with internet, then copy them)"
    return (
        f"weights for {spec.name} ({files}) not found in {', '.join(looked)}. "
        f"{fetch} into a folder given by --weights-dir (or PHOTOS_WEIGHTS_DIR), "
        f"or into {hub_checkpoints_dir()}."
    )


def fetch_weights(spec: ModelSpec, weights_dir: Path | None, offline: bool) -> Path:
    """A verified local weight file for ``spec``, downloading it if allowed and needed."""
    path = locate_weights(spec, weights_dir)
    if path is None and not offline and spec.url:
        try:
            path = download_weights(spec)
        except WeightsMissingError as exc:
            raise WeightsMissingError(f"{missing_message(spec, weights_dir)} ({exc})") from exc
    if path is None:
        raise WeightsMissingError(missing_message(spec, weights_dir))
    verify_weights(spec, path)
    return path


def download_weights(spec: ModelSpec) -> Path:
    """Download ``spec``'s weights into the torch hub cache, as torchvision would."""
    if not spec.url:
        raise WeightsMissingError(f"{spec.name} has no download address")
    target = hub_checkpoints_dir() / spec.file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _socket_timeout(DOWNLOAD_STALL_S):
            torch.hub.download_url_to_file(spec.url, str(target), hash_prefix=spec.sha256_prefix, progress=True)
    except Exception as exc:  # no network, proxy, HTTP error, bad hash: all mean "not available"
        raise WeightsMissingError(f"download from {spec.url} failed: {exc}") from exc
    return target


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Sockets created inside get ``seconds`` per connect and per read (urllib, which
    torch.hub uses, takes the process default when not given one)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(spec: ModelSpec, path: Path) -> None:
    """Raise if ``path``'s SHA-256 does not start with the prefix its name promises, or
    (``spec.sha256``) if it or a companion file beside it is not the pinned file."""
    for name, expected in spec.sha256:
        candidate = path.parent / name
        if not candidate.is_file() or _sha256(candidate) != expected:
            raise WeightsMissingError(
                f"weights file {candidate} is missing, corrupt or not the expected file (SHA-256 is not "
                f"{expected}); provide {name} of {spec.weights_name} again")
    if not spec.sha256_prefix:
        return
    if not _sha256(path).startswith(spec.sha256_prefix):
        raise WeightsMissingError(
            f"weights file {path} is corrupt or not the expected file (SHA-256 does not start "
            f"with {spec.sha256_prefix}); delete it and provide {spec.file_name} again"
        )


class ModelFiles(Mapping[str, torch.Tensor]):
    """The verified files of a model whose weights are not a state dict (a TF.js graph):
    an empty mapping that carries ``paths`` (``file_name`` first, then the companions), for
    the wrapper to build the model from with ``spec.build_from_files``."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __getitem__(self, key: str) -> torch.Tensor:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def load_state_dict(spec: ModelSpec, weights_dir: Path | None, offline: bool) -> Mapping[str, torch.Tensor]:
    """Fetch, verify and load ``spec``'s weights as tensors (never unpickling code); for a
    model built from files (``spec.build_from_files``), a :class:`ModelFiles`."""
    path = fetch_weights(spec, weights_dir, offline)
    if spec.load_file is not None:
        return spec.load_file(path)
    if spec.build_from_files is not None:
        return ModelFiles([path, *(path.parent / name for name in spec.companion_files)])
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsMissingError(f"cannot load weights file {path}: {exc}") from exc
