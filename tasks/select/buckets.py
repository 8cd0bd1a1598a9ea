"""Corpus rule ``quality_buckets``: Nemotron-CC's ensemble of classifiers as integer quality
buckets 0..19 (Su et al. 2024, "Nemotron-CC: Transforming Common Crawl into a Refined
Long-Horizon Pretraining Dataset").

The recipe, as NVIDIA's released Nemotron-CC pipeline implements it (its quality
classification step): for each classifier score column, the 5th, 10th, ..., 95th percentiles
of the scores, each document weighted by its text length (UTF-8 bytes, standing in for
tokens), by the inverted CDF (the smallest score whose cumulative weight reaches the
percentile); a document's integer score for that column is how many of those 19 thresholds
are at or below its score (``numpy.digitize``), 0..19; its bucket is the maximum of its
integer scores over the columns (ensemble by max). Here:

- the percentiles are exact, over every ranked document (the released pipeline estimates them
  on a 1 % sample);
- any number of columns, and ``buckets`` other than 20 (thresholds at k / buckets);
- a null score (a classifier that did not score the document) is left out of that column's
  percentiles and of the max; a document no column scored gets a null bucket;
- ``weight: docs`` weights every document alike instead of by length.

Every column is higher-is-better, as classifier scores are; a column where lower is better (a
perplexity) is negated upstream.

A document's bucket needs every document's scores, so it is a corpus rule: ``keys`` gathers
(shard, row, weight, scores) per shard, ``decide`` computes the thresholds and buckets in one
task and writes them as decisions that drop nothing (``rule`` null), and ``annotate`` adds
``quality_bucket`` to every document of the filter's output, kept and rejected. The score
columns must exist when the filter stage gathers its keys: a document filter's score, a
column a stage before ``score`` adds (``dclm_fasttext_score``), not another corpus rule's
annotation (``dsir_score`` is computed in the same decision step). The statistics (the filter
manifest's ``corpus`` entry) hold each column's thresholds, the documents per bucket and per
column how often it set the maximum.

Decisions only: nothing here changes a score, so changing ``buckets``, ``weight`` or the
columns re-runs only the filter stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from tasks.corpus.base import CorpusRuleConfig, RuleContext, read_keys, split_by_shard

NAME = "quality_buckets"
VERSION = 1
BUCKET = "quality_bucket"
COLUMNS: tuple[str, ...] = ()  # the columns are the config's
ANNOTATIONS = {BUCKET: pa.int32()}


class Config(CorpusRuleConfig):
    columns: list[str] = Field(min_length=1, description="the classifier score columns to "
                               "ensemble (higher is better), e.g. [dclm_fasttext_score, "
                               "edu_score]")
    buckets: int = Field(20, ge=2, le=1000, description="integer scores 0..buckets-1 "
                         "(Nemotron-CC: 20, thresholds at the 5th..95th percentiles)")
    weight: Literal["bytes", "docs"] = Field(
        "bytes", description="percentiles weighted by each document's UTF-8 bytes (the "
        "released Nemotron-CC pipeline's token weighting) or by document")
    when: Literal["before", "after"] = Field(
        "after", description="bucket the documents that passed the document rules (after) or "
        "all documents (before; rejected documents then carry a bucket too)")

    @model_validator(mode="after")
    def _known(self) -> Config:
        if len(set(self.columns)) != len(self.columns):
            raise ValueError("quality_buckets: a column is named twice")
        return self


def columns(cfg: Config) -> tuple[str, ...]:
    return (*cfg.columns, "text") if cfg.weight == "bytes" else tuple(cfg.columns)


def _key(i: int) -> str:
    return f"score_{i}"  # key columns by position: a score column may be named "row"


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    missing = [c for c in cfg.columns if c not in scored.column_names]
    if missing:
        raise ValueError(f"quality_buckets: no column {missing} in the scored documents; "
                         f"there are {sorted(scored.column_names)}")
    take = pa.array(np.asarray(rows, np.int64))
    if cfg.weight == "bytes":
        w = pc.fill_null(pc.binary_length(pc.cast(scored.column("text").take(take),
                                                  pa.large_binary())), 0)
        weight = pc.cast(w, pa.int64())
    else:
        weight = pa.array(np.ones(len(rows), np.int64))
    cols: dict[str, Any] = {"shard": pa.array(np.full(len(rows), shard, np.int32)),
                            "row": take, "weight": weight}
    for i, c in enumerate(cfg.columns):
        cols[_key(i)] = pc.cast(scored.column(c).take(take), pa.float64())
    return pa.table(cols)


def thresholds(score: np.ndarray, weight: np.ndarray, buckets: int) -> np.ndarray:
    """The k / buckets weighted percentiles (k = 1..buckets-1) by the inverted CDF: the
    smallest score whose cumulative weight reaches k / buckets of the total. Integer weights,
    compared as integers (cum * buckets >= k * total): no rounding at the boundaries."""
    order = np.argsort(score, kind="stable")
    s, w = score[order], weight[order].astype(np.int64)
    if int(w.sum()) <= 0:  # every text empty: weigh documents alike
        w = np.ones_like(w)
    cum = np.cumsum(w)
    total = int(cum[-1])
    want = np.arange(1, buckets, dtype=np.int64) * total
    idx = np.searchsorted(cum * buckets, want, side="left")
    return s[np.minimum(idx, len(s) - 1)]


def integer_scores(score: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """How many thresholds are at or below each score (numpy.digitize): 0..len(cuts)."""
    return np.searchsorted(cuts, score, side="right").astype(np.int32)


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    t = read_keys(key_files)
    if t is None:
        return {"ranked": 0, "columns": {}, "buckets": {}, "null": 0}
    n = len(t)
    weight = t.column("weight").to_numpy()
    best = np.full(n, -1, np.int32)  # -1: no column scored the document
    argmax = np.full(n, -1, np.int32)
    per_col: dict[str, Any] = {}
    for i, c in enumerate(cfg.columns):
        v = t.column(_key(i)).to_numpy(zero_copy_only=False).astype(np.float64)
        ok = np.isfinite(v)
        if not ok.any():
            per_col[c] = {"scored": 0, "thresholds": [], "set_max": 0}
            continue
        cuts = thresholds(v[ok], weight[ok], cfg.buckets)
        ints = np.full(n, -1, np.int32)
        ints[ok] = integer_scores(v[ok], cuts)
        higher = ints > best
        argmax[higher] = i
        best = np.maximum(best, ints)
        per_col[c] = {"scored": int(ok.sum()), "thresholds": [float(x) for x in cuts]}
    for i, c in enumerate(cfg.columns):
        per_col[c]["set_max"] = int((argmax == i).sum())
    bucket = pa.array(best, pa.int32(), mask=best < 0)
    split_by_shard(out_dir, pa.table({
        "shard": t.column("shard"), "row": t.column("row"),
        "rule": pa.nulls(n, pa.string()), BUCKET: bucket}))
    counts = np.bincount(best[best >= 0], minlength=cfg.buckets)
    return {"ranked": n, "null": int((best < 0).sum()), "weight": cfg.weight,
            "buckets": {str(b): int(k) for b, k in enumerate(counts)}, "columns": per_col}


def annotate(table: pa.Table, shard: int, decisions: pa.Table | None,
             candidate_rows: np.ndarray) -> dict[str, pa.Array]:
    """``quality_bucket`` on every bucketed document; null on the others."""
    b = np.full(len(table), -1, np.int32)
    if decisions is not None and len(decisions):
        got = pc.fill_null(decisions.column(BUCKET), -1).to_numpy()
        b[decisions.column("row").to_numpy()] = got
    return {BUCKET: pa.array(b, pa.int32(), mask=b < 0)}
