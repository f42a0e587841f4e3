"""Read photos' full records back from the index's Parquet parts.

Each indexed photo has exactly one row, in the part SQLite names for it, so callers
(`photos show`, `photos eval`) read just the parts that hold the photos they want.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import QueryError
from pipeline.parquet_sink import parquet_dir, read_part
from pipeline.pathnames import path_text
from pipeline.store import IndexStore


def load_records(store: IndexStore, index_dir: Path, paths: Iterable[str]) -> dict[str, dict[str, Any]]:
    """path -> Parquet record (``PARQUET_SCHEMA`` columns; ``models`` as a dict)."""
    records: dict[str, dict[str, Any]] = {}
    for part, held in store.parts_holding(set(paths)).items():
        table = read_part(parquet_dir(index_dir), part)
        for row in table.filter(pc.is_in(table["path"], pa.array(held, pa.string()))).to_pylist():
            records[row["path"]] = {**row, "models": dict(row["models"]), "weights": dict(row["weights"])}
    return records


def load_record(store: IndexStore, index_dir: Path, path: str) -> dict[str, Any]:
    """The record of one photo; :class:`QueryError` if it is not in the index."""
    key = path_text(os.path.abspath(os.path.expanduser(path)))  # as the scan stores it
    record = load_records(store, index_dir, [key]).get(key)
    if record is None:
        raise QueryError(f"{path} is not in the index: run `photos index` on its folder first")
    return record
