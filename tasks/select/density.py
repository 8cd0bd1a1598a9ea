"""Density-based pruning (Abbas et al. 2024, "Effective pruning of web-scale datasets based on
complexity of concept clusters"), as a corpus rule over stored cluster columns.

The ``clusters`` stage stores per document ``cluster``, ``cluster_dist`` (cosine distance to
its centroid) and ``cluster_d_inter`` (the mean cosine distance from its cluster's centroid to
the ``inter_neighbors`` nearest other centroids). This rule (recipe: ``stages.filter.corpus``
key ``tasks.select.density``) decides over a kept budget:

- per cluster, among the documents in play: d_intra = the mean ``cluster_dist``;
  complexity = d_intra x d_inter;
- quota = softmax(complexity / tau) of the budget (``tasks.select.quotas.allocate``: a
  cluster whose share exceeds its size keeps everything and the rest is shared again; integer
  quotas by largest remainder);
- within a cluster, ``within: hardest`` keeps the farthest from the centroid first (ties by
  (shard, row)); ``within: random`` keeps a seeded uniform sample (draws fixed by seed and
  document id).

It is a corpus rule, not a stage, because the quotas need every cluster's d_intra over the
documents that reach the decision, and a new budget or tau must not re-embed or re-cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.corpus.base import RuleContext, read_keys, split_by_shard
from tasks.select.features import draws
from tasks.select.quotas import BudgetConfig, allocate, coverage, softmax

NAME = "density"
VERSION = 1
RULE = "density.over_quota"
COLUMNS: tuple[str, ...] = ("id", "cluster", "cluster_dist", "cluster_d_inter")


class Config(BudgetConfig):
    RULE_NAME = NAME

    tau: float = Field(0.1, gt=0, description="softmax temperature of the cluster quotas: "
                       "small = the budget goes to the most complex clusters")
    within: Literal["hardest", "random"] = Field(
        "hardest", description="which documents a cluster keeps: the farthest from its "
        "centroid first, or a seeded random sample")
    seed: int = Field(0, description="the draws of within: random")


def cluster_quotas(d_intra: np.ndarray, d_inter: np.ndarray, sizes: np.ndarray, n_keep: int,
                   tau: float) -> tuple[np.ndarray, np.ndarray]:
    """(complexity, integer quota) per cluster: quota proportional to
    softmax(d_intra * d_inter / tau), capped at the cluster's size, summing to ``n_keep``."""
    complexity = np.asarray(d_intra, np.float64) * np.asarray(d_inter, np.float64)
    return complexity, allocate(softmax(complexity, tau), sizes, n_keep)


def pick(cluster: np.ndarray, rank_key: np.ndarray, tiebreak: np.ndarray,
         quota: dict[int, int]) -> np.ndarray:
    """Keep mask: in each cluster, the ``quota[cluster]`` rows with the smallest
    ``rank_key`` (ties by ``tiebreak``)."""
    order = np.lexsort((tiebreak, rank_key, cluster))
    cl = cluster[order]
    starts = np.r_[0, np.flatnonzero(np.diff(cl)) + 1]
    pos = np.arange(len(cl)) - np.repeat(starts, np.diff(np.r_[starts, len(cl)]))
    q = np.array([quota.get(int(c), 0) for c in cl], np.int64)
    keep = np.zeros(len(cluster), bool)
    keep[order[pos < q]] = True
    return keep


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    missing = [c for c in COLUMNS if c not in scored.column_names]
    if missing:
        raise ValueError(f"density: no column {missing} in the scored documents: run the "
                         "clusters stage (tasks.select.cluster_stage:Clusters) before score")
    take = pa.array(rows, pa.int64())
    col = lambda c, typ: pc.cast(scored.column(c).take(take), typ)  # noqa: E731
    ids = scored.column("id").take(take)
    t = pa.table({"shard": pa.array(np.full(len(rows), shard, np.int32)),
                  "row": pa.array(np.asarray(rows, np.int64)),
                  "cluster": col("cluster", pa.int32()),
                  "dist": col("cluster_dist", pa.float64()),
                  "d_inter": col("cluster_d_inter", pa.float64()),
                  "draw": pa.array(draws(ids, cfg.seed, "density") if len(rows)
                                   else np.zeros(0), pa.float64())})
    return t.filter(pc.is_valid(t.column("cluster")))  # not clustered: not ranked


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    t = read_keys(key_files)
    if t is None:
        return {"ranked": 0, "kept": 0, "dropped": {}, "clusters": []}
    cl = t.column("cluster").to_numpy()
    dist = t.column("dist").to_numpy()
    ids, inv, sizes = np.unique(cl, return_inverse=True, return_counts=True)
    d_intra = np.bincount(inv, weights=dist) / sizes
    d_inter = np.zeros(len(ids))
    d_inter[inv] = t.column("d_inter").to_numpy()
    n_keep = cfg.budget(len(t))
    complexity, quota = cluster_quotas(d_intra, d_inter, sizes, n_keep, cfg.tau)
    rank_key = -dist if cfg.within == "hardest" else t.column("draw").to_numpy()
    tiebreak = t.column("shard").to_numpy().astype(np.int64) * (1 << 40) + \
        t.column("row").to_numpy()
    keep = pick(cl, rank_key, tiebreak,
                {int(c): int(q) for c, q in zip(ids, quota, strict=True)})
    counts = split_by_shard(out_dir, t.select(["shard", "row"]).filter(pa.array(~keep)),
                            rule=RULE)
    kept = np.bincount(inv[keep], minlength=len(ids))
    cov = coverage(dict(zip(ids.tolist(), sizes.tolist(), strict=True)),
                   dict(zip(ids.tolist(), kept.tolist(), strict=True)))
    return {"ranked": len(t), "kept": int(keep.sum()), "dropped": counts, **cov,
            "clusters": [{"cluster": int(c), "size": int(s), "d_intra": round(float(a), 6),
                          "d_inter": round(float(b), 6), "complexity": round(float(x), 6),
                          "quota": int(q)}
                         for c, s, a, b, x, q in zip(ids, sizes, d_intra, d_inter, complexity,
                                                     quota, strict=True)]}
