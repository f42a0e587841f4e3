"""All Ray wiring: start or join Ray, and stream photos through decode and inference.

The pipeline is a Ray Data dataset::

    from_items(paths) -> map_batches(decode_batch)        CPU tasks
                      -> map_batches(InferenceStage)      actor pool, GPUs if the cluster has any
                      -> iter_batches() in the driver     IndexWriter commits

Ray Data streams it: decoded images are produced only as fast as the actors consume
them (backpressure), and only result rows, never pixels, come back to the driver.
Keeping every Ray call here means a change of Ray API touches one file.

A worker that dies takes its task's photos with it. Ray Data's defaults retry such a
task forever (``max_retries=-1`` for tasks, ``max_task_retries=-1`` for actors), so one
file that crashes a decoder used to stall the run; here a task is retried
``task_retries`` times, then its block is dropped (``max_errored_blocks=-1``) and the run
goes on. The photos that never came back are run again one per task, which confines a
crash to the file that causes it; a photo that kills its worker even alone becomes an
error row. Measured with Ray 2.60 on 2 CPUs: each worker death costs about 1-2 s.

On a cluster (``--address``) the same dataset spreads over the nodes: decode tasks ask
only for CPUs, model actors for ``gpus_per_actor`` GPUs, and the pool is sized to what
the cluster holds when the run starts (:func:`plan_placement`). A lost node's tasks are
retried elsewhere like any dead worker's (``task_retries``, then one photo per task),
its actors are restarted (``max_restarts=-1``) and lost blocks rebuilt from lineage; a
result that still arrives twice replaces its own row, since the writer keys rows by path.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import ray
import ray.data  # now: its log handlers take the terminal's stderr before RayOutput moves it

from pipeline.decode import decode_batch
from pipeline.errors import ModelError
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
from pipeline.ray_connect import RayOutput, join, start_local
from pipeline.settings import IndexSettings

MAX_BLOCKS = 20_000
DECODE_TASK_MEMORY = 256 * 1024 * 1024
"""Bytes a decode task reserves: a 12 MP JPEG decodes to ~36 MB, plus the batch's output."""
WORKER_STAGE = "worker"
"""The error stage of a photo whose Ray worker died on it every time."""


class RaySession:
    """Ray for one run: joins ``address`` or starts a local Ray, and stops only what it started.

    While it runs, Ray's own output goes to a log file (:class:`~pipeline.ray_connect.RayOutput`),
    not to the user's terminal. Ray Data settings are made per dataset (:func:`_stream`),
    never on the process-wide ``DataContext``.
    """

    def __init__(self, settings: IndexSettings) -> None:
        self.started = False
        self.output: RayOutput | None = None
        for handler in logging.getLogger("ray.data").handlers:
            if handler.get_name() == "console":  # Ray Data's own file log keeps everything
                # CRITICAL: a dropped block is logged as an ERROR with a traceback, which
                # reads like a crash; its photos end as error rows the summary shows.
                handler.setLevel(logging.CRITICAL)
        if ray.is_initialized():
            return
        self.output = RayOutput()
        self.output.start()
        try:
            if settings.address:
                join(settings.address)
            else:
                start_local(settings.ray_num_cpus)
        except BaseException:
            self.output.stop()
            raise
        self.started = True

    def gpus(self) -> int:
        return int(ray.cluster_resources().get("GPU", 0))

    def close(self) -> None:
        try:
            if self.started:
                ray.shutdown()
        finally:
            if self.output is not None:
                self.output.stop()


def configure(context: ray.data.DataContext) -> None:
    """Ray Data settings of one run's datasets (``dataset.context``: their own copy)."""
    context.enable_progress_bars = False  # the CLI draws one bar for the whole run
    context.print_on_execution_start = False
    # A block whose task failed for good is dropped, not fatal: run_pipeline finds its
    # photos missing and deals with them.
    context.max_errored_blocks = -1


@dataclass(frozen=True)
class Placement:
    """The model actor pool: how many actors, and what each one reserves."""

    actors: int
    num_gpus: float
    num_cpus: float


# Models whose GPU pass takes well under a millisecond a photo, so that an actor's time
# goes to the CPU work around it (preprocessing, mask encoding): on an H200 with 16 CPUs,
# 1,080 photos with all three indexed at 21.6 photos/s with one actor per GPU, 30.1 with
# four and 32.9 with eight, start-up included (`python -m benchmarks.gpu_share`). Measured
# models, not "the CPU defaults": a new CPU default joins once measured.
LIGHT_MODELS = frozenset({"efficientnet_lite0", "nanodet", "selfie"})
LIGHT_GPU_SHARE = 0.25


def gpu_share(settings: IndexSettings, cluster: Mapping[str, float], plans: Sequence[ModelPlan]) -> float:
    """GPUs per model actor: ``gpus_per_actor`` if set; else 1, or for :data:`LIGHT_MODELS`
    :data:`LIGHT_GPU_SHARE` but at most one actor per two CPUs (a g6.xlarge's 4 CPUs and 1
    GPU: 2 actors), since those actors work on the CPU and decoding needs CPUs too."""
    if settings.gpus_per_actor is not None:
        return settings.gpus_per_actor
    if not plans or any(plan.spec.name not in LIGHT_MODELS for plan in plans):
        return 1.0
    gpus, cpus = cluster.get("GPU", 0), cluster.get("CPU", 0)
    return min(1.0, max(LIGHT_GPU_SHARE, 2 * gpus / cpus if cpus else 1.0))


