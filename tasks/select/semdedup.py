"""SemDeDup (Abbas et al. 2023): semantic near-duplicates within k-means clusters.

Computed once, in the ``clusters`` stage (``tasks/select/cluster_stage.py``): within each
cluster the documents are put in a fixed order and each one stores ``semdedup_sim``, its
largest cosine similarity to any document ordered before it in its cluster (null for the
first), and ``semdedup_nearest``, that document's id. The order: farthest from the centroid
first (``keep: far``, the paper's "keep the example with the lowest cosine similarity to the
cluster centroid"), or nearest first (``keep: near``); ties (to 5 decimals) by input order.
As in the paper's code, the maximum runs over every earlier document, not only the kept ones,
so the decision for any ε is a threshold on the stored column.

Decided later, by this corpus rule (recipe: ``stages.filter.corpus`` key
``tasks.select.semdedup``): a document is dropped as ``semdedup.near_duplicate`` when
``semdedup_sim > 1 - epsilon``. Changing ``epsilon`` re-runs only the filter stage.
Population: every document the stage clustered (``when: before``), as the paper deduplicates
the raw pool; so the earlier twin that makes a document a duplicate may itself be dropped by a
document rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.corpus.base import CorpusRuleConfig, RuleContext, read_keys, split_by_shard
from tasks.select.quotas import coverage

NAME = "semdedup"
VERSION = 1
RULE = "semdedup.near_duplicate"
WHEN = "before"
COLUMNS: tuple[str, ...] = ("cluster", "semdedup_sim")
BLOCK_FLOATS = 1 << 24  # bounds one block of the similarity matrix (64 MiB of float32)
Keep = Literal["far", "near"]


class Config(CorpusRuleConfig):
    epsilon: float = Field(0.05, gt=0, lt=1, description="drop a document whose cosine "
                           "similarity to an earlier one in its cluster exceeds 1 - epsilon")
    when: Literal["before", "after"] = Field(
        "before", description="the population: every clustered document (before, the "
        "paper's) or those that passed the document rules (after)")


DIST_DECIMALS = 5  # distances equal to this many decimals tie


def cluster_order(dist: np.ndarray, position: np.ndarray, keep: Keep = "far") -> np.ndarray:
    """The order in which a cluster's documents are compared: the one that survives a group
    of near-duplicates comes first. ``far``: largest distance to the centroid first; ``near``:
    smallest first; ties by ``position`` (the input order, which exact dedup keeps the first
    of). Distances are compared to ``DIST_DECIMALS``: one text embedded in two batches differs
    by ~1e-7 (padding, the CPU's kernels), and ordering on that noise let the machine decide
    which copy of an exact duplicate survives, possibly not the one exact dedup keeps."""
    d = np.round(np.asarray(dist, np.float64), DIST_DECIMALS)
    return np.lexsort((np.asarray(position), -d if keep == "far" else d))


def earlier_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows of unit vectors in order, each row's largest cosine similarity to any earlier
    row and that row's index (NaN and -1 for row 0). Blocks of rows bound the memory: the
    whole pairwise matrix is never held."""
    n = len(x)
    best = np.full(n, np.nan, np.float32)
    arg = np.full(n, -1, np.int64)
    block = max(1, BLOCK_FLOATS // max(n, 1))
    for s in range(1, n, block):
        e = min(n, s + block)
        sims = x[s:e] @ x[:e].T  # (rows s..e) x (rows 0..e)
        # only earlier rows count: column j < row i
        sims[np.arange(e - s)[:, None] + s <= np.arange(e)[None, :]] = -np.inf
        arg[s:e] = sims.argmax(axis=1)
        best[s:e] = sims[np.arange(e - s), arg[s:e]]
    return best, arg


def semdedup_columns(x: np.ndarray, dist: np.ndarray, position: np.ndarray,
                     keep: Keep = "far") -> tuple[np.ndarray, np.ndarray]:
    """One cluster: ``semdedup_sim`` (clipped to [0, 1]; NaN for the first document) and the
    index of the nearest earlier document (-1 for the first), in the input's row order."""
    order = cluster_order(dist, position, keep)
    best, arg = earlier_max(np.asarray(x, np.float32)[order])
    sim = np.full(len(order), np.nan, np.float32)
    nearest = np.full(len(order), -1, np.int64)
    # cosine below 0 or above 1 (rounding) decides nothing at any epsilon in (0, 1)
    sim[order] = np.clip(best, 0.0, 1.0)
    nearest[order] = np.where(arg >= 0, order[np.maximum(arg, 0)], -1)
    return sim, nearest


def duplicates(sim: np.ndarray, epsilon: float) -> np.ndarray:
    """Which documents SemDeDup drops at ``epsilon`` (NaN, the first of a cluster: never)."""
    s = np.nan_to_num(np.asarray(sim, np.float64), nan=-1.0)
    return s > 1.0 - epsilon


# --- the corpus rule -----------------------------------------------------------------------


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    missing = [c for c in COLUMNS if c not in scored.column_names]
    if missing:
        raise ValueError(f"semdedup: no column {missing} in the scored documents: run the "
                         "clusters stage (tasks.select.cluster_stage:Clusters) before score")
    take = pa.array(rows, pa.int64())
    t = pa.table({"shard": pa.array(np.full(len(rows), shard, np.int32)),
                  "row": pa.array(np.asarray(rows, np.int64)),
                  "cluster": pc.cast(scored.column("cluster").take(take), pa.int32()),
                  "sim": pc.cast(scored.column("semdedup_sim").take(take), pa.float32())})
    return t.filter(pc.is_valid(t.column("cluster")))  # not clustered: not ranked


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    t = read_keys(key_files)
    if t is None:
        return {"ranked": 0, "dropped": {}, "threshold": 1 - cfg.epsilon}
    drop = duplicates(t.column("sim").to_numpy(zero_copy_only=False), cfg.epsilon)
    cl = t.column("cluster").to_numpy()
    before = dict(zip(*np.unique(cl, return_counts=True), strict=True))
    after = dict(zip(*np.unique(cl[~drop], return_counts=True), strict=True))
    counts = split_by_shard(out_dir, t.select(["shard", "row"]).filter(pa.array(drop)),
                            rule=RULE)
    cov = coverage({int(k): int(v) for k, v in before.items()},
                   {int(k): int(v) for k, v in after.items()})
    return {"ranked": len(t), "kept": int((~drop).sum()), "threshold": 1 - cfg.epsilon,
            "dropped": counts, **cov}
