"""Remove forgotten faces' embeddings from the Parquet record too, not only from SQLite.

`photos people forget` promises the embeddings are gone; the Parquet parts hold a copy
of every face's embedding, so the parts holding those photos are rewritten with the
forgotten faces' ``embedding`` set to null. Same protocol as the writer's: the new part
is written and fsynced under a new name, SQLite switches to it in one transaction, and
only then is the old part deleted, so a kill at any point leaves a consistent index
(an unlisted file is removed by the next `photos index`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
from sqlalchemy import delete, insert, select, update

from pipeline.parquet_sink import PARQUET_SCHEMA, parquet_dir, read_part, write_part
from pipeline.store import IndexStore, parquet_files, photos


def scrub_embeddings(store: IndexStore, index_dir: Path, forgotten: Iterable[tuple[str, int]]) -> int:
    """Null the Parquet embedding of each (photo path, face position); returns parts rewritten.

    The caller holds the index lock (``pipeline/lock.py``), so no run rewrites parts meanwhile.
    """
    wanted: dict[str, set[int]] = {}
    for path, n in forgotten:
        wanted.setdefault(path, set()).add(n)
    folder = parquet_dir(index_dir)
    rewritten = 0
    for part in store.parts_holding(wanted):
        rows = read_part(folder, part).to_pylist()
        for row in rows:
            for n in wanted.get(row["path"], ()):
                if row.get("faces") and n < len(row["faces"]):
                    row["faces"][n]["embedding"] = None
        new = f"{Path(part).stem}-forgot{time.time_ns()}.parquet"
        write_part(folder, new, pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA))
        with store.engine.begin() as conn:
            run_id = conn.execute(select(parquet_files.c.run_id).where(parquet_files.c.name == part)).scalar_one()
            conn.execute(delete(parquet_files).where(parquet_files.c.name == part))
            conn.execute(insert(parquet_files).values(name=new, run_id=run_id, rows=len(rows),
                                                      created_at=time.time()))
            conn.execute(update(photos).where(photos.c.parquet_file == part).values(parquet_file=new))
        (folder / part).unlink(missing_ok=True)
        rewritten += 1
    return rewritten

