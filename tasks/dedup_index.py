"""The persistent dedup index: the dedup keys of every document kept so far, across runs.

A refresh run dedups its new snapshot against all earlier ones without recomputing them (the
problem of NeMo Curator #1466). The index is

- **Parquet parts**: the filter stage writes, next to its kept shards, ``index/part-*.parquet``
  with the kept documents' keys only (exact-text hash, URL hash, MinHash band keys and
  signature; never the texts: ~0.6 kB per document with MinHash on, 32 B without);
- **a registry in the DuckDB catalog** (table ``dedup_index``): which filter-stage outputs
  (``stage_version``) belong to the index ``name``, in the order they were added (``seq``), and
  the input version they curated (``upstream``).

Lookups are DuckDB joins over the part files (hash semi-joins; band-key joins for MinHash),
which stream and spill instead of loading the index into memory.

Re-runs stay no-ops: the parts a filter stage sees are those added *before* the first part
curated from the same input (``snapshot``), so re-running a finished stage finds the same
snapshot, the same content-addressed version, and its cached output — it never dedups its
documents against themselves.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.catalog import Catalog, now

SEEN_EXACT = "exact_dedup.seen_before"
SEEN_URL = "url_dedup.seen_before"
SEEN_NEAR = "minhash_dedup.seen_before"


def snapshot(catalog: Catalog, name: str, upstream: str) -> list[dict[str, Any]]:
    """The index parts a filter stage over input ``upstream`` dedups against: all parts added
    before the first one curated from ``upstream`` (all parts, when there is none)."""
    if not catalog.path.exists():
        return []
    with catalog.connect() as con:
        rows = con.execute(
            "SELECT seq, stage_version, upstream, files, docs FROM dedup_index WHERE name = ? "
            "ORDER BY seq", [name]).fetchall()
    out = []
    for seq, version, up, files, docs in rows:
        if up == upstream:
            break
        out.append({"seq": seq, "stage_version": version, "files": json.loads(files),
                    "docs": docs})
    return out


def register(catalog: Catalog, name: str, stage_version: str, upstream: str,
             files: list[str], docs: int, run_id: str) -> bool:
    """Add a filter stage's kept keys to the index; a no-op if that stage output is in it."""
    with catalog.connect() as con:
        have = con.execute("SELECT 1 FROM dedup_index WHERE name = ? AND stage_version = ?",
                           [name, stage_version]).fetchone()
        if have:
            return False
        seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM dedup_index WHERE name = ?",
                          [name]).fetchone()[0]
        con.execute("INSERT INTO dedup_index VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [name, seq, stage_version, upstream, json.dumps(files), docs, run_id, now()])
    return True


def _files(parts: list[dict[str, Any]]) -> list[str]:
    return [f for p in parts for f in p["files"]]


def _has_column(con: Any, files: list[str], column: str) -> bool:
    cols = con.sql("DESCRIBE SELECT * FROM read_parquet($1, union_by_name = true)",
                   params=[files]).fetchall()
    return column in {c[0] for c in cols}


def seen_keys(keys: pa.Table, parts: list[dict[str, Any]], column: str) -> pa.Table:
    """(shard, row) of the candidates in ``keys`` (hash, shard, row) whose hash is in the
    index parts' ``column``."""
    import duckdb

    files = _files(parts)
    empty = pa.table({"shard": pa.array([], pa.int32()), "row": pa.array([], pa.int64())})
    if not files or len(keys) == 0:
        return empty
    con = duckdb.connect()
    try:
        if not _has_column(con, files, column):
            return empty
        con.register("cand", keys)
        return con.sql(
            f"SELECT shard, row FROM cand WHERE hash IN (SELECT \"{column}\" FROM "
            "read_parquet($1, union_by_name = true) WHERE \"{column}\" IS NOT NULL) "
            "ORDER BY shard, row".replace("{column}", column), params=[files]).to_arrow_table()
    finally:
        con.close()


def seen_near(cands: pa.Table, parts: list[dict[str, Any]], bands_column: str,
              sig_column: str, threshold: float) -> pa.Table:
    """(shard, row) of the MinHash candidates (shard, row, bands, sig) that share a band key
    with an indexed document and whose estimated Jaccard with it is >= ``threshold``."""
    import duckdb

    files = _files(parts)
    empty = pa.table({"shard": pa.array([], pa.int32()), "row": pa.array([], pa.int64())})
    if not files or len(cands) == 0:
        return empty
    con = duckdb.connect()
    try:
        if not _has_column(con, files, sig_column):
            return empty
        pos = pa.array(np.arange(len(cands), dtype=np.int64))
        con.register("cand", pa.table({"pos": pos, "bands": cands.column("bands")}))
        # band keys are band-specific hashes, so one key column joins all bands at once
        pairs = con.sql(
            f"""
            WITH c AS (SELECT pos, unnest(bands) AS key FROM cand),
                 i AS (SELECT "{sig_column}" AS sig, unnest("{bands_column}") AS key
                       FROM read_parquet($1, union_by_name = true)
                       WHERE "{sig_column}" IS NOT NULL)
            SELECT DISTINCT c.pos, i.sig FROM c JOIN i USING (key) ORDER BY c.pos
            """, params=[files]).to_arrow_table()
    finally:
        con.close()
    if len(pairs) == 0:
        return empty
    from tasks.filters.minhash import _matrix

    p = pairs.column("pos").to_numpy()
    sig = pairs.column("sig").combine_chunks()  # DuckDB hands fixed-size lists back as lists
    isig = sig.flatten().to_numpy().astype(np.uint32).reshape(len(sig), -1)
    csig = _matrix(cands.column("sig"), np.uint32)[p]
    need = threshold * csig.shape[1] - 1e-9
    hit = np.unique(p[(isig == csig).sum(axis=1) >= need])
    return pa.table({"shard": cands.column("shard").take(pa.array(hit)),
                     "row": cands.column("row").take(pa.array(hit))})
