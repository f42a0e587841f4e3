"""Stage 1: walk photo roots and yield candidate image files.

A file is a candidate when its extension is an image extension (any case), or when it
has no extension and its first bytes are an image signature (cameras and phones always
write an extension; extension-less files are what sniffing is for). Content is checked
for real at decode time, so a text file named ``.png`` becomes an error row there.

The walk never follows a symlinked folder twice (symlink cycles end), skips hidden
files and folders (``.thumbnails``, macOS ``._IMG_0001.JPG`` resource forks), and
reports folders it cannot read as :class:`FileError` rows instead of stopping.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.errors import ScanError
from pipeline.records import FileError, ScannedFile

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF, little-endian
    (0, b"MM\x00*"),  # TIFF, big-endian
    (8, b"WEBP"),  # RIFF....WEBP
)


def looks_like_image(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with the signature of a supported image format."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return any(head[offset : offset + len(sig)] == sig for offset, sig in _SIGNATURES)


def check_roots(roots: Iterable[str]) -> list[Path]:
    """Resolve photo roots, raising :class:`ScanError` for one that is not a readable folder."""
    checked = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.exists():
            raise ScanError(f"photo folder not found: {root}")
        if not path.is_dir():
            raise ScanError(f"not a folder: {root} (give the folder that holds your photos)")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ScanError(f"photo folder not readable: {root}")
        checked.append(path.absolute())
    if not checked:
        raise ScanError("no photo folder given")
    return checked


def scan_library(roots: Iterable[str]) -> Iterator[ScannedFile | FileError]:
    """Yield every candidate photo under ``roots`` (sorted per folder), and scan errors.

    Raises :class:`ScanError` up front if a root is missing or not a folder.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for root in check_roots(roots):
        yield from _walk(str(root), seen_dirs)


def _walk(root: str, seen_dirs: set[tuple[int, int]]) -> Iterator[ScannedFile | FileError]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            yield FileError(folder, "scan", f"cannot read folder: {exc.strerror}")
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            continue  # a symlink cycle, or a folder reached twice through links
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield FileError(folder, "scan", f"cannot list folder: {exc.strerror}")
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
                if is_dir:
                    subfolders.append(entry.path)
                    continue
                if not _is_candidate(entry):
                    continue
                info = entry.stat()  # follows symlinks
            except OSError as exc:
                yield FileError(entry.path, "scan", f"cannot stat file: {exc.strerror}")
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            yield ScannedFile(entry.path, info.st_size, info.st_mtime_ns)
        stack.extend(reversed(subfolders))


def _is_candidate(entry: os.DirEntry[str]) -> bool:
    suffix = os.path.splitext(entry.name)[1].lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    return suffix == "" and looks_like_image(entry.path)
