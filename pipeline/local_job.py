"""A small run without Ray: the same decode and inference stages, in this process.

Starting Ray costs 8-12 s on a 2-core machine before the first photo is classified
(``ray.init`` 3 s, Ray Data planning, a model actor that imports torch and loads the
model, worker processes for decode tasks), which is most of a run of a few dozen new
photos: the usual nightly run. Below ``IndexSettings.ray_min_photos`` photos to process,
and when no cluster is named, :func:`run_local` runs instead:

- decoding in one child process (:func:`~pipeline.decode.decode_batch`, the function
  the Ray decode tasks run), so a decoder that crashes or is killed for memory takes a
  child with it, not the run; as on Ray, the photos it held are then decoded one at a
  time in a fresh child, and only the photo that still kills it becomes an error row;
- the models in this process, through the same
  :class:`~pipeline.inference.InferenceStage` a Ray actor runs, while the child decodes
  the next batch.

Results are the same rows, so the writer, the summary and resuming do not know which
path ran.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pyarrow as pa

from pipeline.decode import decode_batch
from pipeline.inference import (
    CPU_BATCH,
    GPU_BATCH,
    InferenceStage,
    ModelPlan,
    failed_rows,
    stage_arguments,
    working_size,
)
from pipeline.plan import WorkItem
from pipeline.settings import IndexSettings

WORKER_STAGE = "worker"
LOST_REASON = (
    "the process decoding this photo died every time, also with the photo alone: a crash in "
    "an image decoder, or killed for using too much memory; the photo was skipped"
)


def _batch(items: Sequence[WorkItem]) -> dict[str, np.ndarray]:
    """The columns a Ray block of ``items`` holds (see ``pipeline/job.py``)."""
    return {
        "path": np.array([w.file.path for w in items], dtype=object),
        "size": np.array([w.file.size for w in items], dtype=np.int64),
        "mtime_ns": np.array([w.file.mtime_ns for w in items], dtype=np.int64),
        "tasks": np.array([",".join(w.tasks) for w in items], dtype=object),
        "previous_path": np.array([w.previous_path or "" for w in items], dtype=object),
    }


def _pool() -> ProcessPoolExecutor:
    # fork: the child starts in milliseconds with Pillow already imported. It only decodes
    # (no torch, no threads of its own), and it is forked before any model is loaded.
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))


AHEAD = 4
"""Batches the child decodes ahead of the model: enough to keep it busy, few enough that
decoded pixels never pile up in memory (a 520 px working image is ~1 MB)."""


class _Decoder:
    """Decodes ``work`` in a child process, batch after batch, from construction on."""

    def __init__(self, work: Sequence[WorkItem], chunk: int, image_size: int, max_pixels: int) -> None:
        self.chunks = [list(work[i:i + chunk]) for i in range(0, len(work), chunk)]
        self.args = (image_size, max_pixels)
        self.lost: list[WorkItem] = []
        self.pool = _pool()
        self.futures: dict[int, Future] = {}
        self._submit_from(0)

    def _submit_from(self, first: int) -> None:
        """Submit the batches from ``first`` on that are not submitted, up to AHEAD of it."""
        for i in range(first, min(first + AHEAD, len(self.chunks))):
            if i not in self.futures:
                self.futures[i] = self.pool.submit(decode_batch, _batch(self.chunks[i]), *self.args)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Decoded batches in order; a batch whose child died goes to ``lost``."""
        try:
            for i in range(len(self.chunks)):
                try:
                    batch = self.futures.pop(i).result()
                except BrokenProcessPool:
                    # One child decodes in order, so the batch awaited is the one it died
                    # on; the batches queued behind it died unstarted: submit them again.
                    self.lost.extend(self.chunks[i])
                    self.pool.shutdown(wait=True, cancel_futures=True)
                    self.pool = _pool()
                    self.futures.clear()
                    self._submit_from(i + 1)
                    continue
                self._submit_from(i + 1)  # the child decodes on while the model runs
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def run_local(work: Sequence[WorkItem], settings: IndexSettings, plans: Sequence[ModelPlan],
              gpus: int) -> Iterator[pa.Table]:
    """Yield result tables for ``work``, like :func:`pipeline.job.run_pipeline`, without Ray.

    Every item ends in exactly one row. The model loads while the child decodes.
    """
    image_size = working_size(plans, settings.image_size)
    batch_size = settings.batch_size or (GPU_BATCH if gpus else CPU_BATCH)
    decoder = _Decoder(work, batch_size, image_size, settings.max_pixels)
    try:
        stage = InferenceStage(**stage_arguments(settings, plans, gpus, default_threads=local_threads(settings)))
    except BaseException:
        decoder.close()  # a model that cannot load: stop the child too
        raise
    for batch in decoder:
        yield stage(batch)
    if decoder.lost:  # one photo per batch: only the photo that kills its child is lost
        alone = _Decoder(decoder.lost, 1, image_size, settings.max_pixels)
        for batch in alone:
            yield stage(batch)
        if alone.lost:
            yield failed_rows(alone.lost, WORKER_STAGE, LOST_REASON)


def local_threads(settings: IndexSettings) -> int:
    """Torch threads for models run in this process: every CPU a local Ray would get (the
    decoding child mostly waits on the model, as measured on 2 cores)."""
    return settings.ray_num_cpus or os.cpu_count() or 1
