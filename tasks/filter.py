"""The filter stage: score once, decide later (dolma's split), per shard.

``score_shard`` adds every filter's score columns and the exact-dedup hash to a shard and
stores them. ``decide_shard`` applies thresholds to stored scores — so changing a threshold
never recomputes a score. Exact dedup needs all shards: pass 1 (``dedup_candidates``) returns
the hashes of docs that pass the rules; the driver picks survivors (``tasks.filters.dedup``);
pass 2 (``decide_shard``) writes kept and rejected docs, each rejection naming its first rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.filters import dedup, minhash
from tasks.filters.base import FilterConfig, get_filter
from tasks.schema import DOC_COLUMNS, with_reject
from tasks.store import write_parquet


def score_table(
    table: pa.Table, filters: Mapping[str, FilterConfig], exact_dedup: Mapping[str, Any] | None,
    near_dedup: FilterConfig | None = None, url_dedup: Mapping[str, Any] | None = None,
) -> pa.Table:
    """The input table plus all score columns, in recipe order. An edit step (a module with
    ``edit``: ``c4_lines``, ``pii``) replaces ``text``; the steps after it, and the dedup
    hashes, see the edited text."""
    out = table
    for name, cfg in filters.items():
        module = get_filter(name)
        edit = getattr(module, "edit", None)
        if edit is not None:
            text, scores = edit(out, cfg)
            out = out.set_column(out.schema.get_field_index("text"), "text", text)
        else:
            scores = module.score(out, cfg)
        for col_name in scores.column_names:
            out = out.append_column(col_name, scores.column(col_name))
    table = out
    if exact_dedup is not None:
        h = dedup.hash_texts(table.column("text").combine_chunks(),
                             exact_dedup.get("lowercase", True),
                             exact_dedup.get("collapse_whitespace", True))
        out = out.append_column(dedup.HASH_COLUMN, h)
    if near_dedup is not None:
        mh = minhash.hash_texts(table.column("text"), near_dedup)
        for name in mh.column_names:
            out = out.append_column(name, mh.column(name))
    if url_dedup is not None:
        urls = (table.column("url") if "url" in table.column_names
                else pa.nulls(len(table), pa.string()))
        out = out.append_column(dedup.URL_HASH_COLUMN,
                                dedup.hash_urls(urls, url_dedup.get("drop_query", False)))
    return out


def score_shard(
    in_path: str, out_path: str, filters: Mapping[str, FilterConfig],
    exact_dedup: Mapping[str, Any] | None, near_dedup: FilterConfig | None = None,
    url_dedup: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    pf = pq.ParquetFile(in_path)
    tables = [score_table(pa.Table.from_batches([rb]), filters, exact_dedup, near_dedup, url_dedup)
              for rb in pf.iter_batches(batch_size=5_000)]
    if tables:
        t = pa.concat_tables(tables)
    else:  # an empty shard still gets a (typed) scored file
        t = score_table(pf.schema_arrow.empty_table(), filters, exact_dedup, near_dedup,
                        url_dedup)
    write_parquet(t, Path(out_path), row_group_rows=pf.metadata.row_group(0).num_rows
                  if pf.metadata.num_row_groups else None)
    return {"docs_in": len(t), "docs_kept": len(t), "docs_rejected": 0,
            "edits": edit_totals(t, filters)}


def edit_totals(scored: pa.Table, filters: Mapping[str, FilterConfig]) -> dict[str, int]:
    """Totals of the edit steps' count columns (``c4_lines_removed``, ``pii_emails``, ...)."""
    out: dict[str, int] = {}
    for name in filters:
        module = get_filter(name)
        if not hasattr(module, "edit"):
            continue
        for col in module.SCORE_SCHEMA.names:
            if col.endswith("_total"):
                continue
            out[col] = int(pc.sum(scored.column(col)).as_py() or 0)
    return out


