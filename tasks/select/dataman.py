"""DataMan ratings (Peng et al. 2025, "DataMan: Data Manager for Pre-training LLMs"): an LLM
rates every document on DataMan's 13 quality criteria and an overall score (1-5) and names
one of its 15 domains (``tasks/prompts/ratings.py``).

Columns added to every document: ``dataman_score`` (the overall score), ``dataman_domain``
(the domain's name) and one ``dataman_<criterion>`` per criterion (``dataman_accuracy``, ...);
null where the reply gave none or the request failed. Decisions come later over the stored
columns: ``tasks.select.dataman_filter`` (a minimum overall score, optionally a set of
domains), ``top_k`` on ``dataman_score``, or ``tasks.select.dataman_topk`` (the top k % within
each domain, as DataMan's domain-stratified selection).

Requests go through ``tasks/select/annotate.py`` (the rewrite stage's backends, retries and
generation cache), shard by shard, one backend for all shards; a shard is written, then
marked done unless some of its requests failed transiently (the next run asks for those
again; every other answer comes from the cache).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.select.annotate import Annotator, LLMConfig
from tasks.store import atomic_write_json, write_parquet

PROMPT = "dataman"
BATCH_ROWS = 256  # documents asked at a time (bounded memory, enough requests in flight)


def column_of(criterion: str) -> str:
    return "dataman_" + re.sub(r"[^a-z0-9]+", "_", criterion.lower()).strip("_")


def columns() -> list[str]:
    from tasks.prompts.ratings import DATAMAN_CRITERIA

    return ["dataman_score", "dataman_domain", *(column_of(c) for c in DATAMAN_CRITERIA)]


def rating_table(replies: list[str | None]) -> tuple[pa.Table, int]:
    """The rating columns of parsed replies, and how many replies had no overall score."""
    from tasks.prompts.ratings import DATAMAN_CRITERIA, OVERALL, parse_dataman

    parsed = [parse_dataman(r) for r in replies]
    cols: dict[str, pa.Array] = {
        "dataman_score": pa.array([p[0][OVERALL] for p in parsed], pa.float32()),
        "dataman_domain": pa.array([p[1] for p in parsed], pa.string())}
    for c in DATAMAN_CRITERIA:
        cols[column_of(c)] = pa.array([p[0][c] for p in parsed], pa.float32())
    unparsed = sum(1 for r, p in zip(replies, parsed, strict=True)
                   if r is not None and p[0][OVERALL] is None)
    return pa.table(cols), unparsed


def rate_shards(jobs: list[dict[str, Any]], cfg_json: dict[str, Any], cache_dir: str,
                api_key: str | None = None) -> dict[str, Any]:
    """Rate every shard of ``jobs`` (``src``, ``kept``, ``marker``); shards already marked are
    skipped. Returns each shard's stats and the annotation's (requests, tokens, cost)."""
    from tasks.prompts.ratings import DATAMAN

    cfg = LLMConfig(**cfg_json)
    out: list[dict[str, Any]] = []
    with Annotator(cfg, DATAMAN, PROMPT, cache_dir, api_key) as ann:
        for job in jobs:
            marker = Path(job["marker"])
            if marker.is_file():
                out.append(json.loads(marker.read_text()))
                continue
            out.append(_rate_shard(ann, job))
            if not out[-1]["transient_failures"]:
                atomic_write_json(marker, out[-1])
        llm = ann.stats()
    llm["transient_failures"] = sum(s["transient_failures"] for s in out)
    return {"shards": out, "llm": llm}


def _rate_shard(ann: Annotator, job: dict[str, Any]) -> dict[str, Any]:
    pf = pq.ParquetFile(job["src"])
    parts = []
    unparsed = failed = 0
    transient_before = len(ann.transient)
    domains: dict[str, int] = {}
    hist = np.zeros(6, np.int64)
    for rb in pf.iter_batches(batch_size=BATCH_ROWS):
        replies = ann.ask(rb.column("text").to_pylist())
        failed += sum(1 for r in replies if r is None)
        ratings, bad = rating_table(replies)
        unparsed += bad
        t = pa.Table.from_batches([rb])
        for name in ratings.column_names:
            t = t.append_column(name, ratings.column(name))
        for d in ratings.column("dataman_domain").to_pylist():
            if d is not None:
                domains[d] = domains.get(d, 0) + 1
        s = ratings.column("dataman_score").to_numpy(zero_copy_only=False)
        s = s[~np.isnan(s)]
        hist += np.bincount(np.round(s).astype(np.int64), minlength=6)[:6]
        parts.append(t)
    if parts:
        t = pa.concat_tables(parts)
    else:  # an empty shard: the same columns, no rows
        empty = pf.schema_arrow.empty_table()
        ratings, _ = rating_table([])
        t = pa.table({**{n: empty.column(n) for n in empty.column_names},
                      **{n: ratings.column(n) for n in ratings.column_names}})
    write_parquet(t, Path(job["kept"]), row_group_rows=pf.metadata.row_group(0).num_rows
                  if pf.metadata.num_row_groups else None)
    return {"docs_in": len(t), "docs_kept": len(t), "docs_rejected": 0,
            "kept_file": job["kept"], "unparsed": unparsed, "failed": failed,
            "transient_failures": len(ann.transient) - transient_before,
            "domains": domains, "score_hist": [int(v) for v in hist]}
