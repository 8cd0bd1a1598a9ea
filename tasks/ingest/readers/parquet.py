"""Parquet, read by row batches; also the Arrow-table helpers the ``hf`` reader shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.ingest.config import BATCH_DOCS, SIDE_ROWS
from tasks.ingest.records import Batch, ReadContext, qrow


def missing_text(ctx: ReadContext, names: list[str], n: int, what: str) -> Iterator[Batch]:
    """A table without the text column: every row is quarantined (one row each keeps
    docs_in == kept + rejected exact), in batches."""
    err = (f"{what} has no text column {ctx.f['text']!r} (columns: {names}); "
           f"{n} rows quarantined")
    for lo in range(0, n, SIDE_ROWS):
        yield Batch(quarantine=[qrow(ctx.label, i, None, err, None)
                                for i in range(lo, min(n, lo + SIDE_ROWS))])


def table_batches(ctx: ReadContext, batches: Iterator[pa.RecordBatch], start: int,
                  extra: dict[str, Any] | None = None) -> Iterator[Batch]:
    """Arrow record batches -> candidate batches; `extra` fields are added to every record."""
    position = start
    for rb in batches:
        for lo in range(0, rb.num_rows, BATCH_DOCS):
            batch = Batch()
            for rec in rb.slice(lo, BATCH_DOCS).to_pylist():
                if extra:
                    rec = {**rec, **extra}
                ctx.add_record(rec, position, batch)
                position += 1
            yield batch


def read_parquet(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        yield Batch(quarantine=[qrow(ctx.label, None, None,
                                     f"not a readable Parquet file: {e}", None)])
        return
    if ctx.f["text"] not in pf.schema_arrow.names:
        yield from missing_text(ctx, pf.schema_arrow.names, pf.metadata.num_rows,
                                "Parquet file")
        return
    yield from table_batches(ctx, pf.iter_batches(batch_size=BATCH_DOCS), 0)
