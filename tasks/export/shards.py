"""Cutting a stream of record batches into shards of a bounded size.

Sizes are the documents' Arrow bytes, before compression, so a Parquet or JSONL shard on disk
is about that large or smaller. A batch is split where the row limit falls inside it; a shard
ends before the batch that would carry it past the byte limit (so it holds at least one)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

DEFAULT_SHARD_BYTES = 256 * 2**20
W = TypeVar("W", bound=Any)


@dataclass
class Limits:
    max_bytes: int = DEFAULT_SHARD_BYTES
    max_rows: int | None = None

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or (self.max_rows is not None and self.max_rows <= 0):
            raise ValueError("shard limits must be positive")


def cut(batches: Iterator[pa.RecordBatch], limits: Limits
        ) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(shard number, batch) pairs: a new number starts a new shard."""
    shard, rows, size = 0, 0, 0
    for rb in batches:
        while rb.num_rows:
            take = rb.num_rows
            if limits.max_rows is not None:
                take = min(take, limits.max_rows - rows)
            piece = rb.slice(0, take)
            nbytes = piece.nbytes
            if rows and size + nbytes > limits.max_bytes:
                shard, rows, size = shard + 1, 0, 0
                continue
            yield shard, piece
            rows += take
            size += nbytes
            rb = rb.slice(take)
            if limits.max_rows is not None and rows >= limits.max_rows:
                shard, rows, size = shard + 1, 0, 0


def rolled(numbered: Iterable[tuple[int, pa.RecordBatch]], open_shard: Callable[[], W]
           ) -> Iterator[tuple[W, pa.RecordBatch]]:
    """Each batch of ``cut`` with its shard's writer: ``open_shard()`` when a new shard starts
    (the previous writer closed first); the last writer is closed at the end."""
    cur: W | None = None
    at = -1
    try:
        for n, rb in numbered:
            if cur is None or n != at:
                if cur is not None:
                    cur.close()
                cur, at = open_shard(), n
            yield cur, rb
    finally:
        if cur is not None:
            cur.close()


def finalize_names(paths: list[Path], stem: str, suffix: str) -> list[Path]:
    """``<stem>-00000.<suffix>`` ... renamed to the Hub's ``<stem>-00000-of-00003.<suffix>``
    once the count is known."""
    n = len(paths)
    out = []
    for i, p in enumerate(paths):
        dst = p.with_name(f"{stem}-{i:05d}-of-{n:05d}{suffix}")
        p.rename(dst)
        out.append(dst)
    return out