def plan_placement(settings: IndexSettings, cluster: Mapping[str, float], gpu: bool,
                   plans: Sequence[ModelPlan] = ()) -> Placement:
    """Size the actor pool to ``cluster`` (Ray's resource totals) unless ``num_actors`` is set.

    With GPUs: as many actors as fit, ``GPU /`` :func:`gpu_share`; they reserve no CPU,
    which is left to decoding. Without: half the CPUs go to actors and half stay for the
    decode tasks that feed them, since a pool that takes every CPU starves its own input; a
    starting point, which ``--actors`` overrides.
    """
    if gpu:
        per = gpu_share(settings, cluster, plans)
        fit = math.floor(cluster.get("GPU", 0) / per + 1e-9)  # 1 / 0.1 is 9.999...
        return Placement(settings.num_actors or max(1, fit), per, 0.0)
    fit = math.floor(cluster.get("CPU", 0) / 2 / settings.actor_cpus)
    return Placement(settings.num_actors or max(1, fit), 0.0, settings.actor_cpus)


def run_pipeline(work: Sequence[WorkItem], settings: IndexSettings, plans: Sequence[ModelPlan],
                 gpus: int) -> Iterator[pa.Table]:
    """Yield result tables (``RESULT_SCHEMA``) for ``work``, in no particular order.

    Every item ends in exactly one row: a result, or an error row when decoding or a
    model failed on it, or when its Ray worker died every time it was tried.
    """
    lost = yield from _stream(work, settings, plans, gpus, one_by_one=False)
    if lost:
        lost = yield from _stream(lost, settings, plans, gpus, one_by_one=True)
    if lost:
        tries = 2 * (settings.task_retries + 1)
        yield failed_rows(lost, WORKER_STAGE, (
            f"the Ray worker handling this photo died every time, also with the photo alone "
            f"({tries} tries): a crash in an image decoder or a model, or killed for using too "
            "much memory; the photo was skipped (Ray's worker logs have the details)"
        ))


def _stream(work: Sequence[WorkItem], settings: IndexSettings, plans: Sequence[ModelPlan],
            gpus: int, one_by_one: bool) -> Generator[pa.Table, None, list[WorkItem]]:
    """Yield the results Ray returns for ``work``; return the items it never returned.

    With ``one_by_one`` every block, decode task and model call holds a single photo, so
    a worker death loses only the photo that caused it (slower: for the few lost photos).
    """
    if not work:
        return []
    pending = {w.file.path: w for w in work}
    # Small blocks stream results (and progress) early; MAX_BLOCKS bounds the driver's bookkeeping.
    rows_per_block = 1 if one_by_one else max(settings.decode_batch_size, math.ceil(len(work) / MAX_BLOCKS))
    items = [
        {"path": w.file.path, "size": w.file.size, "mtime_ns": w.file.mtime_ns,
         "tasks": ",".join(w.tasks), "previous_path": w.previous_path or ""}
        for w in work
    ]
    dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / rows_per_block))
    configure(dataset.context)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates **ray_remote_args but has no named parameter for retries
        # after a worker death (max_retries, max_task_retries); revisit before Ray 2.64.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        results = _map(dataset, settings, plans, gpus, one_by_one)
    for table in _model_errors_raised(results.iter_batches(batch_size=None, batch_format="pyarrow")):
        for path in table["path"].to_pylist():
            pending.pop(path, None)
        yield table
    return list(pending.values())


def _model_errors_raised(batches: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """``batches``, with a model that cannot load in an actor raised as :class:`ModelError`.

    Ray wraps an exception from an actor's constructor in its own (an actor died, a
    traceback from another process); the user needs only our message, and exit code 2.
    """
    try:
        yield from batches
    except (ray.exceptions.RayError, RuntimeError) as exc:
        cause = _photos_error_in(exc)
        if cause is None:
            raise
        raise ModelError(cause) from exc


def _photos_error_in(exc: BaseException) -> str | None:
    """The message of a ModelError raised inside Ray, found in ``exc`` or its causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        match = re.search(r"(?:ModelError|WeightsMissingError|UnknownModelError): (.+)", str(current))
        if match:  # Ray's exceptions carry the remote one as text (its traceback)
            return match.group(1).strip()
        if isinstance(current, ModelError):
            return str(current)
        current = current.__cause__ or current.__context__
    return None


def _map(dataset: ray.data.Dataset, settings: IndexSettings, plans: Sequence[ModelPlan], gpus: int,
         one_by_one: bool) -> ray.data.Dataset:
    """Decode tasks, then the model actors, over ``dataset``; retries bounded by settings."""
    decoded = dataset.map_batches(
        decode_batch,  # type: ignore[arg-type]  # Ray types fn_kwargs-taking callables too narrowly
        fn_kwargs={"image_size": working_size(plans, settings.image_size), "max_pixels": settings.max_pixels},
        batch_size=1 if one_by_one else settings.decode_batch_size,
        batch_format="numpy",
        num_cpus=settings.decode_cpus,
        # Distinct remote args keep Ray Data from fusing decode into the model actors,
        # so decoding runs in parallel tasks beside inference instead of before it.
        memory=DECODE_TASK_MEMORY,
        max_retries=settings.task_retries,
    )
    placement = plan_placement(settings, ray.cluster_resources(), gpu=gpus > 0, plans=plans)
    return decoded.map_batches(
        InferenceStage,
        fn_constructor_kwargs=stage_arguments(settings, plans, gpus,
                                              default_threads=max(1, round(2 * settings.actor_cpus))),
        batch_size=1 if one_by_one else settings.batch_size or (GPU_BATCH if gpus else CPU_BATCH),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=placement.actors),
        num_gpus=placement.num_gpus,
        num_cpus=placement.num_cpus,
        max_task_retries=settings.task_retries,  # a dead actor is still replaced (max_restarts=-1)
    )
