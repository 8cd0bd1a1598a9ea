"""Corpus rule ``top_k``: keep the top k % (or the documents at or above a quantile) of any
stored score column — DCLM's "keep the top 10 % by a classifier score", for any score.

Population: ``when: after`` (default) ranks the documents that passed the document rules;
``when: before`` ranks every document, and its drops are named before the document rules'.
A null score means the rule does not apply: the document is not ranked and never dropped.
Ties at the cut are broken by (shard, row), so the number kept is exactly ceil(k % of n).
Holds one float and two integers per ranked document — scores, never texts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from tasks.corpus.base import CorpusRuleConfig, RuleContext, split_by_shard

NAME = "top_k"
VERSION = 1
RULE = "top_k.below_cut"
COLUMNS: tuple[str, ...] = ()  # the column is the config's


class Config(CorpusRuleConfig):
    column: str = Field(description="the score column to rank by, e.g. "
                        "gopher_quality_alpha_words_frac or a stage's classifier score")
    percent: float | None = Field(None, gt=0, le=100, description="keep the top k % of the "
                                  "ranked documents")
    quantile: float | None = Field(None, ge=0, le=1, description="or: keep documents whose "
                                   "score is >= this quantile of the ranked scores")
    higher_is_better: bool = Field(True, description="false ranks ascending (e.g. a loss)")
    when: Literal["before", "after"] = Field(
        "after", description="rank the documents that passed the document rules (after) or "
        "all documents (before)")

    @model_validator(mode="after")
    def _one_cut(self) -> Config:
        if (self.percent is None) == (self.quantile is None):
            raise ValueError("top_k needs exactly one of percent or quantile")
        return self


def columns(cfg: Config) -> tuple[str, ...]:
    return (cfg.column,)


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    if cfg.column not in scored.column_names:
        raise ValueError(f"top_k: no column {cfg.column!r} in the scored documents; "
                         f"there are {sorted(scored.column_names)}")
    score = pc.cast(scored.column(cfg.column).take(pa.array(rows, pa.int64())), pa.float64())
    t = pa.table({"shard": pa.array(np.full(len(rows), shard, np.int32)),
                  "row": pa.array(np.asarray(rows, np.int64)), "score": score})
    return t.filter(pc.is_valid(t.column("score")))


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    tables = [pq.read_table(f) for f in key_files]
    if not tables or not sum(len(t) for t in tables):
        return {"ranked": 0, "kept": 0, "cut": None, "dropped": {}}
    t = pa.concat_tables(tables)
    score = t.column("score").to_numpy()
    if not cfg.higher_is_better:
        score = -score
    n = len(score)
    if cfg.percent is not None:
        keep_n = math.ceil(n * cfg.percent / 100)
    else:  # everything at or above the quantile (ties at the cut all kept)
        cut = np.quantile(score, cfg.quantile, method="lower")
        keep_n = int((score >= cut).sum())
    # best first; ties by (shard, row)
    order = np.lexsort((t.column("row").to_numpy(), t.column("shard").to_numpy(), -score))
    drop = np.sort(order[keep_n:])
    cut_value = float(score[order[keep_n - 1]]) if keep_n else None
    dropped = t.select(["shard", "row"]).take(pa.array(drop))
    counts = split_by_shard(out_dir, dropped, rule=RULE)
    if cut_value is not None and not cfg.higher_is_better:
        cut_value = -cut_value
    return {"ranked": n, "kept": keep_n, "cut": cut_value, "dropped": counts}
