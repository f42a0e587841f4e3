"""Where photos live: a local folder, or a URI that a pyarrow filesystem understands.

A photo root is either a local path, walked with ``os.scandir`` and read with ``open``
(the fast path, unchanged), or a URI such as ``s3://bucket/photos``,
``gs://bucket/photos`` or ``file:///mnt/photos``, walked and read through
:mod:`pyarrow.fs`. On a cluster, a URI is what lets every node read every photo without
a shared mount; each node authenticates on its own (instance role, service account,
``AWS_*`` variables), since credentials never travel with the work.

A photo under a URI root is indexed under its URI (the root's scheme and bucket, then
the object's path, written as is, not percent-encoded), so decode tasks on any node can
open it and ``photos search`` shows where it is.
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Iterator
from typing import BinaryIO

import pyarrow.fs as pafs

from pipeline.errors import ScanError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
"""A scheme of two or more letters, so a Windows drive (C:/) is never taken for one."""


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` (s3, gs, file, ...), false for a local path."""
    return bool(_URI.match(path))


def locate(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``uri`` and the object's path inside it."""
    scheme, rest = uri.split("://", 1)
    authority, _, path = rest.partition("/")
    filesystem, base = _filesystem(scheme.lower(), authority)
    return filesystem, base.rstrip("/") + "/" + path


@functools.lru_cache(maxsize=32)
def _filesystem(scheme: str, authority: str) -> tuple[pafs.FileSystem, str]:
    """One filesystem per bucket and process: creating an S3 or GCS client resolves the
    bucket's region and credentials, too slow to repeat for every photo."""
    return pafs.FileSystem.from_uri(f"{scheme}://{authority}/")


def check_uri_root(root: str) -> str:
    """``root`` without a trailing slash; :class:`ScanError` unless it is a folder (prefix)."""
    try:
        filesystem, path = locate(root)
        info = filesystem.get_file_info(path)
    except (OSError, ValueError) as exc:  # unknown scheme, no credentials, unreachable
        raise ScanError(f"cannot open photo folder {root}: {exc}") from exc
    if info.type == pafs.FileType.NotFound:
        raise ScanError(f"photo folder not found: {root}")
    if info.type != pafs.FileType.Directory:
        raise ScanError(f"not a folder: {root} (give the folder that holds your photos)")
    scheme, rest = root.split("://", 1)
    return f"{scheme}://{rest.rstrip('/')}"


def walk_uri(root: str) -> Iterator[tuple[str, int, int]]:
    """(URI, size, mtime_ns) of every file under ``root``, hidden files and folders left out.

    One recursive listing: on an object store that is a few paged LIST calls, not one
    call per folder. Raises OSError if the listing fails.
    """
    filesystem, base = locate(root)
    base = base.rstrip("/")
    for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
        relative = info.path[len(base):].lstrip("/")
        if info.type != pafs.FileType.File or any(p.startswith(".") for p in relative.split("/")):
            continue
        yield f"{root}/{relative}", info.size or 0, info.mtime_ns or 0


def open_binary(path: str) -> BinaryIO:
    """A seekable binary file for a local path or a URI."""
    if not is_uri(path):
        return open(path, "rb")
    filesystem, inner = locate(path)
    return filesystem.open_input_file(inner)  # type: ignore[return-value]


def open_photo(path: str) -> tuple[str | io.BytesIO, int]:
    """What Pillow should open for ``path``, and its size in bytes.

    A local path is returned as is (Pillow reads only what it needs). A URI's object is
    read whole, in one request, which is what object stores are fast at; a photo is a
    few MB, and a decode task holds one at a time.
    """
    if not is_uri(path):
        return path, os.path.getsize(path)
    with open_binary(path) as f:
        data = f.read()
    return io.BytesIO(data), len(data)
