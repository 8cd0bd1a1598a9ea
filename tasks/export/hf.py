"""Parquet: a Hugging Face dataset folder (``data/train-00000-of-0000N.parquet`` and the
``README.md`` card whose YAML header ``datasets.load_dataset(folder)`` reads)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.export.shards import Limits, cut, finalize_names, rolled
from tasks.export.source import RunSource, Split, Stats
from tasks.export.tokens import DocTokenizer
from tasks.schema import DOC_SCHEMA

ROW_GROUP_BYTES = 32 * 2**20  # tens of MB per row group (DESIGN.md "Parquet sizing")
SPLIT_NAME = "train"


def contract_batches(src: RunSource, split: Split) -> Iterator[pa.RecordBatch]:
    """The documents with exactly the contract's columns and types."""
    for rb in src.batches(split, DOC_SCHEMA.names):
        yield rb.cast(DOC_SCHEMA)


def counted(batches: Iterator[pa.RecordBatch], tok: DocTokenizer | None, stats: Stats
            ) -> Iterator[pa.RecordBatch]:
    """Batches passed through, their documents (and tokens) added to ``stats``."""
    for rb in batches:
        counts = tok.count(rb.column("text")) if tok is not None else None
        stats.add(rb, counts)
        yield rb


class _Shard:
    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        self.buf: list[pa.RecordBatch] = []
        self.buf_bytes = 0

    def add(self, rb: pa.RecordBatch) -> None:
        self.buf.append(rb)
        self.buf_bytes += rb.nbytes
        if self.buf_bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            table = pa.Table.from_batches(self.buf)
            self.writer.write_table(table, row_group_size=table.num_rows)
            self.buf, self.buf_bytes = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def write_parquet(src: RunSource, out: Path, split: Split, limits: Limits,
                  tok: DocTokenizer | None) -> dict[str, Any]:
    """Stream the documents into Parquet shards under ``out/data``; returns the statistics,
    the Arrow bytes written and the shard paths."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    shards: list[Path] = []
    arrow_bytes = 0

    def open_shard() -> _Shard:
        shards.append(data / f"{SPLIT_NAME}-{len(shards):05d}.parquet")
        return _Shard(shards[-1], DOC_SCHEMA)

    for shard, rb in rolled(cut(counted(contract_batches(src, split), tok, stats), limits),
                            open_shard):
        shard.add(rb)
        arrow_bytes += rb.nbytes
    if not shards:  # no document: one empty shard, so the dataset still loads (0 rows)
        shards.append(data / f"{SPLIT_NAME}-00000.parquet")
        pq.write_table(DOC_SCHEMA.empty_table(), str(shards[0]), compression="zstd")
    final = finalize_names(shards, SPLIT_NAME, ".parquet")
    return {"stats": stats.to_dict(), "arrow_bytes": arrow_bytes,
            "files": [p.relative_to(out).as_posix() for p in final],
            "download_size": sum(p.stat().st_size for p in final)}
