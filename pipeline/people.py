"""Grouping faces into people: pure functions over embeddings, no database, no Ray.

Embeddings are L2-normalised, so cosine distance ``1 - a.b`` is the one metric used.

One nightly pass (:func:`group_faces`):

1. **Assign**: each face without a person joins the person it is nearest to on average
   (mean cosine similarity to the person's faces, i.e. the dot product with the mean of
   their embeddings), if within ``assign_distance`` and the face was not said to be
   someone else ("this face is not X" rejections).
2. **Form new people** from what is left: average-linkage agglomerative clustering cut at
   ``cluster_distance``; a cluster of at least ``min_faces`` faces becomes a new person,
   smaller ones wait for later photos. Average linkage (the mean distance between two
   groups) was chosen over single linkage (connected components), which chains two
   look-alikes through one ambiguous face, and over complete linkage, which splits one
   person's faces across ages and lighting; see the README for the measurement.
   For scale the linkage runs per connected component of the graph of face pairs within
   ``cluster_distance`` (found with a k-nearest-neighbour search): two faces in different
   components can never be joined by average linkage cut at that distance, so the
   result is the same, and components are person-sized, not library-sized.
3. **Existing people are never merged, split or renumbered** by this pass; only
   `photos people merge` joins people, and new people get new ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

ASSIGN_DISTANCE = 0.38
CLUSTER_DISTANCE = 0.38
MIN_FACES = 3
KNN = 32
"""Neighbours per face in the pair graph; a component larger than any person's cluster still
connects through them, since each face reaches its own nearest ones."""
EXACT_KNN = 8000
"""Up to this many faces the neighbour search is exact (numpy); above, faiss IVF (approximate:
a pair within the distance is missed only if the two faces fall in far-apart cells)."""
NPROBE = 16
MAX_COMPONENT = 4000
"""Linkage on a component above this runs on a seeded sample; the rest join its clusters'
centroids (memory of a full linkage is n^2/2 distances)."""


@dataclass(frozen=True)
class GroupingSettings:
    """The three knobs of grouping, with their measured defaults (README, "Faces and people")."""

    assign_distance: float = ASSIGN_DISTANCE
    cluster_distance: float = CLUSTER_DISTANCE
    min_faces: int = MIN_FACES


@dataclass
class Grouping:
    """What one pass decided: face index -> existing person id, and new people (lists of face indices)."""

    assigned: dict[int, int] = field(default_factory=dict)
    new_people: list[list[int]] = field(default_factory=list)


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def centroids(embeddings: np.ndarray, person_of: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(person ids, their mean embeddings) of the faces with a person (``person_of`` >= 0).

    The mean is not renormalised: a face's dot product with it is its mean similarity to
    the person's faces, i.e. its average-linkage distance to the person, the same measure
    (and so the same threshold) that formed the person. A renormalised centroid is nearer
    to every face than the faces are to each other, and let look-alikes in (measured on
    ../shared/eval/faces, half the photos grouped, then the rest assigned, both at 0.40:
    pairwise precision 0.81 with a renormalised centroid, 0.90 with the mean).
    """
    owner = np.asarray(person_of)
    ids = np.unique(owner[owner >= 0])
    if len(ids) == 0:
        return ids, np.zeros((0, embeddings.shape[1]), np.float32)
    index = np.searchsorted(ids, owner[owner >= 0])
    sums = np.zeros((len(ids), embeddings.shape[1]), np.float64)
    np.add.at(sums, index, embeddings[owner >= 0])
    return ids, (sums / np.bincount(index)[:, None]).astype(np.float32)


def assign(embeddings: np.ndarray, person_ids: np.ndarray, person_centroids: np.ndarray,
           max_distance: float, rejected: Mapping[int, set[int]] | None = None) -> np.ndarray:
    """Per face, the nearest person's id within ``max_distance``, else -1.

    ``rejected`` maps a face index to persons it must not join.
    """
    out = np.full(len(embeddings), -1, np.int64)
    if len(embeddings) == 0 or len(person_ids) == 0:
        return out
    rejected = rejected or {}
    for start in range(0, len(embeddings), 4096):
        sims = embeddings[start:start + 4096] @ person_centroids.T
        for row in range(sims.shape[0]):
            face = start + row
            if face in rejected:
                for pid in rejected[face]:
                    pos = int(np.searchsorted(person_ids, pid))
                    if pos < len(person_ids) and person_ids[pos] == pid:
                        sims[row, pos] = -np.inf
            best = int(np.argmax(sims[row]))
            if 1.0 - sims[row, best] <= max_distance:
                out[face] = int(person_ids[best])
    return out