def first_failure(
    scores: pa.Table, filters: Mapping[str, FilterConfig]
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Per row, the name of the first failing rule ('' if none), and per-rule counts:
    ``alone`` = docs that rule would drop by itself, ``first`` = docs it dropped first."""
    n = len(scores)
    reason = np.full(n, "", dtype=object)
    counts: dict[str, dict[str, int]] = {}
    for name, cfg in filters.items():
        for rule, fails in get_filter(name).rules(scores, cfg).items():
            mask = pc.fill_null(fails, False).to_numpy(zero_copy_only=False).astype(bool)
            newly = mask & (reason == "")
            reason[newly] = rule
            counts[rule] = {"alone": int(mask.sum()), "first": int(newly.sum())}
    return reason, counts


def dedup_candidates(
    scored_path: str, shard: int, filters: Mapping[str, FilterConfig], exact: bool = True,
    near: bool = False, url: bool = False,
) -> dict[str, pa.Table]:
    """Pass 1: for docs that pass every rule, the exact-dedup keys (hash, shard, row), the URL
    keys (hash, shard, row; docs with a URL only) and the near-dedup keys (shard, row, bands,
    sig) — small columns, never the texts."""
    t = _read_scores(scored_path, filters, exact, near, url)
    reason, _ = first_failure(t, filters)
    rows = np.flatnonzero(reason == "")
    out: dict[str, pa.Table] = {}
    for on, key, col in ((exact, "exact", dedup.HASH_COLUMN),
                         (url, "url", dedup.URL_HASH_COLUMN)):
        if on:
            keys = pa.table({
                "hash": t.column(col).take(pa.array(rows)),
                "shard": pa.array(np.full(len(rows), shard, dtype=np.int32)),
                "row": pa.array(rows.astype(np.int64)),
            })
            out[key] = keys.filter(pc.is_valid(keys.column("hash")))
    if near:
        out["near"] = minhash.candidates(t, shard, rows)
    return out


def _read_scores(path: str, filters: Mapping[str, FilterConfig], exact: bool,
                 near: bool = False, url: bool = False) -> pa.Table:
    schema = pq.read_schema(path)
    prefixes = tuple(f"{name}_" for name in filters)
    cols = [c for c in schema.names if c.startswith(prefixes) and c not in DOC_COLUMNS]
    if exact:
        cols.append(dedup.HASH_COLUMN)
    if url:
        cols.append(dedup.URL_HASH_COLUMN)
    if near:
        cols += [minhash.BANDS_COLUMN, minhash.SIG_COLUMN]
    cols.append("lang")
    return pq.read_table(path, columns=cols)


INDEX_COLUMNS = (dedup.HASH_COLUMN, dedup.URL_HASH_COLUMN, minhash.BANDS_COLUMN,
                 minhash.SIG_COLUMN)


def decide_shard(
    scored_path: str, kept_path: str, rejected_path: str,
    filters: Mapping[str, FilterConfig],
    drop_rows: list[int] | Mapping[str, list[int]] | None,
    near: pa.Table | None = None, index_path: str | None = None,
) -> dict[str, Any]:
    """Pass 2: apply thresholds (+ the dedup drop lists) and write kept / rejected docs.

    ``drop_rows``: rule name -> rows the driver's dedup passes drop, applied in that order
    after the filters' rules (a plain list means ``exact_dedup.duplicate``).
    ``near``: this shard's rows of ``minhash.clusters`` (row, cluster_shard, cluster_row,
    cluster_size, dropped); every doc it covers gets its cluster id and size.
    ``index_path``: also write the kept docs' dedup keys there (a part of the persistent
    dedup index, tasks/dedup_index.py)."""
    t = pq.read_table(scored_path)
    keys = t.select([c for c in INDEX_COLUMNS if c in t.column_names])
    # the signatures served their purpose in the score step's output; don't copy them on
    t = t.drop_columns([c for c in (minhash.SIG_COLUMN, minhash.BANDS_COLUMN)
                        if c in t.column_names])
    reason, counts = first_failure(t, filters)
    if drop_rows is not None and not isinstance(drop_rows, Mapping):
        drop_rows = {dedup.RULE: drop_rows}
    for rule, rows in (drop_rows or {}).items():
        mask = np.zeros(len(t), dtype=bool)
        mask[np.asarray(rows, dtype=np.int64)] = True
        newly = mask & (reason == "")
        reason[newly] = rule
        counts[rule] = {"alone": int(mask.sum()), "first": int(newly.sum())}
    if near is not None:
        rows = near.column("row").to_numpy()
        cluster = np.full(len(t), None, dtype=object)
        size = np.zeros(len(t), dtype=np.int64)
        cluster[rows] = [f"{s}:{r}" for s, r in zip(near.column("cluster_shard").to_pylist(),
                                                     near.column("cluster_row").to_pylist(),
                                                     strict=True)]
        size[rows] = near.column("cluster_size").to_numpy()
        mask = np.zeros(len(t), dtype=bool)
        mask[rows] = near.column("dropped").to_numpy(zero_copy_only=False)
        newly = mask & (reason == "")
        reason[newly] = minhash.RULE
        counts[minhash.RULE] = {"alone": int(mask.sum()), "first": int(newly.sum())}
        t = t.append_column("near_dedup_cluster", pa.array(cluster.tolist(), pa.string()))
        t = t.append_column("near_dedup_cluster_size",
                            pa.array(np.where(size > 0, size, None).tolist(), pa.int64()))
    keep = reason == ""
    write_parquet(t.filter(pa.array(keep)), Path(kept_path))
    if index_path is not None:
        write_parquet(keys.filter(pa.array(keep)), Path(index_path))
    rej = t.filter(pa.array(~keep))
    rej = with_reject(rej, "filter", pa.array(reason[~keep].tolist(), pa.string()))
    write_parquet(rej, Path(rejected_path))
    return {
        "docs_in": len(t),
        "docs_kept": int(keep.sum()),
        "docs_rejected": int((~keep).sum()),
        "rejections": counts,
    }
