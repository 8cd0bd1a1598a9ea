"""Corpus rule ``dsir``: Data Selection with Importance Resampling (Xie et al. 2023).

Resamples, without replacement, ``k`` documents (or ``percent`` %) of the pool whose hashed
n-gram distribution is closest to a target set's:

1. ``score`` (score stage, once): each document's hashed word unigrams + bigrams
   (``dsir_features``: bucket ids, ``tasks/select/features.py``; 10,000 buckets by default,
   the paper's). Only ``num_buckets`` and ``ngrams`` change it.
2. ``keys`` (filter stage, per shard): the rows in play with their features, source and a
   Gumbel draw fixed by (``seed``, document id).
3. ``decide`` (one task, fanning out per shard file): the bag-of-n-grams models — the raw
   pool's bucket counts summed over shards (one streaming pass), the target's from the
   reference files (or the pool's documents of ``target.source``); each document's log
   importance weight ``log p_target(x) - log p_raw(x)``, a sum over its n-grams of
   ``log(p_t + 1e-8) - log(p_r + 1e-8)`` (the smoothing of the authors' ``data-selection``
   package); then the ``k`` largest ``weight + Gumbel``: ``k`` documents sampled without
   replacement with probabilities proportional to the importance weights (Gumbel top-k),
   ties by (shard, row). The others are dropped as ``dsir.not_sampled``.

   ``chunk_words`` (default 128): the weight is the document's mean log ratio per n-gram
   times the n-grams of a 128-word text. The paper resampled 128-word chunks of the Pile, all
   of one length; whole documents are not, and a plain sum (``chunk_words: null``) ranks them
   by length (an n-gram bucket the target never saw costs about -18).

Every ranked document gets ``dsir_score`` (``annotate``): its log importance weight minus the
smallest one among the ranked documents (so >= 0, as the documents contract wants every score
column; higher = closer to the target; ``min_log_weight`` in the statistics gives the weight
back). The features are not copied to the outputs. The statistics (filter manifest,
``corpus.dsir``) report the paper's measure: KL(target || raw pool) and KL(target ||
selection) on the hashed n-gram distributions (same smoothing) and their difference, the KL
reduction; and KL(target || a uniform sample of the same size), for scale: a small selection
misses buckets the whole pool has, which alone raises its KL.

The target, ``k``, ``percent`` and ``seed`` are decisions: changing one re-runs only the
filter stage (features stay stored). Memory: ``decide`` holds a few numbers per ranked
document and a few ``num_buckets`` vectors; each fan-out task one shard's keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from tasks.corpus.base import CorpusRuleConfig, RuleContext, split_by_shard
from tasks.identity import SCORED
from tasks.select import features as fx
from tasks.select.features import draws
from tasks.select.reference import ReadStats, Reference, iter_texts

NAME = "dsir"
VERSION = 1
FEATURES = "dsir_features"
SCORE = "dsir_score"  # the log weight minus the smallest ranked one (>= 0)
RULE = "dsir.not_sampled"
EPS = 1e-8
COLUMNS = (FEATURES, "id", "source")
TRANSIENT_COLUMNS = (FEATURES,)
ANNOTATIONS = {SCORE: pa.float64()}


class Config(CorpusRuleConfig):
    target: Reference = Field(description="the target set: files or a source of the pool")
    k: int | None = Field(None, gt=0, description="documents to resample")
    percent: float | None = Field(None, gt=0, le=100, description="or: % of the ranked "
                                  "documents to resample (10 when neither is given)")
    num_buckets: Annotated[int, SCORED] = Field(
        10_000, ge=16, le=1 << 24, description="hash buckets of the n-gram features (score)")
    ngrams: Annotated[int, SCORED] = Field(
        2, ge=1, le=4, description="1 = unigrams, 2 = unigrams + bigrams, ... (score)")
    chunk_words: int | None = Field(
        128, ge=1, description="a document's weight is its mean log ratio per n-gram times "
        "the n-grams of a chunk of this many words (the paper's 128-word examples); null = "
        "the plain sum over the whole document, which grows with its length")
    seed: int = Field(0, description="the Gumbel draws of the resampling")
    when: Literal["before", "after"] = Field(
        "after", description="resample among the documents that passed the document rules "
        "(after) or all documents (before); the raw model is fit on the same population")

    @model_validator(mode="after")
    def _one_size(self) -> Config:
        if self.k is not None and self.percent is not None:
            raise ValueError("dsir takes k or percent, not both")
        if self.k is None and self.percent is None:
            self.percent = 10.0
        return self


def score(table: pa.Table, cfg: Config) -> pa.Table:
    """Computed once in the score stage: each document's hashed n-gram buckets."""
    feats = fx.hashed_ngrams(table.column("text"), cfg.num_buckets, cfg.ngrams)
    return pa.table({FEATURES: feats})


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    if FEATURES not in scored.column_names:
        raise ValueError(f"dsir: no column {FEATURES!r} in the scored documents")
    take = pa.array(np.asarray(rows, np.int64))
    u = draws(scored.column("id").take(take), cfg.seed, "dsir")
    gumbel = -np.log(-np.log(np.clip(u, 1e-300, None)))
    return pa.table({"shard": pa.array(np.full(len(rows), shard, np.int32)), "row": take,
                     "source": scored.column("source").take(take), "gumbel": gumbel,
                     FEATURES: scored.column(FEATURES).take(take)})


