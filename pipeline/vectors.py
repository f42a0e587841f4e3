"""The vector index: a rebuildable cache of the Parquet ``embedding`` column, next to index.sqlite.

The Parquet column is the record; ``<index>/vectors/`` only makes it fast to search:

- ``state.json``: the Parquet parts the cache was built from (name -> its rows' range),
  the model the embeddings came from, and the faiss index kind;
- ``paths.json`` and ``vectors.npy`` (N x d float16, the stored embeddings in row order);
- ``faiss.index``: the search structure over them.

It is refreshed whenever SQLite's ``parquet_files`` differs from ``state.json`` (a nightly
run added, rewrote or dropped parts: new, changed, moved or deleted photos). Parts are
immutable, so a part the cache already holds is reused as is and only new parts are read.
An IVF index is updated the same way (:meth:`FaissIndex.updated`): the kept parts' codes
move to their new rows and only new parts' vectors are assigned and encoded, so a nightly
run that adds a few thousand photos to 10^6 refreshes in seconds instead of a 45 s
rebuild; it is retrained once the library has doubled or halved since it was trained.

Library choice, by measurement (``python -m benchmarks.vectors``, README): exact search
(faiss ``IndexFlatIP``) up to :data:`FLAT_MAX` vectors, where it answers in a few ms with
recall 1; above it an IVF index with float16 storage (``IndexIVFScalarQuantizer``,
``QT_fp16``): half the memory of float32, a query p95 of 10 ms at 10^6 vectors (brute
force: 257 ms), and cells that make the all-pairs pass of ``photos duplicates`` cheap
(:meth:`FaissIndex.pairs_within`); HNSW costs float32's memory, builds slower, and has none.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow.parquet as pq
from filelock import FileLock

from pipeline.errors import IndexStoreError
from pipeline.parquet_sink import parquet_dir
from pipeline.store import IndexStore

VECTORS_DIR = "vectors"
VECTORS_LOCK = "vectors.lock"
FLAT_MAX = 50_000
"""Exact search up to this many vectors (measured: exact queries take 2 ms at 10^4, 25 ms at 10^5 on 2 cores; above this IVF builds pay off and the all-pairs duplicates pass would take minutes)."""
_STATE_VERSION = 1
RETRAIN_GROWTH = 2.0
"""Retrain the IVF cells once the library is this many times larger (or smaller) than when
they were trained: cells then hold twice (half) the vectors they were sized for."""


def ivf_nlist(n: int) -> int:
    """IVF cells: 2 sqrt(n) (faiss advises 4-16 sqrt(n); fewer cells make adding 10^6 vectors,
    i.e. the nightly rebuild, several times cheaper, and recall stays >= 0.99 at nprobe 32)."""
    return max(1, min(n // 39, int(2 * math.sqrt(n))))


class FaissIndex:
    """Inner-product search over unit vectors (so scores are cosine similarities)."""

    def __init__(self, index: faiss.Index) -> None:
        self.index = index

    @staticmethod
    def default_nprobe(nlist: int) -> int:
        """Cells to visit per query: recall@10 0.98-1.0 measured by ``benchmarks/vectors.py``."""
        return max(1, min(nlist, 32))

    @classmethod
    def build(cls, vectors: np.ndarray, kind: str = "auto", seed: int = 0) -> FaissIndex:
        """``kind``: "flat", "ivf" or "auto" (flat up to :data:`FLAT_MAX` vectors)."""
        n, d = vectors.shape
        if kind == "auto":
            kind = "flat" if n <= FLAT_MAX else "ivf"
        if kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
        else:
            nlist = ivf_nlist(n)
            index = _fp16_ivf(faiss.IndexFlatIP(d), nlist)
            rng = np.random.default_rng(seed)
            sample = vectors[np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))]
            index.train(np.ascontiguousarray(sample, dtype=np.float32))
            index.nprobe = cls.default_nprobe(nlist)
        for i in range(0, n, 100_000):
            index.add(np.ascontiguousarray(vectors[i:i + 100_000], dtype=np.float32))
        return cls(index)

    def updated(self, moved: np.ndarray, new_vectors: np.ndarray, new_rows: np.ndarray) -> FaissIndex:
        """An IVF index with this one's trained cells, holding this one's vectors at their new
        rows (``moved[old row]``, -1 where dropped) plus ``new_vectors`` at ``new_rows``.

        Kept vectors are not assigned or encoded again: their codes are copied list by list
        (with fp16 codes, the same bytes ``add`` would write).
        """
        old = faiss.extract_index_ivf(self.index)
        centroids = old.quantizer.reconstruct_n(0, old.nlist)
        quantizer = faiss.IndexFlatIP(old.d)
        quantizer.add(centroids)
        index = _fp16_ivf(quantizer, old.nlist)
        index.train(centroids)  # the quantizer already holds nlist centroids: no k-means, fp16 needs none
        index.nprobe = old.nprobe
        source, target = old.invlists, index.invlists
        assert source is not None and target is not None
        size = old.code_size
        for c in range(old.nlist):
            n = source.list_size(c)
            if not n:
                continue
            ids = moved[faiss.rev_swig_ptr(source.get_ids(c), n)]
            keep = ids >= 0
            if not keep.any():
                continue
            codes = faiss.rev_swig_ptr(source.get_codes(c), n * size).reshape(n, size)[keep]
            ids = np.ascontiguousarray(ids[keep], dtype=np.int64)
            target.add_entries(c, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(np.ascontiguousarray(codes)))
            index.ntotal += len(ids)
        for i in range(0, len(new_rows), 100_000):
            index.add_with_ids(np.ascontiguousarray(new_vectors[i:i + 100_000], dtype=np.float32),
                               np.ascontiguousarray(new_rows[i:i + 100_000], dtype=np.int64))
        return FaissIndex(index)

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "flat"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids), best first; id -1 where fewer than k vectors exist."""
        k = max(1, min(k, self.index.ntotal))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def pairs_within(self, vectors: np.ndarray, min_score: float, cells: int = 2,
                     batch: int = 4096) -> list[tuple[int, int, float]]:
        """Every (i, j, score) with i < j and cosine similarity >= ``min_score``.

        Exact for a flat index. For IVF, each vector is compared with the vectors of its
        ``cells`` nearest cells, one matrix product per cell (BLAS): at 10^6 vectors this
        is several times faster than faiss's range search over the fp16 codes, and a
        near-duplicate (similarity >= 0.6) lies in its original's cell or the next one.
        """
        if isinstance(self.index, faiss.IndexIVF):
            return self._pairs_by_cell(vectors, min_score, cells)
        pairs: list[tuple[int, int, float]] = []
        for start in range(0, len(vectors), batch):
            q = np.ascontiguousarray(vectors[start:start + batch], dtype=np.float32)
            lims, scores, ids = self.index.range_search(q, float(min_score))
            for row in range(len(q)):
                i = start + row
                for j, s in zip(ids[lims[row]:lims[row + 1]], scores[lims[row]:lims[row + 1]]):
                    if j > i:
                        pairs.append((i, int(j), float(s)))
        return pairs


    def _pairs_by_cell(self, vectors: np.ndarray, min_score: float, cells: int) -> list[tuple[int, int, float]]:
        ivf = faiss.extract_index_ivf(self.index)
        lists = ivf.invlists
        assert lists is not None
        members = [faiss.rev_swig_ptr(lists.get_ids(c), lists.list_size(c)).copy()
                   if lists.list_size(c) else np.empty(0, np.int64) for c in range(ivf.nlist)]
        nearest = np.concatenate([
            ivf.quantizer.search(np.ascontiguousarray(vectors[i:i + 65_536], dtype=np.float32), cells)[1]
            for i in range(0, len(vectors), 65_536)])
        order = np.argsort(nearest.ravel(), kind="stable")
        bounds = np.searchsorted(nearest.ravel()[order], np.arange(ivf.nlist + 1))
        found: dict[tuple[int, int], float] = {}
        for c in range(ivf.nlist):
            queries = order[bounds[c]:bounds[c + 1]] // cells
            held = members[c]
            if not len(queries) or not len(held):
                continue
            held_vectors = np.asarray(vectors[np.sort(held)], dtype=np.float32)
            held = np.sort(held)
            for start in range(0, len(queries), 2048):
                q = queries[start:start + 2048]
                scores = np.asarray(vectors[q], dtype=np.float32) @ held_vectors.T
                rows, cols = np.nonzero(scores >= min_score)
                for r, k in zip(rows.tolist(), cols.tolist()):
                    i, j = int(q[r]), int(held[k])
                    if i < j:
                        found[(i, j)] = float(scores[r, k])
                    elif j < i:
                        found[(j, i)] = float(scores[r, k])
        return [(i, j, s) for (i, j), s in found.items()]


