"""Corpus rule ``dataman_topk``: the top k % of documents by DataMan's overall score within
each DataMan domain — selection by quality that keeps the corpus's domain mix (the paper's
domain-stratified selection; ``top_k`` on ``dataman_score`` ranks all domains together).

Ranked: the documents that passed the document rules with a score (a null score is never
dropped); a document without a domain is ranked with the others that lack one. In each
domain, exactly ceil(k % of its ranked documents) are kept, ties broken by (shard, row).
It is ``top_k`` with ``column: dataman_score, by: dataman_domain`` (the ranking is
``tasks.corpus.top_k``'s) under its own name, drop reason and statistics. Recipe line (by
import path):

    stages:
      filter:
        corpus: {tasks.select.dataman_topk: {percent: 30}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.corpus import top_k
from tasks.corpus.base import CorpusRuleConfig, RuleContext, read_keys

NAME = "dataman_topk"
VERSION = 1
RULE = "dataman_topk.below_cut"
COLUMNS = ("dataman_score", "dataman_domain")


class Config(CorpusRuleConfig):
    percent: float = Field(gt=0, le=100, description="keep the top k % of each domain")


def as_top_k(cfg: Config) -> top_k.Config:
    return top_k.Config(column="dataman_score", percent=cfg.percent, by="dataman_domain")


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    missing = [c for c in COLUMNS if c not in scored.column_names]
    if missing:
        raise ValueError(f"{NAME}: no column {missing}: run the dataman stage "
                         "(tasks.select.dataman_stage:DataMan) before the filter")
    t = top_k.keys(scored, shard, rows, as_top_k(cfg), ctx)
    # documents without a domain rank together: "(none)" in the statistics
    return t.set_column(t.schema.get_field_index("group"), "group",
                        pc.fill_null(t.column("group"), ""))


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    t = read_keys(key_files)
    if t is None:
        return {"ranked": 0, "kept": 0, "per_domain": {}, "dropped": {}}
    s = top_k.cut_keys(t, out_dir, as_top_k(cfg), RULE)
    return {"ranked": s["ranked"], "kept": s["kept"],
            "per_domain": {d or "(none)": {"ranked": g["ranked"], "kept": g["kept"]}
                           for d, g in s["groups"].items()}, "dropped": s["dropped"]}
