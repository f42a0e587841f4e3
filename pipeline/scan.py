"""Stage 1: walk photo roots and yield candidate image files.

A file is a candidate when its extension is an image extension (any case), or when it
has no extension and its first bytes are an image signature (cameras and phones always
write an extension; extension-less files are what sniffing is for). Content is checked
for real at decode time, so a text file named ``.png`` becomes an error row there.

The walk never lists a folder twice (symlink cycles end), skips hidden
files and folders (``.thumbnails``, macOS ``._IMG_0001.JPG`` resource forks), and
reports folders it cannot read, broken or looping links and image-named pipes, sockets
and devices as :class:`FileError` rows instead of stopping (or hanging on a read).
Paths leave the scan as index text (:mod:`pipeline.pathnames`), so a file name that is
not UTF-8 travels through Ray, Arrow and SQLite like any other.

A root may also be a URI (``s3://bucket/photos``); :mod:`pipeline.storage` walks it with
the same rules (extensions, sniffing, hidden names), and its photos keep their URIs.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ScanError
from pipeline.formats import HEIF_EXTENSIONS, is_heif_header
from pipeline.pathnames import path_text
from pipeline.records import FileError, ScannedFile
from pipeline.storage import check_uri_root, is_uri, open_binary, walk_uri

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
) | HEIF_EXTENSIONS

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
    """True when the file starts with the signature of a supported image format.

    Opened non-blocking, so a file swapped for a named pipe after its stat cannot hang us.
    """
    try:
        if is_uri(str(path)):
            with open_binary(str(path)) as f:
                head = f.read(16)
        else:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                head = os.read(fd, 16)
            finally:
                os.close(fd)
    except OSError:
        return False
    return any(head[offset : offset + len(sig)] == sig for offset, sig in _SIGNATURES) or is_heif_header(head)


def check_roots(roots: Iterable[str]) -> list[Path | str]:
    """Resolve photo roots, raising :class:`ScanError` for one that is not a readable folder.

    Local roots become absolute paths; URI roots stay strings."""
    checked: list[Path | str] = []
    for root in roots:
        if is_uri(root):
            checked.append(check_uri_root(root))
            continue
        path = Path(root).expanduser()
        if not path.exists():
            raise ScanError(f"photo folder not found: {root}")
        if not path.is_dir():
            raise ScanError(f"not a folder: {root} (give the folder that holds your photos)")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ScanError(f"photo folder not readable: {root}")
        checked.append(Path(os.path.abspath(path)))  # absolute, ".." folded, links kept
    if not checked:
        raise ScanError("no photo folder given")
    return checked


def scan_library(roots: Iterable[str], threads: int = 8) -> Iterator[ScannedFile | FileError]:
    """Yield every candidate photo under ``roots``, and scan errors, in no fixed order.

    Stat-only: a file is opened only when it has no extension (to sniff it). Folders are
    listed by ``threads`` threads, which is what makes a nightly scan of a network share
    fast (each listing waits on the server, not the CPU). Raises :class:`ScanError` up
    front if a root is missing or not a folder.
    """
    seen_dirs: set[tuple[int, int]] = set()
    with ThreadPoolExecutor(threads, thread_name_prefix="scan") as pool:
        pending: set[Future[_Listing]] = set()
        for root in check_roots(roots):
            if isinstance(root, str):
                yield from _walk_uri_root(root)
                continue
            st = root.stat()
            if (st.st_dev, st.st_ino) not in seen_dirs:
                seen_dirs.add((st.st_dev, st.st_ino))
                pending.add(pool.submit(_list_folder, str(root)))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                listing = future.result()
                yield from listing.items
                for folder, identity in listing.subfolders:
                    if identity not in seen_dirs:  # a symlink cycle, or a folder reached twice
                        seen_dirs.add(identity)
                        pending.add(pool.submit(_list_folder, folder))


@dataclass
class _Listing:
    items: list[ScannedFile | FileError] = field(default_factory=list)
    subfolders: list[tuple[str, tuple[int, int]]] = field(default_factory=list)


def _list_folder(folder: str) -> _Listing:
    """One folder's candidate files (sorted by name) and subfolders with their identity."""
    listing = _Listing()
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        listing.items.append(FileError(path_text(folder), "scan", f"cannot list folder: {exc.strerror}", folder=True))
        return listing
    for entry in entries:
        if entry.name.startswith("."):
            continue
        suffix = os.path.splitext(entry.name)[1].lower()
        candidate = suffix in IMAGE_EXTENSIONS or suffix == ""
        try:
            if entry.is_dir():  # follows symlinks: a folder named x.jpg is walked, not decoded
                st = entry.stat()
                listing.subfolders.append((entry.path, (st.st_dev, st.st_ino)))
                continue
            if not candidate:
                continue
            info = entry.stat()  # follows symlinks
        except OSError as exc:
            if candidate:
                listing.items.append(FileError(path_text(entry.path), "scan", _stat_failure(entry, exc)))
            continue
        if not stat.S_ISREG(info.st_mode):
            # Never opened: reading a named pipe or /dev/zero would stall the run.
            if suffix:
                listing.items.append(FileError(path_text(entry.path), "scan",
                                               f"not a regular file but {_file_kind(info.st_mode)}; skipped"))
            continue
        if suffix == "" and not looks_like_image(entry.path):
            continue
        listing.items.append(ScannedFile(path_text(entry.path), info.st_size, info.st_mtime_ns))
    return listing


def _stat_failure(entry: os.DirEntry[str], exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"symbolic link loop: the link leads back to itself ({exc.strerror})"
    if exc.errno == errno.ENOENT and entry.is_symlink():
        return f"broken symbolic link: its target does not exist ({exc.strerror})"
    return f"cannot stat file: {exc.strerror}"


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _walk_uri_root(root: str) -> Iterator[ScannedFile | FileError]:
    try:
        for uri, size, mtime_ns in walk_uri(root):
            suffix = os.path.splitext(uri.rsplit("/", 1)[-1])[1].lower()
            if suffix in IMAGE_EXTENSIONS or (suffix == "" and looks_like_image(uri)):
                yield ScannedFile(uri, size, mtime_ns)
    except OSError as exc:
        yield FileError(root, "scan", f"cannot list folder: {exc}", folder=True)
