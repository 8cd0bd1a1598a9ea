"""What other keep settings would keep, from a run's stored scores (``datamill sweep``).

Reads the filter stage's outputs of a run (kept and rejected documents carry every score
column the run computed) — a score column, the source and the text's UTF-8 length, one record
batch at a time — and, for each keep setting k %, takes the top k % of the documents with a
score (ties in file order) and reports how many documents and bytes that keeps, per source,
beside each source's share of the pool. Nothing is scored again and nothing is written.

The pool (``among``): ``passing`` = the documents no document rule rejected (those a corpus
rule such as ``top_k`` ranks by default), ``all`` = every document the filter stage saw,
``kept`` = the documents the run kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

Among = Literal["passing", "all", "kept"]


@dataclass
class Pool:
    score: np.ndarray  # float64, documents with a score only
    source: np.ndarray  # int32 index into ``sources``
    sources: list[str]
    nbytes: np.ndarray  # int64, UTF-8 bytes of each text
    unscored: int  # documents of the pool without a score


def filter_manifest(data_root: Path, catalog: Any, run: str) -> dict[str, Any]:
    """The filter stage's manifest of ``run`` (a run id or ``latest``)."""
    run_id = catalog.resolve(run)
    versions = catalog.stage_versions(run_id, ["filter"])
    if not versions:
        raise LookupError(f"run {run_id!r} has no filter stage in the catalog")
    path = data_root / "stages" / "filter" / versions[-1][1] / "manifest.json"
    if not path.is_file():
        raise LookupError(f"run {run_id!r}: its filter output is gone ({path})")
    return {**json.loads(path.read_text()), "run_id": run_id}


def document_rule_prefixes(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The rule-name prefixes of the run's document filters (``gopher_quality.`` ...)."""
    from tasks.filters.base import get_filter

    names = (manifest.get("config") or {}).get("filter", {}).get("filters", {})
    return tuple(f"{get_filter(n).NAME}." for n in names)


def read_pool(data_root: Path, manifest: dict[str, Any], column: str, among: Among = "passing"
              ) -> Pool:
    files = [(rel, False) for rel in manifest["outputs"]["kept"]]
    if among != "kept":
        files += [(rel, True) for rel in manifest["outputs"].get("rejected", [])]
    doc_rules = document_rule_prefixes(manifest) if among == "passing" else ()
    scores, sources, nbytes = [], [], []
    unscored, seen_column = 0, False
    for rel, rejected in files:
        path = data_root / rel
        if not path.is_file():
            continue
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if column not in names:
            continue
        seen_column = True
        cols = [column, "source", "text"] + (["reject_reason"] if rejected else [])
        for rb in pf.iter_batches(columns=cols, batch_size=8_192):
            t = pa.Table.from_batches([rb])
            if rejected and doc_rules:
                reason = pc.fill_null(t.column("reject_reason"), "")
                t = t.filter(pc.invert(_starts_with_any(reason, doc_rules)))
            has = pc.is_valid(t.column(column))
            unscored += len(t) - int(pc.sum(has).as_py() or 0)
            t = t.filter(has)
            scores.append(pc.cast(t.column(column), pa.float64()).to_numpy())
            sources.append(t.column("source").to_numpy(zero_copy_only=False))
            nbytes.append(pc.binary_length(t.column("text")).to_numpy().astype(np.int64))
    if not seen_column:
        raise ValueError(f"no column {column!r} in the run's filter outputs")
    src = np.concatenate(sources) if sources else np.zeros(0, object)
    names_, codes = np.unique(src.astype(str), return_inverse=True)
    return Pool(np.concatenate(scores) if scores else np.zeros(0),
                codes.astype(np.int32), [str(s) for s in names_],
                np.concatenate(nbytes) if nbytes else np.zeros(0, np.int64), unscored)


def _starts_with_any(arr: pa.ChunkedArray, prefixes: tuple[str, ...]) -> pa.ChunkedArray:
    out = pc.starts_with(arr, prefixes[0])
    for p in prefixes[1:]:
        out = pc.or_(out, pc.starts_with(arr, p))
    return out


def sweep(pool: Pool, keeps: list[float], ascending: bool = False) -> list[dict[str, Any]]:
    """Per keep setting (a %), the documents and bytes kept, overall and per source."""
    n = len(pool.score)
    key = pool.score if ascending else -pool.score
    order = np.argsort(key, kind="stable")  # best first; ties in file order
    total_bytes = int(pool.nbytes.sum())
    pool_docs = np.bincount(pool.source, minlength=len(pool.sources))
    pool_bytes = np.bincount(pool.source, weights=pool.nbytes, minlength=len(pool.sources))
    out = []
    for k in keeps:
        keep_n = math.ceil(n * k / 100)
        chosen = order[:keep_n]
        docs = np.bincount(pool.source[chosen], minlength=len(pool.sources))
        kept_bytes = np.bincount(pool.source[chosen], weights=pool.nbytes[chosen],
                                 minlength=len(pool.sources))
        kb = int(kept_bytes.sum())
        out.append({
            "keep_percent": k, "docs": keep_n, "pool_docs": n,
            "cut": float(pool.score[chosen[-1]]) if keep_n else None, "bytes": kb,
            "pool_bytes": total_bytes,
            "sources": [{"source": s, "docs": int(docs[i]), "pool_docs": int(pool_docs[i]),
                         "bytes": int(kept_bytes[i]),
                         "byte_share": kept_bytes[i] / kb if kb else 0.0,
                         "pool_byte_share": pool_bytes[i] / total_bytes if total_bytes else 0.0}
                        for i, s in enumerate(pool.sources)]})
    return out
