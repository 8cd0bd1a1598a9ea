"""Parquet, read by row group and by batches capped in bytes; also the Arrow-table helpers the
``hf`` reader shares.

What cannot be read becomes quarantine rows, one per row, and the rest is kept: a value Arrow
cannot turn into Python (a string column holding invalid UTF-8) quarantines its row; a corrupt
page quarantines the rest of its row group (the row count is in the file's metadata); a file
whose metadata cannot be read is one quarantine row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.ingest.config import ARROW_BATCH_BYTES, BATCH_CHARS, BATCH_DOCS, READ_CHUNK, SIDE_ROWS
from tasks.ingest.records import Batch, ReadContext, qrow


class Rows:
    """Record batches from a source that may fail part-way: how many rows it handed out, and
    the error it stopped on."""

    def __init__(self, batches: Iterator[pa.RecordBatch]):
        self.batches, self.rows = batches, 0
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for rb in self.batches:
                self.rows += rb.num_rows
                yield rb
        except Exception as e:  # noqa: BLE001 - a corrupt page, a truncated file
            self.error = e

    def why(self, what: str) -> str:
        e = self.error
        return f"{what} unreadable from its row {self.rows} on: {type(e).__name__}: " \
               f"{str(e)[:300]}"


def unread(ctx: ReadContext, start: int, n: int, error: str) -> Iterator[Batch]:
    """`n` rows from position `start` on that cannot be read: one quarantine row each (keeps
    docs_in == kept + rejected exact), in batches."""
    for lo in range(0, max(n, 0), SIDE_ROWS):
        yield Batch(quarantine=[qrow(ctx.label, i, None, error, None)
                                for i in range(start + lo, start + min(n, lo + SIDE_ROWS))])


def missing_text(ctx: ReadContext, names: list[str], n: int, what: str,
                 start: int = 0) -> Iterator[Batch]:
    """A table without the text column: every row is quarantined."""
    yield from unread(ctx, start, n, f"{what} has no text column {ctx.f['text']!r} "
                                     f"(columns: {names}); {n} rows quarantined")


def _row_bytes(rb: pa.RecordBatch) -> np.ndarray:
    """Each row's size: its strings' and binaries' bytes, plus its share of the rest."""
    n = rb.num_rows
    sizes = np.zeros(n, np.float64)
    for col in rb.columns:
        t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
                or pa.types.is_large_binary(t):
            sizes += pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False)
        else:
            sizes += col.nbytes / max(n, 1)
    return sizes


def _slices(rb: pa.RecordBatch) -> Iterator[tuple[int, int]]:
    """(offset, length) of consecutive slices of at most BATCH_DOCS rows and ~BATCH_CHARS
    bytes (at least one row): what is turned into Python objects at once."""
    n = rb.num_rows
    cum = np.cumsum(_row_bytes(rb))
    lo = 0
    while lo < n:
        base = cum[lo - 1] if lo else 0.0
        hi = int(np.searchsorted(cum, base + BATCH_CHARS, side="right"))
        hi = min(max(hi, lo + 1), lo + BATCH_DOCS, n)
        yield lo, hi - lo
        lo = hi


def _records(sl: pa.RecordBatch, position: int, ctx: ReadContext,
             batch: Batch) -> list[tuple[int, dict[str, Any]]]:
    """The slice's rows as dicts; a row Arrow cannot convert is quarantined."""
    try:
        return list(enumerate(sl.to_pylist(), position))
    except Exception:  # noqa: BLE001 - find the rows, below
        pass
    out = []
    for j in range(sl.num_rows):
        try:
            out.append((position + j, sl.slice(j, 1).to_pylist()[0]))
        except Exception as e:  # noqa: BLE001 - e.g. invalid UTF-8 in a string column
            batch.quarantine.append(qrow(ctx.label, position + j, None,
                                         f"row cannot be read: {type(e).__name__}: "
                                         f"{str(e)[:300]}", None))
    return out


def table_batches(ctx: ReadContext, batches: Any, start: int,
                  extra: dict[str, Any] | None = None) -> Iterator[Batch]:
    """Arrow record batches -> candidate batches; `extra` fields are added to every record."""
    position = start
    for rb in batches:
        for lo, n in _slices(rb):
            batch = Batch()
            for pos, rec in _records(rb.slice(lo, n), position + lo, ctx, batch):
                ctx.add_record({**rec, **extra} if extra else rec, pos, batch)
            yield batch
        position += rb.num_rows


def parquet_batches(ctx: ReadContext, pf: pq.ParquetFile, start: int, what: str,
                    extra: dict[str, Any] | None = None) -> Iterator[Batch]:
    """A Parquet file's rows (positions from `start`), row group by row group, read in
    batches of ~ARROW_BATCH_BYTES (estimated from the row group's uncompressed size)."""
    names = pf.schema_arrow.names
    if ctx.f["text"] not in names:
        yield from missing_text(ctx, names, pf.metadata.num_rows, what, start)
        return
    position = start
    for g in range(pf.num_row_groups):
        md = pf.metadata.row_group(g)
        rows = max(1, min(BATCH_DOCS, ARROW_BATCH_BYTES * md.num_rows
                          // max(md.total_byte_size, 1)))
        src = Rows(pf.iter_batches(batch_size=rows, row_groups=[g]))
        yield from table_batches(ctx, src, position, extra)
        if src.error is not None:
            yield from unread(ctx, position + src.rows, md.num_rows - src.rows,
                              src.why(f"{what}, row group {g},"))
        position += md.num_rows


def open_parquet(path: Path) -> pq.ParquetFile:
    # a buffered stream: a column chunk is read a buffer at a time, not whole
    return pq.ParquetFile(path, buffer_size=READ_CHUNK)


def read_parquet(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    try:
        pf = open_parquet(path)
    except Exception as e:  # noqa: BLE001 - not Parquet, a truncated footer
        yield Batch(quarantine=[qrow(ctx.label, None, None,
                                     f"not a readable Parquet file: {type(e).__name__}: "
                                     f"{str(e)[:300]}", None)])
        return
    yield from parquet_batches(ctx, pf, 0, "Parquet file")
