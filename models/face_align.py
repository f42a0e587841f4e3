"""Face alignment and quality: the 5 landmarks mapped onto the ArcFace 112 x 112 template.

Embedding nets are trained on faces warped so that eyes, nose and mouth corners land on
fixed points; a similarity transform (rotation, uniform scale, translation: no shear, so
the face keeps its shape) fitted to the 5 landmarks by least squares (Umeyama 1991) does
that warp. Blur is the variance of the Laplacian of the aligned grey face: measured on
the same 112 x 112 crop for every face, so one threshold fits faces of every size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

ALIGNED_SIZE = 112
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963],  # left eye (as seen in the photo)
    [73.5318, 51.5014],  # right eye
    [56.0252, 71.7366],  # nose tip
    [41.5493, 92.3655],  # left mouth corner
    [70.7299, 92.2041],  # right mouth corner
], dtype=np.float64)
"""The standard InsightFace/ArcFace landmark positions in a 112 x 112 crop."""


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity matrix best mapping points ``src`` (N x 2) onto ``dst`` (Umeyama)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s ** 2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def align(image: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The face with ``landmarks`` (5 x 2, image pixels) warped to a size x size RGB crop.

    Pixels outside the image are black, as in the training crops of faces at the border.
    """
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE * (size / ALIGNED_SIZE))
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]  # PIL maps output -> input
    warped = Image.fromarray(np.ascontiguousarray(image)).transform(
        (size, size), Image.Transform.AFFINE, tuple(inverse.ravel()), resample=Image.Resampling.BILINEAR)
    return np.asarray(warped, dtype=np.uint8)


def blur_score(face: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a face crop's grey levels: low means blurred."""
    grey = face.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1])
    return float(lap.var())