def _file_counts(path: str, num_buckets: int, source: str | None
                 ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """One shard's keys: bucket counts of every row, of the rows of ``source``, row counts."""
    t = pq.read_table(path, columns=["source", FEATURES])
    raw = fx.counts(t.column(FEATURES), num_buckets)
    target = np.zeros(num_buckets, np.int64)
    n_target = 0
    if source is not None and len(t):
        mine = t.filter(pc.fill_null(pc.equal(t.column("source"), source), False))
        target, n_target = fx.counts(mine.column(FEATURES), num_buckets), len(mine)
    return raw, target, len(t), n_target


def chunk_ngrams(words: int, ngrams: int) -> int:
    """How many 1..``ngrams``-grams a text of ``words`` words has."""
    return sum(max(words - k + 1, 0) for k in range(1, ngrams + 1))


def _file_weights(path: str, log_diff: np.ndarray, per_doc: int | None
                  ) -> tuple[np.ndarray, ...]:
    """Each row's log importance weight: the sum of its n-grams' log ratios, or (``per_doc``
    n-grams) their mean times ``per_doc``."""
    t = pq.read_table(path, columns=["shard", "row", "gumbel", FEATURES])
    w = fx.doc_sums(t.column(FEATURES), log_diff)
    if per_doc is not None:
        _, lengths = fx.flat(t.column(FEATURES))
        w = w / np.maximum(lengths, 1) * per_doc
    return (t.column("shard").to_numpy().astype(np.int32), t.column("row").to_numpy(), w,
            t.column("gumbel").to_numpy())


def _file_selected(path: str, rows: np.ndarray, uniform: np.ndarray, num_buckets: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Bucket counts of this shard's selected rows, and of its uniformly drawn rows."""
    t = pq.read_table(path, columns=["row", FEATURES])
    r = t.column("row").to_numpy()
    return tuple(fx.counts(t.column(FEATURES).filter(pa.array(np.isin(r, x))), num_buckets)
                 for x in (rows, uniform))  # type: ignore[return-value]


def target_counts(ref: Reference, num_buckets: int, ngrams: int) -> tuple[np.ndarray, int]:
    """Bucket counts of the reference files' texts, and how many documents were read."""
    total = np.zeros(num_buckets, np.int64)
    stats = ReadStats()
    for texts in iter_texts(ref, stats):
        total += fx.counts(fx.hashed_ngrams(pa.array(texts, pa.large_string()), num_buckets,
                                            ngrams), num_buckets)
    return total, stats.docs


def log_probs(counts: np.ndarray) -> np.ndarray:
    return np.log(counts / max(int(counts.sum()), 1) + EPS)


def kl(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """KL(p || q) of two bucket-count vectors, probabilities smoothed by EPS."""
    p = p_counts / max(int(p_counts.sum()), 1)
    return float(np.sum(p * (log_probs(p_counts) - log_probs(q_counts))))


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    b = cfg.num_buckets
    parts = ctx.map(_file_counts, [(f, b, cfg.target.source) for f in key_files])
    n = sum(p[2] for p in parts)
    if n == 0:
        return {"ranked": 0, "kept": 0, "dropped": {}}
    raw = np.sum([p[0] for p in parts], axis=0)
    if cfg.target.source is not None:
        target = np.sum([p[1] for p in parts], axis=0)
        target_docs = sum(p[3] for p in parts)
    else:
        target, target_docs = target_counts(cfg.target, b, cfg.ngrams)
    if not target.sum():
        raise ValueError(f"dsir: the target set has no words ({cfg.target})")
    log_diff = log_probs(target) - log_probs(raw)
    per_doc = chunk_ngrams(cfg.chunk_words, cfg.ngrams) if cfg.chunk_words else None
    got = ctx.map(_file_weights, [(f, log_diff, per_doc) for f in key_files])
    shard, row, weight, gumbel = (np.concatenate([g[i] for g in got]) for i in range(4))
    keep_n = min(cfg.k, n) if cfg.k is not None else math.ceil(n * (cfg.percent or 0) / 100)
    order = np.lexsort((row, shard, -(weight + gumbel)))  # best first; ties by (shard, row)
    chosen = np.zeros(n, dtype=bool)
    chosen[order[:keep_n]] = True
    rule = pc.if_else(pa.array(chosen), pa.nulls(n, pa.string()), pa.scalar(RULE))
    low, high = float(weight.min()), float(weight.max())
    dropped = split_by_shard(out_dir, pa.table({"shard": shard, "row": row, "rule": rule,
                                                SCORE: weight - low}))
    # the same number of documents drawn uniformly (the Gumbel draws alone): how far a
    # selection of this size is from the target by chance (a small one misses buckets)
    uniform = np.zeros(n, dtype=bool)
    uniform[np.lexsort((row, shard, -gumbel))[:keep_n]] = True
    file_shard = [int(g[0][0]) if len(g[0]) else -1 for g in got]
    picked = ctx.map(_file_selected, [
        (f, np.sort(row[chosen & (shard == s)]), np.sort(row[uniform & (shard == s)]), b)
        for f, s in zip(key_files, file_shard, strict=True)])
    selected = np.sum([p[0] for p in picked], axis=0)
    random_ = np.sum([p[1] for p in picked], axis=0)
    kl_raw, kl_sel = kl(target, raw), kl(target, selected)
    return {"ranked": n, "kept": keep_n, "dropped": dropped, "target_docs": int(target_docs),
            "kl_target_raw": round(kl_raw, 6), "kl_target_selected": round(kl_sel, 6),
            "kl_reduction": round(kl_raw - kl_sel, 6),
            "kl_target_uniform": round(kl(target, random_), 6),
            "min_log_weight": low, "max_log_weight": high}


def annotate(table: pa.Table, shard: int, decisions: pa.Table | None,
             candidate_rows: np.ndarray) -> dict[str, pa.Array]:
    """``dsir_score`` on every ranked document; null on the others."""
    w = np.full(len(table), np.nan)
    if decisions is not None and len(decisions):
        w[decisions.column("row").to_numpy()] = decisions.column(SCORE).to_numpy()
    return {SCORE: pa.array(w, pa.float64(), mask=np.isnan(w))}