def _fp16_ivf(quantizer: faiss.IndexFlatIP, nlist: int) -> faiss.IndexIVFScalarQuantizer:
    """The IVF index every cache holds above flat size: cosine (inner product on unit vectors),
    residuals to the cell centre stored as float16."""
    return faiss.IndexIVFScalarQuantizer(quantizer, quantizer.d, nlist, faiss.ScalarQuantizer.QT_fp16,
                                         faiss.METRIC_INNER_PRODUCT)


@dataclass
class VectorSet:
    """Every indexed photo's embedding, in one model's space, with its faiss index."""

    paths: list[str]
    vectors: np.ndarray  # N x d float16, unit rows
    index: FaissIndex
    model: str | None
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def row_of(self, path: str) -> int | None:
        """The row of ``path``, None if it has no embedding."""
        if not self._rows and self.paths:
            self._rows = {p: i for i, p in enumerate(self.paths)}
        return self._rows.get(path)


def open_vectors(index_dir: Path, store: IndexStore, kind: str = "auto") -> VectorSet:
    """The index's vectors, refreshed first if the Parquet parts changed since the cache was built.

    One process refreshes at a time (``vectors.lock``): a nightly run's custom-label hook and
    a `photos similar` started meanwhile would otherwise each read the other's half-swapped
    cache. The one that waited finds the cache fresh and opens it."""
    folder = Path(index_dir) / VECTORS_DIR
    parts = store.parquet_file_names()
    cached = _open_cache(folder, parts, kind)
    if cached is not None:
        return cached
    with FileLock(str(Path(index_dir) / VECTORS_LOCK)):
        cached = _open_cache(folder, parts, kind)
        return cached if cached is not None else _refresh(index_dir, store, kind, _read_state(folder))


