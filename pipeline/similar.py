"""`photos similar`: the indexed photos that look most like a given one, best first.

A photo in the index is looked up by its stored embedding (no CNN); any other photo is
decoded and embedded on the spot with the same decode, preprocessing and classifier the
index's embeddings came from (``pipeline/embeddings.py``), so its vector is comparable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from pipeline.embeddings import embed_files
from pipeline.errors import QueryError
from pipeline.pathnames import path_text
from pipeline.store import IndexStore, photos
from pipeline.vectors import open_vectors


@dataclass(frozen=True)
class SimilarHit:
    path: str
    similarity: float  # cosine similarity of the embeddings, 1 = same picture


def find_similar(index_dir: Path, store: IndexStore, photo: str, limit: int = 20,
                 weights_dir: Path | None = None) -> tuple[list[SimilarHit], bool]:
    """The ``limit`` most similar indexed photos, and whether ``photo`` itself is indexed."""
    vectors = open_vectors(index_dir, store)
    if not vectors.paths:
        raise QueryError("the index holds no embeddings yet: run `photos index` (with the classify task)")
    key = path_text(os.path.abspath(os.path.expanduser(photo)))
    row = vectors.row_of(key)
    if row is not None:
        query = np.asarray(vectors.vectors[row : row + 1], dtype=np.float32)
    elif os.path.isfile(os.path.expanduser(photo)):
        query = embed_files([os.path.expanduser(photo)], vectors.model or "efficientnet_lite0",
                            weights_dir).astype(np.float32)
    else:
        raise QueryError(f"{photo}: no such photo in the index or on disk")
    with store.engine.connect() as conn:
        deleted = set(conn.execute(select(photos.c.path).where(photos.c.deleted_at.is_not(None))).scalars())
    scores, rows = vectors.index.search(query, limit + 1 + len(deleted))
    hits = [SimilarHit(vectors.paths[i], float(s)) for s, i in zip(scores[0], rows[0])
            if i >= 0 and vectors.paths[i] != key and vectors.paths[i] not in deleted]
    return hits[:limit], row is not None