def _neighbour_graph(embeddings: np.ndarray, max_distance: float, k: int) -> list[np.ndarray]:
    """Connected components (face index arrays) of the graph of pairs within ``max_distance``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(embeddings)
    k = min(k, n)
    x = np.ascontiguousarray(embeddings, np.float32)
    try:
        import faiss
    except ImportError:  # exact, in blocks: fine to ~10^5 faces on a many-core machine
        faiss = None  # type: ignore[assignment]
    if n <= EXACT_KNN or faiss is None:
        nbrs = np.zeros((n, k), np.int64)
        sims = np.zeros((n, k), np.float32)
        for start in range(0, n, 2048):
            block = x[start:start + 2048] @ x.T
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]
            nbrs[start:start + 2048] = top
            sims[start:start + 2048] = np.take_along_axis(block, top, axis=1)
    else:  # inverted lists: each face is compared with the faces of its nearest cells only

        cells = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], cells, faiss.METRIC_INNER_PRODUCT)
        index.train(x[np.random.default_rng(0).choice(n, min(n, cells * 39), replace=False)])
        index.add(x)
        index.nprobe = NPROBE
        sims, nbrs = index.search(x, k)
    ok = (1.0 - sims <= max_distance) & (nbrs >= 0)
    rows = np.repeat(np.arange(n), k)[ok.ravel()]
    graph = coo_matrix((np.ones(len(rows)), (rows, nbrs.ravel()[ok.ravel()])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return np.split(order, bounds)


def _average_linkage(embeddings: np.ndarray, max_distance: float, seed: int = 0) -> np.ndarray:
    """Cluster labels (0..) of average linkage on cosine distance, cut at ``max_distance``."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(embeddings)
    if n == 1:
        return np.zeros(1, np.int64)
    sample = np.arange(n)
    if n > MAX_COMPONENT:
        sample = np.sort(np.random.default_rng(seed).choice(n, MAX_COMPONENT, replace=False))
    x = embeddings[sample].astype(np.float64)
    dist = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    condensed = dist[np.triu_indices(len(x), 1)]
    labels = fcluster(linkage(condensed, method="average"), t=max_distance, criterion="distance") - 1
    if n == len(sample):
        return labels.astype(np.int64)
    ids, cents = centroids(x.astype(np.float32), labels)
    out = np.full(n, -1, np.int64)
    out[sample] = labels
    rest = np.setdiff1d(np.arange(n), sample)
    near = assign(embeddings[rest], ids, cents, max_distance)
    fresh = labels.max() + 1 + np.arange(len(rest))  # too far from every cluster: alone
    out[rest] = np.where(near >= 0, near, fresh)
    return out


def cluster(embeddings: np.ndarray, max_distance: float, min_faces: int, k: int = KNN) -> list[list[int]]:
    """Groups (lists of indices into ``embeddings``) of at least ``min_faces`` faces."""
    if len(embeddings) < max(min_faces, 1):
        return []
    groups: list[list[int]] = []
    for component in _neighbour_graph(embeddings, max_distance, k):
        if len(component) < min_faces:
            continue
        labels = _average_linkage(embeddings[component], max_distance)
        for label in np.unique(labels):
            members = component[labels == label]
            if len(members) >= min_faces:
                groups.append(sorted(int(i) for i in members))
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def group_faces(embeddings: np.ndarray, person_of: Sequence[int] | np.ndarray, frozen: Sequence[bool],
                settings: GroupingSettings | None = None,
                rejected: Mapping[int, set[int]] | None = None) -> Grouping:
    """One incremental pass over all faces.

    ``person_of``: each face's person id, -1 for none; ``frozen``: faces never to group
    (forgotten); ``rejected``: face index -> persons it is not. Faces with a person keep it.
    """
    settings = settings or GroupingSettings()
    embeddings = normalise(embeddings) if len(embeddings) else np.zeros((0, 1), np.float32)
    owner = np.asarray(person_of, np.int64)
    free = np.flatnonzero((owner < 0) & ~np.asarray(frozen, bool))
    ids, means = centroids(embeddings, owner)
    local_rejected = {}
    if rejected:
        position = {int(f): i for i, f in enumerate(free)}
        local_rejected = {position[f]: set(p) for f, p in rejected.items() if f in position}
    found = group_new(embeddings[free], ids, means, settings, local_rejected)
    return Grouping(assigned={int(free[i]): p for i, p in found.assigned.items()},
                    new_people=[[int(free[i]) for i in members] for members in found.new_people])


def group_new(free: np.ndarray, person_ids: np.ndarray, person_means: np.ndarray,
              settings: GroupingSettings, rejected: Mapping[int, set[int]] | None = None) -> Grouping:
    """:func:`group_faces` given only the faces without a person (``free``, unit rows) and
    the people's mean embeddings: what a nightly pass over a large index holds in memory
    (new faces, plus one vector per person), with indices into ``free``."""
    near = assign(free, person_ids, person_means, settings.assign_distance, rejected)
    result = Grouping(assigned={i: int(p) for i, p in enumerate(near) if p >= 0})
    left = np.flatnonzero(near < 0)
    for members in cluster(free[left], settings.cluster_distance, settings.min_faces):
        result.new_people.append([int(left[i]) for i in members])
    return result


def pairwise_scores(truth: Sequence[str], predicted: Sequence[int]) -> tuple[float, float]:
    """Pairwise precision and recall of a grouping against true identities.

    A pair of faces is predicted together when both have the same predicted group (>= 0);
    unassigned faces (-1) are together with nobody. Precision: of the predicted pairs, the
    share with one true identity; recall: of the true pairs, the share predicted together.
    """
    truth = list(truth)
    pred = np.asarray(predicted)
    tp = fp = fn = 0
    for i in range(len(truth)):
        for j in range(i + 1, len(truth)):
            same = truth[i] == truth[j]
            together = pred[i] >= 0 and pred[i] == pred[j]
            tp += same and together
            fp += (not same) and together
            fn += same and not together
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall
