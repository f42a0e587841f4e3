"""Stage 4a: the Parquet record of the index, one file ("part") per committed batch.

The folder ``<index>/parquet/`` is a plain Parquet dataset with one row per photo and a
nested column per task (see the README for the schema); pandas, pyarrow and DuckDB read
it as is. A part is written to a temporary name, fsynced and renamed, and only then
registered in SQLite; parts not registered there (a run killed between the two steps)
are deleted by :func:`remove_orphan_parts` when the next run starts, so no row is ever
counted twice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.inference import RESULT_SCHEMA

PARQUET_DIR = "parquet"
PARQUET_SCHEMA = pa.schema(
    [f for f in RESULT_SCHEMA if f.name not in ("error_stage", "error_reason")]
    + [
        pa.field("models", pa.map_(pa.string(), pa.string()), nullable=False),
        pa.field("run_id", pa.int64(), nullable=False),
        pa.field("indexed_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


def parquet_dir(index_dir: Path) -> Path:
    return Path(index_dir) / PARQUET_DIR


def part_name(run_id: int, seq: int) -> str:
    return f"run{run_id:06d}-part{seq:06d}.parquet"


def write_part(folder: Path, name: str, photos: pa.Table, models: Mapping[str, str],
               run_id: int, indexed_at_ms: int) -> None:
    """Atomically write ``photos`` (result rows without errors) as part ``name``."""
    n = photos.num_rows
    table = photos.drop_columns(["error_stage", "error_reason"])
    table = table.append_column("models", pa.array([list(models.items())] * n, PARQUET_SCHEMA.field("models").type))
    table = table.append_column("run_id", pa.array([run_id] * n, pa.int64()))
    table = table.append_column("indexed_at", pa.array([indexed_at_ms] * n, PARQUET_SCHEMA.field("indexed_at").type))
    table = table.cast(PARQUET_SCHEMA)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)


def remove_orphan_parts(folder: Path, registered: set[str]) -> list[str]:
    """Delete part files (and temporaries) the index does not know; return their names."""
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if entry.name.endswith(".tmp") or (entry.suffix == ".parquet" and entry.name not in registered):
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return sorted(removed)
