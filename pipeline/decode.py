"""Stage 2: turn a photo file into a small RGB array the models can share.

Runs in Ray CPU tasks. Each photo is decoded once, to a "working image" whose shorter
side is about ``image_size`` pixels, and every model resizes from there. Why each step:

- JPEG ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale, 4-10x cheaper than a full
  12 MP decode followed by a resize.
- EXIF orientation is applied so that boxes and masks are in the photo as a person sees it.
- Every mode (CMYK, palette, alpha, 16-bit, greyscale) ends as 8-bit RGB.
- The declared pixel count is checked before any pixel is decoded (decompression bombs).

A file that cannot be decoded raises :class:`DecodeError` with a reason a person can act
on; :func:`decode_batch` turns it into an error row so the run goes on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DecodeError
from pipeline.fingerprint import fingerprint
from pipeline.storage import open_binary, open_photo

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


@dataclass(frozen=True)
class DecodedPhoto:
    """Working pixels plus the photo's size as a person sees it (after EXIF rotation)."""

    pixels: np.ndarray  # H x W x 3, uint8
    width: int
    height: int


def decode_photo(path: str, image_size: int, max_pixels: int) -> DecodedPhoto:
    """Decode ``path`` to RGB with its shorter side at most ``image_size`` pixels.

    Raises :class:`DecodeError` with a human-readable reason for anything that is not
    a readable image.
    """
    try:
        return _decode(path, image_size, max_pixels)
    except DecodeError:
        raise
    except FileNotFoundError as exc:
        raise DecodeError("file disappeared before it could be read") from exc
    except PermissionError as exc:
        raise DecodeError("permission denied: cannot read the file") from exc
    except IsADirectoryError as exc:
        raise DecodeError("is a folder, not a file") from exc
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


def _decode(path: str, image_size: int, max_pixels: int) -> DecodedPhoto:
    source, size = open_photo(path)  # a URI's bytes are read here, through its filesystem
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(source) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise DecodeError(
                    f"image declares {width}x{height} pixels ({width * height / 1e6:.0f} MP), "
                    f"over the {max_pixels / 1e6:.0f} MP limit; refused as a possible "
                    "decompression bomb (raise --max-pixels if it is a real photo)"
                )
            orientation = _orientation(im)
            if im.format == "JPEG":
                # A lower bound on both sides keeps the shorter side >= image_size.
                im.draft("RGB", (image_size, image_size))
            im.load()
            working = _resize(_to_rgb(im), image_size)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if orientation in _TRANSPOSE:
        working = working.transpose(_TRANSPOSE[orientation])
    return DecodedPhoto(np.array(working, dtype=np.uint8), width, height)


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
    return f"content starts with {head[:8].hex(' ')}"


def decode_batch(batch: dict[str, np.ndarray], image_size: int, max_pixels: int) -> dict[str, np.ndarray]:
    """Ray Data stage: decode every ``path`` of the batch; failures become error rows.

    Adds ``image`` (H x W x 3 uint8, a 0x0x3 array for failures), ``width``, ``height``,
    ``fingerprint`` (see ``pipeline/fingerprint.py``), ``error_stage`` and
    ``error_reason`` ("" when the photo decoded). Other columns pass through.
    """
    n = len(batch["path"])
    images = np.empty(n, dtype=object)
    width = np.zeros(n, dtype=np.int32)
    height = np.zeros(n, dtype=np.int32)
    prints = np.full(n, "", dtype=object)
    stage = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)
    for i, path in enumerate(batch["path"]):
        try:
            photo = decode_photo(str(path), image_size, max_pixels)
            prints[i] = fingerprint(str(path))
        except DecodeError as exc:
            images[i] = np.zeros((0, 0, 3), dtype=np.uint8)
            stage[i], reason[i] = exc.stage, exc.reason
            continue
        except OSError as exc:  # the file vanished or became unreadable after decoding
            images[i] = np.zeros((0, 0, 3), dtype=np.uint8)
            stage[i], reason[i] = "decode", f"cannot read the file: {exc.strerror}"
            continue
        images[i], width[i], height[i] = photo.pixels, photo.width, photo.height
    return {**batch, "image": images, "width": width, "height": height, "fingerprint": prints,
            "error_stage": stage, "error_reason": reason}
