"""Groups of duplicate photos: exact copies by content fingerprint, near-duplicates by embedding.

Exact: the same ``fingerprint`` (size plus the first and last 64 KiB, see
``pipeline/fingerprint.py``), i.e. byte-identical copies. Near: cosine similarity of the
stored embeddings at least :data:`NEAR_THRESHOLD` (re-saved, resized, recompressed,
lightly cropped, EXIF-rotated copies); with ``burst``, also pairs down to
:data:`BURST_THRESHOLD` (shots taken a moment apart). Both thresholds were chosen by
measurement (``python -m benchmarks.duplicates_eval``, README). Pairs are joined
transitively into groups.

Each group lists the copy to keep first: most pixels, then the largest file (at equal
pixels the less compressed one, usually the original), then the oldest; ``why`` says which
rule decided. Nothing is ever deleted: this module only reads the index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from pipeline.store import IndexStore, photos
from pipeline.vectors import VectorSet, open_vectors

NEAR_THRESHOLD = 0.72
"""Cosine similarity from which two photos are near-duplicates (measured; see module doc)."""
BURST_THRESHOLD = 0.62
"""Looser similarity for ``--burst``: consecutive shots of one scene."""
_IVF_CELLS = 2
"""IVF cells each photo is compared within: a near-duplicate sits in (or next to) its
original's cell, so two are enough, and the all-pairs pass stays minutes at 10^6 photos."""


@dataclass(frozen=True)
class Member:
    """One photo of a group, and how it relates to the group's first (kept) photo."""

    path: str
    width: int
    height: int
    size: int
    mtime_ns: int
    kind: str = ""  # "keep", or why it is in the group: exact | near | burst
    similarity: float = 1.0


@dataclass
class DuplicateGroup:
    members: list[Member]  # the one to keep first
    why: str = ""
    kinds: set[str] = field(default_factory=set)

    @property
    def keep(self) -> Member:
        return self.members[0]


def find_duplicates(index_dir: Path, store: IndexStore, burst: bool = False,
                    near_threshold: float = NEAR_THRESHOLD,
                    burst_threshold: float = BURST_THRESHOLD) -> list[DuplicateGroup]:
    """Every group of two or more duplicate photos, largest groups first."""
    info = _photo_info(store)
    vectors = open_vectors(index_dir, store)
    edges: dict[tuple[str, str], tuple[str, float]] = {}
    for a, b in _exact_pairs(info):
        edges[(a, b)] = ("exact", 1.0)
    threshold = burst_threshold if burst else near_threshold
    for a, b, score in _near_pairs(vectors, threshold):
        if a in info and b in info:
            key = (min(a, b), max(a, b))
            if key not in edges:
                edges[key] = ("near" if score >= near_threshold else "burst", score)
    return _groups(info, edges)


def _photo_info(store: IndexStore) -> dict[str, Member]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(photos.c.path, photos.c.width, photos.c.height, photos.c.size,
                                   photos.c.mtime_ns, photos.c.fingerprint)
                            .where(photos.c.deleted_at.is_(None)))
        info = {}
        for r in rows:
            info[r.path] = Member(r.path, r.width, r.height, r.size, r.mtime_ns, kind=r.fingerprint)
    return info


def _exact_pairs(info: dict[str, Member]) -> Iterable[tuple[str, str]]:
    by_print: dict[str, list[str]] = {}
    for path, m in info.items():
        if m.kind:  # the fingerprint, parked in ``kind`` until grouping
            by_print.setdefault(m.kind, []).append(path)
    for paths in by_print.values():
        paths.sort()
        for other in paths[1:]:
            yield paths[0], other


def _near_pairs(vectors: VectorSet, threshold: float) -> Iterable[tuple[str, str, float]]:
    if not vectors.paths:
        return
    for i, j, score in vectors.index.pairs_within(vectors.vectors, threshold, cells=_IVF_CELLS):
        yield vectors.paths[i], vectors.paths[j], score


def _groups(info: dict[str, Member], edges: dict[tuple[str, str], tuple[str, float]]) -> list[DuplicateGroup]:
    parent: dict[str, str] = {}

    def root(p: str) -> str:
        parent.setdefault(p, p)
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    best: dict[str, tuple[str, float]] = {}  # each photo's strongest link, for members joined indirectly
    for (a, b), link in edges.items():
        parent[root(a)] = root(b)
        for p in (a, b):
            if p not in best or link[1] > best[p][1]:
                best[p] = link
    clusters: dict[str, list[str]] = {}
    for p in parent:
        clusters.setdefault(root(p), []).append(p)
    groups = []
    for paths in clusters.values():
        ordered = sorted((info[p] for p in paths), key=keep_order)
        keep = ordered[0]
        members = [Member(keep.path, keep.width, keep.height, keep.size, keep.mtime_ns, "keep", 1.0)]
        for m in ordered[1:]:
            kind, score = edges.get((min(keep.path, m.path), max(keep.path, m.path))) or best[m.path]
            members.append(Member(m.path, m.width, m.height, m.size, m.mtime_ns, kind, score))
        groups.append(DuplicateGroup(members, keep_reason(ordered), {m.kind for m in members[1:]}))
    groups.sort(key=lambda g: (-len(g.members), g.keep.path))
    return groups


def keep_order(m: Member) -> tuple[int, int, int, str]:
    """Most pixels, then largest file, then oldest, then path (so the order is total)."""
    return (-m.width * m.height, -m.size, m.mtime_ns, m.path)


def keep_reason(ordered: list[Member]) -> str:
    """Why ``ordered[0]`` is the copy to keep rather than ``ordered[1]`` (:func:`keep_order`)."""
    first, second = ordered[0], ordered[1]
    if first.width * first.height > second.width * second.height:
        return f"most pixels ({first.width}x{first.height})"
    if first.size > second.size:
        return f"most pixels ({first.width}x{first.height}, tied), largest file ({first.size:,} bytes: least compressed)"
    if first.mtime_ns < second.mtime_ns:
        return "most pixels and largest file (both tied), oldest"
    return "identical copies; first by path"
