"""Stage 4a: the Parquet record of the index, one file ("part") per committed batch.

The folder ``<index>/parquet/`` is a plain Parquet dataset with exactly one row per
indexed photo and a nested column per task (see the README for the schema); pandas,
pyarrow and DuckDB read it as is.

Parts are immutable. When a photo's row is replaced (changed file, re-run model, move,
deletion), every part holding an old row is rewritten under a new name without it, and
SQLite swaps the names in the same transaction that commits the new rows. Files are
written to a temporary name, fsynced and renamed before that transaction; files it
unregistered are deleted after it. Whatever a kill interrupts, the files SQLite lists
are exactly the live rows, and :func:`remove_orphan_parts` deletes any other file when
the next run starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.inference import RESULT_SCHEMA

PARQUET_DIR = "parquet"
_NOT_STORED = ("tasks", "previous_path", "error_stage", "error_reason")
PARQUET_SCHEMA = pa.schema(
    [f for f in RESULT_SCHEMA if f.name not in _NOT_STORED]
    + [
        pa.field("models", pa.map_(pa.string(), pa.string()), nullable=False),  # task -> model
        pa.field("weights", pa.map_(pa.string(), pa.string()), nullable=False),  # task -> weights file
        pa.field("run_id", pa.int64(), nullable=False),
        pa.field("indexed_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


def parquet_dir(index_dir: Path) -> Path:
    return Path(index_dir) / PARQUET_DIR


def part_name(run_id: int, seq: int) -> str:
    return f"run{run_id:06d}-part{seq:06d}.parquet"


def write_part(folder: Path, name: str, table: pa.Table) -> None:
    """Atomically write ``table`` (``PARQUET_SCHEMA``) as part ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)


def read_part(folder: Path, name: str) -> pa.Table:
    return pq.read_table(folder / name, schema=PARQUET_SCHEMA)


def without_paths(table: pa.Table, paths: Iterable[str]) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table["path"], pa.array(sorted(paths), pa.string()))))


def remove_orphan_parts(folder: Path, registered: set[str]) -> list[str]:
    """Delete part files (and temporaries) the index does not list; return their names."""
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if entry.name.endswith(".tmp") or (entry.suffix == ".parquet" and entry.name not in registered):
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return sorted(removed)
