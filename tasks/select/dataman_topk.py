"""Corpus rule ``dataman_topk``: the top k % of documents by DataMan's overall score within
each DataMan domain — selection by quality that keeps the corpus's domain mix (the paper's
domain-stratified selection; ``top_k`` on ``dataman_score`` ranks all domains together).

Ranked: the documents that passed the document rules with a score (a null score is never
dropped); a document without a domain is ranked with the others that lack one. In each
domain, exactly ceil(k % of its ranked documents) are kept, ties broken by (shard, row).
Recipe line (by import path):

    stages:
      filter:
        corpus: {tasks.select.dataman_topk: {percent: 30}}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from tasks.corpus.base import CorpusRuleConfig, RuleContext, split_by_shard

NAME = "dataman_topk"
VERSION = 1
RULE = "dataman_topk.below_cut"
COLUMNS = ("dataman_score", "dataman_domain")


class Config(CorpusRuleConfig):
    percent: float = Field(gt=0, le=100, description="keep the top k % of each domain")


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    missing = [c for c in COLUMNS if c not in scored.column_names]
    if missing:
        raise ValueError(f"{NAME}: no column {missing}: run the dataman stage "
                         "(tasks.select.dataman_stage:DataMan) before the filter")
    take = pa.array(np.asarray(rows, np.int64))
    t = pa.table({"shard": pa.array(np.full(len(rows), shard, np.int32)),
                  "row": take,
                  "score": pc.cast(scored.column("dataman_score").take(take), pa.float64()),
                  "domain": pc.fill_null(scored.column("dataman_domain").take(take), "")})
    return t.filter(pc.is_valid(t.column("score")))


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    tables = [pq.read_table(f) for f in key_files]
    t = pa.concat_tables(tables) if tables else None
    if t is None or not len(t):
        return {"ranked": 0, "kept": 0, "per_domain": {}, "dropped": {}}
    score = t.column("score").to_numpy()
    shard, row = t.column("shard").to_numpy(), t.column("row").to_numpy()
    domain = np.asarray(t.column("domain").to_pylist(), dtype=object)
    drop: list[np.ndarray] = []
    per_domain: dict[str, dict[str, int]] = {}
    for d in sorted(set(domain.tolist())):
        idx = np.flatnonzero(domain == d)
        order = idx[np.lexsort((row[idx], shard[idx], -score[idx]))]  # best first
        keep_n = math.ceil(len(idx) * cfg.percent / 100)
        drop.append(order[keep_n:])
        per_domain[d or "(none)"] = {"ranked": int(len(idx)), "kept": int(keep_n)}
    dropped_rows = np.sort(np.concatenate(drop)) if drop else np.zeros(0, np.int64)
    dropped = t.select(["shard", "row"]).take(pa.array(dropped_rows, pa.int64()))
    counts = split_by_shard(out_dir, dropped, rule=RULE)
    return {"ranked": int(len(t)), "kept": int(len(t) - len(dropped_rows)),
            "per_domain": per_domain, "dropped": counts}
