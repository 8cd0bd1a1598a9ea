"""Diversity in embedding space: k-center greedy and cluster-balanced sampling.

- ``k_center_greedy(x, k)``: the classic 2-approximation of the k-center problem (Gonzalez
  1985; Sener & Savarese 2018 use it as "core-set" selection): start from one point, then
  repeatedly pick the point farthest (cosine distance) from everything picked so far. It costs
  O(n k dim) and holds n distances, so datamill runs it **per cluster**: the ``clusters``
  stage orders every cluster's documents by it, starting from the one nearest the centroid,
  and stores the position as ``kcenter_rank`` (0, 1, 2, ...).
- The corpus rule here (recipe: ``stages.filter.corpus`` key ``tasks.select.diversity``) is
  cluster-balanced sampling over a kept budget: every cluster gets an equal share
  (``tasks.select.quotas.allocate`` with equal weights: a small cluster keeps everything and
  the rest is shared among the others); within a cluster ``order: kcenter`` keeps the lowest
  ``kcenter_rank`` (the most spread-out documents), ``order: random`` a seeded sample. Its
  statistics report cluster coverage before and after. The ranks were computed over the whole
  cluster, so keeping the lowest ranks among the documents still in play approximates, not
  equals, k-center greedy run on those documents alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.corpus.base import RuleContext, read_keys, split_by_shard
from tasks.select.density import pick
from tasks.select.features import draws
from tasks.select.quotas import BudgetConfig, allocate, coverage

NAME = "diversity"
VERSION = 1
RULE = "diversity.over_quota"
COLUMNS: tuple[str, ...] = ("id", "cluster", "kcenter_rank")


def k_center_greedy(x: np.ndarray, k: int | None = None, first: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``k`` (default: all) rows of unit vectors in k-center-greedy order from
    ``first``, and each pick's distance to the nearest earlier pick when it was picked (the
    covering radius so far; +inf for the first). Ties: the lower index."""
    x = np.asarray(x, np.float32)
    n = len(x)
    k = n if k is None else min(k, n)
    order = np.empty(k, np.int64)
    radius = np.empty(k, np.float64)
    if k == 0:
        return order, radius
    nearest = np.full(n, np.inf)
    cur = first
    for i in range(k):
        order[i] = cur
        radius[i] = nearest[cur]
        nearest = np.minimum(nearest, 1.0 - (x @ x[cur]).astype(np.float64))
        nearest[cur] = -np.inf  # never picked twice
        cur = int(np.argmax(nearest))
    return order, radius


def kcenter_ranks(x: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """One cluster: each document's position in the k-center-greedy order that starts from
    the document nearest the centroid."""
    order, _ = k_center_greedy(x, first=int(np.argmin(dist)))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank


class Config(BudgetConfig):
    RULE_NAME = NAME

    order: Literal["kcenter", "random"] = Field(
        "kcenter", description="which documents a cluster keeps: the lowest kcenter_rank "
        "(k-center greedy) or a seeded random sample")
    seed: int = Field(0, description="the draws of order: random")


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    missing = [c for c in COLUMNS if c not in scored.column_names]
    if missing:
        raise ValueError(f"diversity: no column {missing} in the scored documents: run the "
                         "clusters stage (tasks.select.cluster_stage:Clusters) before score")
    take = pa.array(rows, pa.int64())
    t = pa.table({"shard": pa.array(np.full(len(rows), shard, np.int32)),
                  "row": pa.array(np.asarray(rows, np.int64)),
                  "cluster": pc.cast(scored.column("cluster").take(take), pa.int32()),
                  "rank": pc.cast(scored.column("kcenter_rank").take(take), pa.float64()),
                  "draw": pa.array(draws(scored.column("id").take(take), cfg.seed,
                                         "diversity") if len(rows) else np.zeros(0),
                                   pa.float64())})
    return t.filter(pc.is_valid(t.column("cluster")))


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    key_col = "rank" if cfg.order == "kcenter" else "draw"
    t = read_keys(key_files, ["shard", "row", "cluster", key_col])
    if t is None:
        return {"ranked": 0, "kept": 0, "dropped": {}}
    cl = t.column("cluster").to_numpy()
    ids, inv, sizes = np.unique(cl, return_inverse=True, return_counts=True)
    quota = allocate(np.ones(len(ids)), sizes, cfg.budget(len(t)))
    key = t.column(key_col).to_numpy()
    tiebreak = t.column("shard").to_numpy().astype(np.int64) * (1 << 40) + \
        t.column("row").to_numpy()
    keep = pick(cl, key, tiebreak, {int(c): int(q) for c, q in zip(ids, quota, strict=True)})
    counts = split_by_shard(out_dir, t.select(["shard", "row"]).filter(pa.array(~keep)),
                            rule=RULE)
    kept = np.bincount(inv[keep], minlength=len(ids))
    cov = coverage(dict(zip(ids.tolist(), sizes.tolist(), strict=True)),
                   dict(zip(ids.tolist(), kept.tolist(), strict=True)))
    return {"ranked": len(t), "kept": int(keep.sum()), "dropped": counts, **cov,
            "quota": {int(c): int(q) for c, q in zip(ids, quota, strict=True)}}
