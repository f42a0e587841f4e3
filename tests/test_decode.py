from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.decode import decode_batch, decode_photo
from pipeline.errors import DecodeError
from tests.conftest import write_image

SIZE = 256
LIMIT = 200_000_000


def test_large_jpeg_decodes_small_with_shorter_side_at_image_size(tmp_path: Path):
    path = write_image(tmp_path / "big.jpg", size=(4000, 3000), fmt="JPEG", quality=90)
    photo = decode_photo(str(path), SIZE, LIMIT)
    assert (photo.width, photo.height) == (4000, 3000)
    assert photo.pixels.dtype == np.uint8 and photo.pixels.shape == (SIZE, 341, 3)


def _asymmetric() -> np.ndarray:
    """60x30 pixels, red rising left to right and green top to bottom: every flip and
    rotation of it is a different image, so each EXIF orientation has its own answer."""
    x = np.linspace(0, 255, 60)[None, :].repeat(30, axis=0)
    y = np.linspace(0, 255, 30)[:, None].repeat(60, axis=1)
    return np.dstack([x, y, np.full_like(x, 128)]).astype(np.uint8)


def _expected(orientation: int) -> np.ndarray:
    pixels = _asymmetric()
    return np.asarray(Image.fromarray(pixels).transpose(_TRANSPOSE[orientation])) if orientation > 1 else pixels


def _differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).mean() > 30


def test_every_orientation_of_the_test_image_is_distinct():
    for first in range(1, 9):
        for second in range(first + 1, 9):
            assert _differ(_expected(first), _expected(second)), (first, second)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(_asymmetric()).save(path, exif=exif, quality=95)
    photo = decode_photo(str(path), SIZE, LIMIT)
    rotated = orientation in (5, 6, 7, 8)
    assert (photo.width, photo.height) == ((30, 60) if rotated else (60, 30))
    expected = _expected(orientation)
    assert photo.pixels.shape == expected.shape
    assert np.abs(photo.pixels.astype(int) - expected.astype(int)).mean() < 10
    for other in set(range(1, 9)) - {orientation}:  # and it is not what another orientation gives
        assert _differ(photo.pixels, _expected(other)), other


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("mode,fmt,kwargs", [
    ("CMYK", "JPEG", {}),
    ("L", "PNG", {}),
    ("LA", "PNG", {}),
    ("RGBA", "PNG", {}),
    ("P", "GIF", {}),
])
def test_every_mode_becomes_8_bit_rgb(tmp_path: Path, mode: str, fmt: str, kwargs: dict):
    path = write_image(tmp_path / f"img.{fmt.lower()}", size=(40, 20), mode=mode, fmt=fmt, **kwargs)
    photo = decode_photo(str(path), SIZE, LIMIT)
    assert photo.pixels.shape == (20, 40, 3) and photo.pixels.dtype == np.uint8
    assert photo.pixels.max() > 100  # not clipped to black


def test_sixteen_bit_values_are_scaled_not_clipped(tmp_path: Path):
    values = np.full((10, 10), 40000, np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    photo = decode_photo(str(path), SIZE, LIMIT)
    assert photo.pixels.shape == (10, 10, 3) and (photo.pixels == 40000 >> 8).all()


def test_palette_transparency_is_composited_on_white(tmp_path: Path):
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0] * 256)
    path = tmp_path / "clear.png"
    image.save(path, transparency=0)
    assert decode_photo(str(path), SIZE, LIMIT).pixels.min() == 255


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"hello, this is text\n", "not a recognised image format (the file contains text)"),
    (bytes(range(256)) * 4, "not a recognised image format"),
])
def test_non_images_give_clear_reasons(tmp_path: Path, content: bytes, reason: str):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_photo(str(path), SIZE, LIMIT)


def test_truncated_jpeg_is_an_error(tmp_path: Path):
    good = write_image(tmp_path / "good.jpg", size=(400, 300), fmt="JPEG")
    half = tmp_path / "half.jpg"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DecodeError, match="truncated"):
        decode_photo(str(half), SIZE, LIMIT)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path):
    path = write_image(tmp_path / "bomb.png", size=(3000, 3000), mode="L", fmt="PNG")
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_photo(str(path), SIZE, max_pixels=1_000_000)


def test_panorama_keeps_a_bounded_long_side(tmp_path: Path):
    path = write_image(tmp_path / "pano.png", size=(20000, 100), fmt="PNG")
    photo = decode_photo(str(path), SIZE, LIMIT)
    assert (photo.width, photo.height) == (20000, 100)
    assert photo.pixels.shape[1] <= 4 * SIZE


def test_decode_batch_turns_failures_into_error_rows(tmp_path: Path):
    good = write_image(tmp_path / "good.jpg", fmt="JPEG")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    gone = tmp_path / "gone.jpg"
    scanned = [(p.stat().st_size, p.stat().st_mtime_ns) for p in (good, empty)] + [(1, 1)]
    batch = {"path": np.array([str(good), str(empty), str(gone)], dtype=object),
             "size": np.array([s for s, _ in scanned]), "mtime_ns": np.array([m for _, m in scanned])}
    out = decode_batch(batch, SIZE, LIMIT)
    assert list(out["error_reason"]) == ["", "empty file (0 bytes)", "file disappeared before it could be read"]
    assert list(out["error_stage"]) == ["", "decode", "decode"]
    assert out["image"][0].shape == (48, 64, 3) and out["image"][1].shape == (0, 0, 3)
    assert (out["width"][0], out["height"][0]) == (64, 48)


def test_a_file_changed_since_the_scan_is_refused_until_the_next_run(tmp_path: Path):
    path = write_image(tmp_path / "copying.jpg", size=(400, 300), fmt="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the scan sees half a file...
    scanned = (path.stat().st_size, path.stat().st_mtime_ns)
    path.write_bytes(data)  # ...and the copy finishes before decoding
    with pytest.raises(DecodeError, match="changed while the run was reading it"):
        decode_photo(str(path), SIZE, LIMIT, scanned)
    now = (path.stat().st_size, path.stat().st_mtime_ns)
    assert decode_photo(str(path), SIZE, LIMIT, now).width == 400  # what the next run sees


def test_a_pipe_swapped_in_after_the_scan_is_not_opened(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(DecodeError, match="not a regular file"):
        decode_photo(str(tmp_path / "pipe.jpg"), SIZE, LIMIT)
