"""A Pillow plugin that kills its own process on one magic header: a decoder crash on demand.

Image decoders written in C (libjpeg, libtiff, libwebp, ...) have crashed on crafted
files, and the kernel's out-of-memory killer ends a process with SIGKILL. To test that
such a death costs one error row and not the run, the test session registers this
plugin in every Ray worker through two documented extension points: Ray's
``worker_process_setup_hook`` (see ``ray_local`` in conftest.py) and Pillow's
``Image.register_open``. A file starting with ``MAGIC`` then goes through the library's
real decode path (``Image.open``) and dies inside it; the library knows nothing of this.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from PIL import Image, ImageFile

MAGIC = b"PHOTOS-CRASH:"
"""At most 16 bytes: Pillow identifies formats from the first 16 bytes of a file."""


def write_crashing_file(path: Path, signal_name: str) -> Path:
    """A file whose decoding kills the decoding process with ``signal_name`` (SIGSEGV, SIGKILL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(MAGIC + signal_name.encode() + b"\0" * 64)
    return path


class _CrashingImageFile(ImageFile.ImageFile):
    format = "PHOTOS_TEST_CRASH"
    format_description = "test file that crashes its decoder"

    def _open(self) -> None:
        name = self.fp.read(64)[len(MAGIC):].split(b"\0")[0].decode()
        os.kill(os.getpid(), getattr(signal, name))


def register() -> None:
    """Ray worker setup hook: teach this process's Pillow the crashing format."""
    Image.register_open(_CrashingImageFile.format, _CrashingImageFile, lambda prefix: prefix.startswith(MAGIC))
