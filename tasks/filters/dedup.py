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


# --------------------------------------------------------------------------- URL dedup

URL_RULE = "url_dedup.duplicate"
URL_HASH_COLUMN = "url_dedup_hash"
_TRACKING = r"(?:utm_[a-z]+|fbclid|gclid|mc_cid|mc_eid)"


def normalize_urls(urls: pa.Array | pa.ChunkedArray, drop_query: bool = False) -> pa.Array:
    """The same page's URL spelled the same way: scheme and ``www.`` dropped, host lowercased,
    default ports, fragments, tracking parameters (``utm_*``, ``fbclid``, ...) and a trailing
    slash removed; ``drop_query`` drops the whole query string. Null stays null."""
    u = pc.utf8_trim_whitespace(urls)
    u = pc.replace_substring_regex(u, r"#.*$", "")
    u = pc.replace_substring_regex(u, r"^[A-Za-z][A-Za-z0-9+.\-]*://", "")
    # host part: lowercase, no www., no default port
    parts = pc.extract_regex(u, r"^(?P<host>[^/?]*)(?P<rest>.*)$")
    host = pc.utf8_lower(pc.struct_field(parts, "host"))
    host = pc.replace_substring_regex(host, r"^www\.", "")
    host = pc.replace_substring_regex(host, r":(?:80|443)$", "")
    rest = pc.struct_field(parts, "rest")
    if drop_query:
        rest = pc.replace_substring_regex(rest, r"\?.*$", "")
    else:
        rest = pc.replace_substring_regex(rest, rf"([?&]){_TRACKING}=[^&]*&?", r"\1")
        rest = pc.replace_substring_regex(rest, r"[?&]+$", "")
    rest = pc.replace_substring_regex(rest, r"/+(\?|$)", r"\1")
    out = pc.binary_join_element_wise(host, rest, "")
    return pc.if_else(pc.equal(pc.utf8_length(host), 0), pa.scalar(None, pa.string()), out)


def hash_urls(urls: pa.Array | pa.ChunkedArray, drop_query: bool = False) -> pa.Array:
    """128-bit xxh3 of each normalised URL (null where there is no URL)."""
    norm = normalize_urls(urls, drop_query)
    if isinstance(norm, pa.ChunkedArray):
        norm = norm.combine_chunks()
    out = [None if u is None else xxhash.xxh3_128_digest(u.encode("utf-8"))
           for u in norm.to_pylist()]
    return pa.array(out, pa.binary(16))