def _open_cache(folder: Path, parts: set[str], kind: str) -> VectorSet | None:
    """The cache as it is, if it was built from ``parts`` as ``kind`` and opens; else None."""
    state = _read_state(folder)
    if state is None or set(state["parts"]) != parts or state.get("kind_asked") != kind:
        return None
    try:
        paths = json.loads((folder / "paths.json").read_text(encoding="utf-8"))
        # Memory-mapped: `photos similar` starts in ms even at 10^6 photos (measured 0.01 s
        # against 7.4 s to read a 2.5 GB index), and the page cache shares it between runs.
        vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        index = _read_index(folder)
    except (OSError, ValueError, RuntimeError):
        return None  # a damaged cache is rebuilt
    if isinstance(index.index, faiss.IndexIVF):
        index.index.nprobe = FaissIndex.default_nprobe(index.index.nlist)
    return VectorSet(paths, vectors, index, state["model"])


def _read_index(folder: Path) -> FaissIndex:
    return FaissIndex(faiss.read_index(str(folder / "faiss.index"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY))


def _refresh(index_dir: Path, store: IndexStore, kind: str, state: dict[str, Any] | None) -> VectorSet:
    """Bring the cache in step with the Parquet parts, reusing the parts it already holds."""
    folder = Path(index_dir) / VECTORS_DIR
    parts = sorted(store.parquet_file_names())
    old_paths: list[str] = []
    old_vectors: np.ndarray | None = None
    old_index: FaissIndex | None = None
    if state is not None:
        try:
            old_paths = json.loads((folder / "paths.json").read_text(encoding="utf-8"))
            old_vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        except (OSError, ValueError):
            state = None
        try:
            old_index = _read_index(folder)
        except RuntimeError:
            old_index = None  # damaged: the index is built again
    kept: dict[str, tuple[int, int]] = dict(state["parts"]) if state else {}
    pieces: list[tuple[str, list[str], np.ndarray, list[str]]] = []  # part, paths, vectors, models
    for part in parts:
        if part in kept and old_vectors is not None:
            start, count = kept[part]
            pieces.append((part, old_paths[start:start + count], old_vectors[start:start + count],
                           [state["model"]] * count if state else []))
        else:
            try:
                pieces.append((part, *_read_part_vectors(parquet_dir(index_dir), part)))
            except FileNotFoundError as exc:  # a nightly run replaced the part meanwhile
                raise IndexStoreError(f"the index changed while its vectors were read ({part}); "
                                      "run the command again") from exc
    model = _majority_model(pieces)
    paths: list[str] = []
    chunks: list[np.ndarray] = []
    ranges: dict[str, tuple[int, int]] = {}
    for part, part_paths, part_vectors, models in pieces:
        keep = [i for i, m in enumerate(models) if m == model]
        ranges[part] = (len(paths), len(keep))
        paths.extend(part_paths[i] for i in keep)
        chunks.append(np.asarray(part_vectors[keep], dtype=np.float16) if keep else np.empty((0, 0), np.float16))
    dim = max((c.shape[1] for c in chunks if c.size), default=0)
    vectors = np.concatenate([c for c in chunks if c.size]) if dim else np.empty((0, 0), np.float16)
    trained = state.get("trained") if state else None
    index = None
    if (state is not None and old_vectors is not None and old_index is not None and model == state["model"]
            and kind == state.get("kind_asked") and old_index.index.ntotal == len(old_vectors)):
        index = _updated_index(old_index, state, ranges, vectors, kind)
    if index is None:
        index = FaissIndex.build(vectors, kind) if len(vectors) else FaissIndex(faiss.IndexFlatIP(max(dim, 1)))
        trained = len(vectors)
    _write_cache(folder, paths, vectors, index, {"version": _STATE_VERSION, "parts": ranges, "model": model,
                                                 "kind": index.kind, "kind_asked": kind, "trained": trained})
    return VectorSet(paths, vectors, index, model)


def _updated_index(old: FaissIndex, state: dict[str, Any], ranges: dict[str, tuple[int, int]],
                   vectors: np.ndarray, kind: str) -> FaissIndex | None:
    """The cached IVF index ``old`` moved to the new row ranges plus the new parts' vectors, or
    None where a full build is due: no fp16 IVF cache, an unknown training size, or a library
    that grew or shrank past :data:`RETRAIN_GROWTH` (or, asked for "auto", fell to flat size)."""
    trained = state.get("trained")
    if not trained or not len(vectors) or not trained / RETRAIN_GROWTH <= len(vectors) <= trained * RETRAIN_GROWTH:
        return None
    if kind == "auto" and len(vectors) <= FLAT_MAX:
        return None
    ivf = old.index
    if not (isinstance(ivf, faiss.IndexIVFScalarQuantizer) and ivf.sq.qtype == faiss.ScalarQuantizer.QT_fp16
            and ivf.by_residual and ivf.d == vectors.shape[1]):
        return None  # coded another way than _fp16_ivf, which updated() writes
    moved = np.full(ivf.ntotal, -1, np.int64)
    new_rows: list[np.ndarray] = []
    for part, (start, count) in ranges.items():
        if part in state["parts"]:  # a kept part: its rows, model and count are the cache's
            old_start = state["parts"][part][0]
            moved[old_start:old_start + count] = np.arange(start, start + count)
        else:
            new_rows.append(np.arange(start, start + count))
    rows = np.concatenate(new_rows) if new_rows else np.empty(0, np.int64)
    return old.updated(moved, vectors[rows], rows)


def _read_part_vectors(folder: Path, part: str) -> tuple[list[str], np.ndarray, list[str]]:
    if "embedding" not in pq.read_schema(folder / part).names:  # written before embeddings existed
        return [], np.empty((0, 0), np.float16), []
    table = pq.read_table(folder / part, columns=["path", "embedding", "models"])
    rows = table.to_pydict()
    keep = [i for i, e in enumerate(rows["embedding"]) if e is not None]
    paths = [rows["path"][i] for i in keep]
    if not keep:
        return paths, np.empty((0, 0), np.float16), []
    flat = table["embedding"].combine_chunks().take(keep).flatten().to_numpy(zero_copy_only=False)
    vectors = flat.astype(np.float16).reshape(len(keep), -1)
    models = [dict(rows["models"][i]).get("classify", "") for i in keep]
    return paths, vectors, models


def _majority_model(pieces: Sequence[tuple[str, list[str], np.ndarray, list[str]]]) -> str | None:
    """Embeddings of different classifiers live in different spaces: search the commonest one's."""
    counts = Counter(m for piece in pieces for m in piece[3])
    return counts.most_common(1)[0][0] if counts else None


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if state.get("version") == _STATE_VERSION else None


def _write_cache(folder: Path, paths: list[str], vectors: np.ndarray, index: FaissIndex,
                 state: dict[str, Any]) -> None:
    """Write a new cache folder beside the old one and swap it in (readers see either)."""
    tmp = folder.with_name(f".{VECTORS_DIR}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        (tmp / "paths.json").write_text(json.dumps(paths, ensure_ascii=False), encoding="utf-8")
        np.save(tmp / "vectors.npy", vectors)
        faiss.write_index(index.index, str(tmp / "faiss.index"))
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        old = folder.with_name(f".{VECTORS_DIR}.{os.getpid()}.old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IndexStoreError(f"cannot write the vector cache in {folder}: {exc}") from exc
