"""Shared by the hash-keyed dedup rules (exact text, URL): keys, the index lookup, survivors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.corpus.base import RuleContext, read_keys, split_by_shard
from tasks.filters import dedup


def hash_keys(scored: pa.Table, shard: int, rows: np.ndarray, column: str) -> pa.Table:
    """(shard, row, hash) of ``rows``, documents without a key (no URL) left out."""
    keys = pa.table({
        "shard": pa.array(np.full(len(rows), shard, dtype=np.int32)),
        "row": pa.array(np.asarray(rows, dtype=np.int64)),
        "hash": scored.column(column).take(pa.array(rows, pa.int64())),
    })
    return keys.filter(pc.is_valid(keys.column("hash")))


def indexed_hashes(parts: list[dict[str, Any]], column: str) -> pa.Array | None:
    """The ``column`` hashes of the persistent index's parts (keys only, read column-wise)."""
    found = []
    for f in (f for p in parts for f in p["files"]):
        if column in pq.read_schema(f).names:
            col = pq.read_table(f, columns=[column]).column(column)
            found.append(col.filter(pc.is_valid(col)))
    return pa.chunked_array(found).combine_chunks() if found else None



def decide_by_hash(key_files: list[str], out_dir: Path, ctx: RuleContext, index_column: str,
                   rule: str, seen_rule: str) -> dict[str, Any]:
    """Documents seen in the index first (``seen_rule``), then in-run duplicates (``rule``),
    first by (shard, row) surviving. Holds the keys (hash, shard, row), never texts."""
    keys = read_keys(key_files)
    if keys is None:
        return {"dropped": {}, "keys": 0}
    drops = []
    seen = indexed_hashes(ctx.index_parts, index_column) if ctx.index_parts else None
    if seen is not None:
        hit = pc.is_in(keys.column("hash"), value_set=seen)
        seen_keys = keys.filter(hit).select(["shard", "row"])
        drops.append(seen_keys.append_column(
            "rule", pa.repeat(pa.scalar(seen_rule, pa.string()), len(seen_keys))))
        keys = keys.filter(pc.invert(hit))
    dup = dedup.duplicates(keys)  # first by (shard, row) survives
    drops.append(dup.append_column("rule", pa.repeat(pa.scalar(rule, pa.string()), len(dup))))
    counts = split_by_shard(out_dir, pa.concat_tables(drops))
    return {"dropped": counts, "keys": len(keys)}


def hash_rule(name: str, rule: str, column: str) -> tuple[
        str, str, tuple[str], Callable[..., pa.Table], Callable[..., dict[str, Any]]]:
    """What a corpus rule keyed by one hash column declares: ``RULE``, ``SEEN``
    (``<name>.seen_before``), ``COLUMNS`` (also its ``INDEX_COLUMNS``), ``keys``, ``decide``."""
    seen_rule = f"{name}.seen_before"

    def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Any,
             ctx: RuleContext) -> pa.Table:
        return hash_keys(scored, shard, rows, column)

    def decide(key_files: list[str], out_dir: Path, cfg: Any, ctx: RuleContext
               ) -> dict[str, Any]:
        return decide_by_hash(key_files, out_dir, ctx, column, rule, seen_rule)

    return rule, seen_rule, (column,), keys, decide
