"""The face task on real photos with the real weights: MTCNN, alignment, embeddings, and
the odd inputs (no face, greyscale, rotated, tiny, at the border, a crowd)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.face_align import ARCFACE_TEMPLATE, align, blur_score, similarity_transform
from models.faces import MAX_FACES, FaceFinder
from pipeline.decode import decode_photo

SHARED = Path(__file__).resolve().parents[2] / "shared"
FACES = SHARED / "eval" / "faces"
WEIGHTS = SHARED / "weights" / "facenet-pytorch-2.6.0"
BUSH = FACES / "George_W_Bush" / "George_W_Bush_0001.jpg"


@pytest.fixture(scope="module")
def finder() -> FaceFinder:
    if not WEIGHTS.is_dir() or not FACES.is_dir():
        pytest.fail("the tests need ../shared/weights and ../shared/eval/faces")
    return FaceFinder.from_folder(WEIGHTS)


def _pixels(path: Path, size: int = 640) -> tuple[np.ndarray, tuple[int, int]]:
    photo = decode_photo(str(path), size, 100_000_000)
    return photo.pixels, (photo.width, photo.height)


def test_similarity_transform_recovers_rotation_scale_and_shift():
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = ARCFACE_TEMPLATE @ (scale * rot).T + shift
    matrix = similarity_transform(moved, ARCFACE_TEMPLATE)
    back = moved @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(back, ARCFACE_TEMPLATE, atol=1e-9)


def test_one_face_with_landmarks_where_a_face_has_them(finder):
    pixels, size = _pixels(BUSH)
    [face] = finder.find(pixels, size)
    x1, y1, x2, y2 = face["x1"], face["y1"], face["x2"], face["y2"]
    marks = np.array(face["landmarks"]).reshape(5, 2)
    assert face["score"] > 0.99 and 60 < x2 - x1 < 160  # LFW crops: the face fills the middle
    assert np.all((marks[:, 0] > x1) & (marks[:, 0] < x2) & (marks[:, 1] > y1) & (marks[:, 1] < y2))
    assert marks[0, 0] < marks[1, 0] and marks[:2, 1].max() < marks[2, 1] < marks[3:, 1].min()  # eyes, nose, mouth
    assert len(face["embedding"]) == 1024 and abs(np.linalg.norm(face["embedding"]) - 1) < 1e-4
    aligned = align(pixels, marks * pixels.shape[1] / size[0])
    assert aligned.shape == (112, 112, 3) and blur_score(aligned) > 40


def test_rotated_photo_gives_boxes_in_upright_pixels(tmp_path, finder):
    upright = Image.open(BUSH)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees; viewers rotate it back
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif, quality=95)
    [a] = finder.find(*_pixels(BUSH))
    [b] = finder.find(*_pixels(rotated))
    assert abs(a["x1"] - b["x1"]) < 6 and abs(a["y2"] - b["y2"]) < 6
    assert float(np.dot(a["embedding"], b["embedding"])) > 0.9


def test_odd_inputs_never_crash(tmp_path, finder):
    pixels, size = _pixels(BUSH)
    grey = np.repeat(np.asarray(Image.fromarray(pixels).convert("L"))[..., None], 3, axis=2)
    assert len(finder.find(grey, size)) == 1
    assert finder.find(np.zeros((8, 8, 3), np.uint8)) == []  # smaller than any face
    assert finder.find(np.full((300, 400, 3), 127, np.uint8)) == []  # no face
    small = np.asarray(Image.fromarray(pixels).resize((60, 60)))  # the face is ~25 px: too small to keep
    assert finder.find(small) == []
    blurred = np.asarray(Image.fromarray(pixels).resize((40, 40)).resize(pixels.shape[1::-1], Image.BILINEAR))
    assert finder.find(blurred) == []  # big enough, but too blurred to recognise
    cut = pixels[:, : pixels.shape[1] // 2 + 10]  # the right half of the face is outside the photo
    for face in finder.find(cut):
        assert 0 <= face["x1"] < face["x2"] <= cut.shape[1]


@pytest.mark.slow
def test_a_crowd_is_bounded(finder):
    """A 15 x 14 wall of 210 faces: at most ``max_faces`` kept, every box inside the photo.

    The tiles are small (faces of ~40 px): the blur filter would rightly drop them all,
    so it is off here; this test is about the bound, not about quality.
    """
    pixels, _ = _pixels(BUSH, 250)
    tile = np.asarray(Image.fromarray(pixels).resize((96, 96)))
    wall = np.tile(tile, (14, 15, 1))
    saved = finder.min_blur, finder.max_faces
    finder.min_blur = 0.0
    try:
        assert 150 <= len(finder.find(wall)) <= MAX_FACES  # most of the 210 (MTCNN misses some)
        finder.max_faces = 100
        found = finder.find(wall)
    finally:
        finder.min_blur, finder.max_faces = saved
    assert 90 <= len(found) <= 100  # the bound applies before O-Net, which drops a few more
    assert all(0 <= f["x1"] < f["x2"] <= wall.shape[1] and 0 <= f["y1"] < f["y2"] <= wall.shape[0] for f in found)
