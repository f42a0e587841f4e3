"""One typed settings object for an indexing run, built once at the entry point.

Every setting has its default and its help text here, in one table; the CLI reads the
help from :func:`help_for` so `photos index --help` and the library never disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from models.tasks import DEFAULT_TASKS, TASK_NAMES

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
"""Choices of ``IndexSettings.precision``."""


def default_index_dir() -> Path:
    """``$PHOTOS_INDEX``, else ``$XDG_DATA_HOME/photos``, else ``~/.local/share/photos``."""
    if env := os.environ.get("PHOTOS_INDEX"):
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "photos"


def _setting(default, help: str, **kwargs):  # noqa: A002 - mirrors click's keyword
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class IndexSettings:
    """Everything one `photos index` run needs; passed down explicitly, never global."""

    roots: tuple[str, ...] = _setting(
        (), "Photo folders to index, walked recursively: local paths or URIs (s3://, gs://, file://)."
    )
    index_dir: Path = field(
        default_factory=default_index_dir,
        metadata={"help": "Index folder (SQLite + Parquet). Env: PHOTOS_INDEX."},
    )
    address: str | None = _setting(
        None, "Ray cluster to join ('auto' or host:port). Default: start Ray locally."
    )
    tasks: tuple[str, ...] = _setting(DEFAULT_TASKS, "Comma-separated tasks to run: " + ",".join(TASK_NAMES) + ".")
    models: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Task -> model name for the tasks whose model the user chose (`photos index "
                          "--classifier`, `--detector`, ...: models/tasks.py); other tasks use their default."},
    )
    strict_models: bool = _setting(
        False, "Stop with an error if any selected task's weights are missing, instead of skipping the task."
    )
    weights_dir: Path | None = _setting(
        None, "Folder with model weight files, for offline machines. Env: PHOTOS_WEIGHTS_DIR."
    )
    top_k: int = _setting(5, "Labels kept per photo from the classifier.")
    score_threshold: float = _setting(0.5, "Detected boxes with a lower score are not kept.")
    mask_size: int = _setting(
        512, "Longer side, in pixels, of the stored segmentation mask (the photo's aspect ratio)."
    )
    batch_size: int | None = _setting(
        None,
        "Images per model call. Default: 32 on GPU, 4 on CPU (small batches stay in the CPU's "
        "caches: EfficientNet-Lite0 ran 2-4x faster at 4 than at 32 on 2 cores).",
    )
    num_actors: int | None = _setting(
        None,
        "Model actors. Default: what the cluster holds when the run starts, i.e. its GPUs / "
        "--gpus-per-actor, or on a CPU-only cluster one per two CPUs (the other CPU decodes). "
        "More than that asks an autoscaling cluster for more nodes.",
    )
    gpus_per_actor: float | None = _setting(
        None,
        "GPUs each model actor reserves where the cluster has GPUs; 0.5 shares a GPU between two. "
        "Default: 1, or 0.25 when every model is a light CPU default (EfficientNet-Lite0, NanoDet, "
        "Selfie), whose actors spend their time on the CPU around a sub-millisecond GPU pass: four "
        "per GPU indexed 1.4x faster end to end (H200), at most one per two CPUs.",
    )
    precision: str = _setting(
        "auto",
        "Floating point for models on GPU: auto (bf16 where the GPU supports it, else fp16), "
        "bf16, fp16 or fp32. CPU inference is always fp32.",
    )
    channels_last: bool = _setting(
        True,
        "Lay model weights out channels-last: faster convolutions on GPU tensor cores and on "
        "CPU (measured 1.3-1.9x for EfficientNet-Lite0 on 2 cores, depending on batch size).",
    )
    actor_cpus: float = _setting(1.0, "CPUs reserved by each model actor on a CPU-only cluster.")
    model_threads: int | None = _setting(
        None,
        "Torch threads of each model actor. Default: on CPU twice the CPUs it reserves, since "
        "the decode tasks beside it leave cores idle (66 -> 79 photos/s measured on 2 cores); "
        "on a GPU under Ray one, as Ray gives an actor that reserves no CPU (in-process, "
        "torch's own default).",
    )
    decode_batch_size: int = _setting(
        16, "Photos per decode task; results reach the index in blocks of about this many."
    )
    decode_cpus: float = _setting(1.0, "CPUs reserved by each decode task.")
    task_retries: int = _setting(
        1,
        "Times Ray retries a decode task or model call whose worker died (a decoder crash, "
        "out of memory) before its photos are tried one by one, and then recorded as errors.",
    )
    image_size: int | None = _setting(
        None,
        "Shorter side, in pixels, that photos are decoded to before the models. Default: the "
        "largest input size of the selected models (256 classify, 320 detect on CPU, 520 segment).",
    )
    max_pixels: int = _setting(
        200_000_000, "Refuse images that declare more pixels than this (decompression bombs)."
    )
    commit_rows: int = _setting(
        500, "Photos per committed batch (one SQLite transaction and one Parquet file)."
    )
    keep_deleted: bool = _setting(
        False, "Keep the rows of photos that vanished from disk, marked deleted, instead of removing them."
    )
    retry_errors: bool = _setting(False, "Retry files that failed before even if they did not change.")
    ray_min_photos: int = _setting(
        200,
        "Start Ray only when at least this many photos need the models, or --address is given; "
        "a smaller run decodes in a child process and runs the models in this one (Ray's "
        "start-up costs ~10 s on 2 cores). 0: always use Ray.",
    )
    ray_num_cpus: int | None = _setting(
        None, "CPUs a locally started Ray may use. Default: all of this machine's."
    )


def help_for(name: str) -> str:
    """The help text of setting ``name``, for the CLI's options."""
    for f in fields(IndexSettings):
        if f.name == name:
            return f.metadata["help"]
    raise KeyError(name)
