"""Stage 2: turn a photo file into a small RGB array the models can share.

Runs in Ray CPU tasks. Each photo is decoded once, to a "working image" whose shorter
side is about ``image_size`` pixels, and every model resizes from there. Why each step:

- JPEG ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale, 4-10x cheaper than a full
  12 MP decode followed by a resize.
- EXIF orientation is applied so that boxes and masks are in the photo as a person sees it.
- Every mode (CMYK, palette, alpha, 16-bit, greyscale) ends as 8-bit RGB.
- The declared pixel count is checked before any pixel is decoded (decompression bombs).
- A file whose size or modification time differs from the scan's (still being written,
  replaced, edited) is refused rather than indexed half-written; the error row keeps the
  scan's size and time, so the next run sees the change and tries the file again.
- Only regular files are opened: a pipe swapped in after the scan would block forever.
- HEIC/HEIF and AVIF open through :mod:`pipeline.formats`; the EXIF metadata (date taken,
  camera, GPS) is read from the same opened image (:mod:`pipeline.metadata`).

A file that cannot be decoded raises :class:`DecodeError` with a reason a person can act
on; :func:`decode_batch` turns it into an error row so the run goes on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DecodeError
from pipeline.fingerprint import fingerprint
from pipeline.formats import is_heif_header, register_formats
from pipeline.metadata import metadata_json, read_metadata
from pipeline.pathnames import os_path
from pipeline.storage import is_uri, open_binary, open_photo

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
MAX_ASPECT = 4
"""The working image's longer side is at most this many times ``image_size`` (panoramas)."""
CHANGED_SINCE_SCAN = (
    "file changed while the run was reading it (still being copied or written?); "
    "it will be indexed by the next run"
)


@dataclass(frozen=True)
class DecodedPhoto:
    """Working pixels plus the photo's size as a person sees it (after EXIF rotation)."""

    pixels: np.ndarray  # H x W x 3, uint8
    width: int
    height: int
    metadata: dict | None = None  # pipeline/metadata.py's record, None without EXIF


def decode_photo(path: str, image_size: int, max_pixels: int,
                 scanned: tuple[int, int] | None = None) -> DecodedPhoto:
    """Decode ``path`` to RGB with its shorter side at most ``image_size`` pixels.

    ``scanned`` is the (size, mtime_ns) the scan saw; a file that no longer has them
    before or after decoding is refused. Raises :class:`DecodeError` with a
    human-readable reason for anything that is not a readable, settled image.
    """
    try:
        return _decode(path, image_size, max_pixels, scanned)
    except DecodeError:
        raise
    except FileNotFoundError as exc:
        raise DecodeError("file disappeared before it could be read") from exc
    except PermissionError as exc:
        raise DecodeError("permission denied: cannot read the file") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError(f"not a recognised image format ({_describe_content(path)})") from exc
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"refused as a possible decompression bomb: {exc}") from exc
    except MemoryError as exc:
        raise DecodeError("image too large to decode in memory") from exc
    except OSError as exc:
        raise DecodeError(f"truncated or corrupt image data: {exc}") from exc
    except Exception as exc:  # Pillow plugins raise SyntaxError, ValueError, struct.error...
        raise DecodeError(f"corrupt image: {type(exc).__name__}: {exc}") from exc


