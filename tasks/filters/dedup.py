"""Exact dedup: a hash of normalised text per document, then one survivor per hash.

Scores (the hash) are computed per shard; survivors are chosen across all shards by a
deterministic order (shard, row), so the same corpus always keeps the same documents.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

RULE = "exact_dedup.duplicate"
HASH_COLUMN = "exact_dedup_hash"
_WS = re.compile(r"\s+")


def normalize(text: str, lowercase: bool = True, collapse_whitespace: bool = True) -> str:
    if lowercase:
        text = text.lower()
    if collapse_whitespace:
        text = _WS.sub(" ", text).strip()
    return text


def hash_texts(texts: pa.Array, lowercase: bool = True, collapse_ws: bool = True) -> pa.Array:
    """128-bit xxh3 of each normalised text, as fixed-size binary (16 bytes)."""
    out = [
        xxhash.xxh3_128_digest(normalize(t, lowercase, collapse_ws).encode("utf-8"))
        for t in texts.to_pylist()
    ]
    return pa.array(out, pa.binary(16))


def duplicates(keys: pa.Table) -> pa.Table:
    """Given (hash, shard, row) of candidate docs from all shards, return (shard, row) of the
    docs to drop: every doc whose hash was already seen at a smaller (shard, row)."""
    if len(keys) == 0:
        return pa.table({"shard": pa.array([], pa.int32()), "row": pa.array([], pa.int64())})
    order = pc.sort_indices(
        keys, [("hash", "ascending"), ("shard", "ascending"), ("row", "ascending")]
    )
    t = keys.take(order)
    h = t.column("hash").combine_chunks()
    same = np.zeros(len(t), dtype=bool)
    if len(t) > 1:
        same[1:] = pc.equal(h.slice(1), h.slice(0, len(t) - 1)).to_numpy(zero_copy_only=False)
    return t.filter(pa.array(same)).select(["shard", "row"])
