"""What storing embeddings compactly costs in search quality, on real photos.

Embeds the 1,000 real eval photos with the real EfficientNet-Lite0 weights and compares
each storage option's top-10 neighbours with float32's (recall@10), and its bytes a photo.

    python -m benchmarks.embedding_storage
"""

from __future__ import annotations

import numpy as np

from benchmarks.vectors import real_embeddings
from pipeline.embeddings import recall_at_k


def _int8(x: np.ndarray) -> np.ndarray:
    scale = np.abs(x).max(axis=1, keepdims=True) / 127
    return np.round(x / scale) * scale


def _pca(x: np.ndarray, d: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    basis = np.linalg.svd(centred, full_matrices=False)[2][:d]
    p = centred @ basis.T
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def main() -> None:
    x = real_embeddings().astype(np.float32)
    d = x.shape[1]
    options: dict[str, tuple[np.ndarray, int]] = {
        f"float32 ({d} dims)": (x, 4 * d),
        "float16": (x.astype(np.float16), 2 * d),
        "int8, one scale per vector": (_int8(x), d + 4),
        "PCA 256 (fitted on these photos)": (_pca(x, 256), 4 * 256),
        "PCA 256 + int8": (_int8(_pca(x, 256)), 256 + 4),
    }
    print(f"{len(x)} real photos, EfficientNet-Lite0 pooled features")
    print("| storage | bytes a photo | recall@10 vs float32 |")
    print("|---|---|---|")
    for name, (stored, size) in options.items():
        print(f"| {name} | {size:,} | {recall_at_k(x, stored):.3f} |")


if __name__ == "__main__":
    main()