def _decode(path: str, image_size: int, max_pixels: int, scanned: tuple[int, int] | None) -> DecodedPhoto:
    local = not is_uri(path)
    if local:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise DecodeError("is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError("not a regular file (a pipe, socket or device); skipped")
        if scanned is not None and (info.st_size, info.st_mtime_ns) != scanned:
            raise DecodeError(CHANGED_SINCE_SCAN)
    register_formats()
    source, size = open_photo(path)  # a URI's bytes are read here, through its filesystem
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    with _own_pixel_limit(), Image.open(source) as im:
        # Opening reads only the header; the limit below applies before any pixel.
        width, height = im.size
        if width * height > max_pixels:
            raise DecodeError(
                f"image declares {width}x{height} pixels ({width * height / 1e6:.0f} MP), "
                f"over the {max_pixels / 1e6:.0f} MP limit; refused as a possible "
                "decompression bomb (raise --max-pixels if it is a real photo)"
            )
        orientation = _orientation(im)
        metadata = read_metadata(im)
        if im.format == "JPEG":
            # A lower bound on both sides keeps the shorter side >= image_size.
            im.draft("RGB", (image_size, image_size))
        im.load()
        working = _resize(_to_rgb(im), image_size)
    if local and scanned is not None and _identity(path) != scanned:
        raise DecodeError(CHANGED_SINCE_SCAN)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if orientation in _TRANSPOSE:
        working = working.transpose(_TRANSPOSE[orientation])
    return DecodedPhoto(np.array(working, dtype=np.uint8), width, height, metadata)


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Let ``--max-pixels`` decide, not Pillow's fixed 179 MP bomb check.

    Pillow checks ``Image.MAX_IMAGE_PIXELS`` (a module global) inside ``Image.open``, so a
    limit above its own would never take effect and its message would win. Decode tasks
    are single-threaded, so switching it off around the open is safe; it is restored.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _identity(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8; a corrupt EXIF block means 'as stored', not a failure."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:
        return 1


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's convert("RGB") clips 16-bit values instead of scaling them.
        wide = np.asarray(im).astype(np.uint32)
        return Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        return Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        im.mode == "P" and "transparency" in im.info
    ):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _resize(im: Image.Image, image_size: int) -> Image.Image:
    """Shrink so the shorter side is ``image_size`` and the longer at most MAX_ASPECT times it."""
    w, h = im.size
    scale = min(1.0, image_size / min(w, h), MAX_ASPECT * image_size / max(w, h))
    if scale >= 1.0:
        return im
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return im.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _describe_content(path: str) -> str:
    try:
        with open_binary(path) as f:
            head = f.read(64)
    except OSError:
        return "unreadable"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "the file contains text"
    if is_heif_header(head):
        return "a HEIF/AVIF file that is truncated or corrupt"
    return f"content starts with {head[:8].hex(' ')}"


def decode_batch(batch: dict[str, np.ndarray], image_size: int, max_pixels: int) -> dict[str, np.ndarray]:
    """Ray Data stage: decode every ``path`` of the batch; failures become error rows.

    ``path`` holds index text (:mod:`pipeline.pathnames`); ``size`` and ``mtime_ns`` are
    what the scan saw, checked again here. Adds ``image`` (H x W x 3 uint8, a 0x0x3 array
    for failures), ``width``, ``height``, ``fingerprint`` (see ``pipeline/fingerprint.py``),
    ``metadata`` (JSON text, "" for none: see ``pipeline/metadata.py``), ``error_stage``
    and ``error_reason`` ("" when the photo decoded). Other columns pass through.
    """
    n = len(batch["path"])
    images = np.empty(n, dtype=object)
    width = np.zeros(n, dtype=np.int32)
    height = np.zeros(n, dtype=np.int32)
    prints = np.full(n, "", dtype=object)
    metadata = np.full(n, "", dtype=object)
    stage = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)
    for i, path in enumerate(batch["path"]):
        scanned = (int(batch["size"][i]), int(batch["mtime_ns"][i]))
        try:
            source = str(path) if is_uri(str(path)) else os_path(str(path))  # URIs are stored as is
            photo = decode_photo(source, image_size, max_pixels, scanned)
            prints[i] = fingerprint(source)
        except DecodeError as exc:
            images[i] = np.zeros((0, 0, 3), dtype=np.uint8)
            stage[i], reason[i] = exc.stage, exc.reason
            continue
        except OSError as exc:  # the file vanished or became unreadable after decoding
            images[i] = np.zeros((0, 0, 3), dtype=np.uint8)
            stage[i], reason[i] = "decode", f"cannot read the file: {exc.strerror}"
            continue
        images[i], width[i], height[i] = photo.pixels, photo.width, photo.height
        metadata[i] = metadata_json(photo.metadata)
    return {**batch, "image": images, "width": width, "height": height, "fingerprint": prints,
            "metadata": metadata, "error_stage": stage, "error_reason": reason}
