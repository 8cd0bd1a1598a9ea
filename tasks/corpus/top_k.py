"""Corpus rule ``top_k``: keep the top k % (or the documents at or above a quantile) of any
stored score column — DCLM's "keep the top 10 % by a classifier score", for any score.

Population: ``when: after`` (default) ranks the documents that passed the document rules;
``when: before`` ranks every document, and its drops are named before the document rules'.
A null score means the rule does not apply: the document is not ranked and never dropped.
Ties at the cut are broken by (shard, row), so the number kept is exactly ceil(k % of n).
``by: COLUMN`` stratifies: the cut is made within each value of that column (``source``,
``lang``, ``dataman_domain``, ``cluster``; a null is a group of its own), so the selection
keeps the corpus's mix over it. Holds one float and two integers per ranked document (and the
group's value with ``by``) — scores, never texts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from tasks.corpus.base import CorpusRuleConfig, RuleContext, read_keys, split_by_shard

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
    by: str | None = Field(None, description="stratify: keep the top k % (or the quantile) "
                           "within each value of this column (e.g. source, lang)")
    when: Literal["before", "after"] = Field(
        "after", description="rank the documents that passed the document rules (after) or "
        "all documents (before)")

    @model_validator(mode="after")
    def _one_cut(self) -> Config:
        if (self.percent is None) == (self.quantile is None):
            raise ValueError("top_k needs exactly one of percent or quantile")
        return self


def columns(cfg: Config) -> tuple[str, ...]:
    return (cfg.column,) if cfg.by is None else (cfg.column, cfg.by)


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    if cfg.column not in scored.column_names:
        raise ValueError(f"top_k: no column {cfg.column!r} in the scored documents; "
                         f"there are {sorted(scored.column_names)}")
    take = pa.array(rows, pa.int64())
    score = pc.cast(scored.column(cfg.column).take(take), pa.float64())
    t = pa.table({"shard": pa.array(np.full(len(rows), shard, np.int32)),
                  "row": pa.array(np.asarray(rows, np.int64)), "score": score})
    if cfg.by is not None:
        if cfg.by not in scored.column_names:
            raise ValueError(f"top_k: no column {cfg.by!r} to stratify by in the scored "
                             f"documents; there are {sorted(scored.column_names)}")
        t = t.append_column("group", pc.cast(scored.column(cfg.by).take(take), pa.string()))
    return t.filter(pc.is_valid(t.column("score")))


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    t = read_keys(key_files)
    if t is None:
        return {"ranked": 0, "kept": 0, "cut": None, "dropped": {}}
    return cut_keys(t, out_dir, cfg, RULE)


def cut_keys(t: pa.Table, out_dir: Path, cfg: Config, rule: str) -> dict[str, Any]:
    """Rank the gathered keys (shard, row, score[, group]), write what falls below the cut as
    ``rule``, return the statistics (also ``tasks.select.dataman_topk``'s ranking)."""
    score = t.column("score").to_numpy()
    if not cfg.higher_is_better:
        score = -score
    shard, row = t.column("shard").to_numpy(), t.column("row").to_numpy()
    groups = {None: np.arange(len(score))} if cfg.by is None else _groups(t.column("group"))
    drops, per_group = [], {}
    kept = 0
    cut_value: float | None = None
    for g, idx in groups.items():
        keep_n, drop, cut = _cut(score[idx], shard[idx], row[idx], cfg)
        drops.append(idx[drop])
        kept += keep_n
        if cut is not None and not cfg.higher_is_better:
            cut = -cut
        cut_value = cut
        per_group[str(g)] = {"ranked": int(len(idx)), "kept": keep_n, "cut": cut}
    drop_all = np.sort(np.concatenate(drops))
    dropped = t.select(["shard", "row"]).take(pa.array(drop_all, pa.int64()))
    counts = split_by_shard(out_dir, dropped, rule=rule)
    out: dict[str, Any] = {"ranked": len(score), "kept": kept, "dropped": counts}
    if cfg.by is None:
        out["cut"] = cut_value
    else:
        out["by"], out["groups"] = cfg.by, per_group
    return out


def _groups(values: pa.ChunkedArray) -> dict[str | None, np.ndarray]:
    """Each value's positions (ascending), values sorted with null last: one sort of the
    dictionary codes, not a pass over the rows per group."""
    enc = pc.dictionary_encode(values).combine_chunks()
    names: list[str | None] = [*enc.dictionary.to_pylist(), None]
    codes = pc.fill_null(enc.indices, len(names) - 1).to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    found = {names[c]: order[bounds[c]:bounds[c + 1]] for c in range(len(names))
             if bounds[c] < bounds[c + 1]}
    return {g: found[g] for g in sorted(found, key=lambda v: (v is None, v))}


def _cut(score: np.ndarray, shard: np.ndarray, row: np.ndarray, cfg: Config
         ) -> tuple[int, np.ndarray, float | None]:
    """(kept, positions dropped, the last kept score) of one ranked population."""
    n = len(score)
    if cfg.percent is not None:
        keep_n = math.ceil(n * cfg.percent / 100)
    else:  # everything at or above the quantile (ties at the cut all kept)
        cut = np.quantile(score, cfg.quantile, method="lower")
        keep_n = int((score >= cut).sum())
    order = np.lexsort((row, shard, -score))  # best first; ties by (shard, row)
    return keep_n, order[keep_n:], (float(score[order[keep_n - 1]]) if keep_n else None)
