"""Image formats beyond Pillow's own: HEIC/HEIF (iPhones) and, where Pillow lacks it, AVIF.

pillow-heif plugs into Pillow's opener registry, a process-wide table. Registering it
at import time would be a side effect of importing any module that imports this one,
so decoding calls :func:`register_formats` instead: once per process (a Ray worker
imports the decode module afresh and registers on its first photo).

HEIF stores rotation in the container (``irot``/``imir``), which libheif applies while
decoding; pillow-heif then reports EXIF orientation 1, so the decode stage never rotates
a HEIC twice. A HEIC whose EXIF says "rotate" but whose container does not is shown as
stored: the HEIF standard makes the container authoritative, as iOS and libheif do. Pillow's AVIF reader keeps the EXIF orientation, which decode applies as
for a JPEG.
"""

from __future__ import annotations

import functools

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif", ".avif"})
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
                         b"mif1", b"msf1", b"avif", b"avis"})
"""ISO-BMFF major brands of HEIF and AVIF still images and sequences (bytes 8-12 of the file)."""


def is_heif_header(head: bytes) -> bool:
    """True when ``head`` (a file's first 12+ bytes) is an ISO-BMFF ``ftyp`` box of a HEIF/AVIF brand."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


@functools.cache
def register_formats() -> tuple[str, ...]:
    """Register HEIF (and AVIF if Pillow cannot read it) with Pillow; return what was added."""
    from PIL import features

    added: list[str] = []
    try:
        import pillow_heif
    except ImportError:  # an install without the plugin still reads every other format
        return ()
    pillow_heif.register_heif_opener()
    added.append("HEIF")
    if not features.check("avif") and hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()
        added.append("AVIF")
    return tuple(added)
