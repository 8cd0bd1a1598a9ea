"""Per-cluster quotas of a kept budget: proportional to weights, capped at each cluster's size.

Shared by density-based pruning (weights = softmax(complexity / tau)) and cluster-balanced
sampling (equal weights): the budget both configs declare (``BudgetConfig``), the quotas and
the stats both report (cluster coverage before and after)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from tasks.corpus.base import CorpusRuleConfig


class BudgetConfig(CorpusRuleConfig):
    """A kept budget (``percent`` or ``k``) over a population (``when``)."""

    RULE_NAME: ClassVar[str]  # names the rule in the one-budget error

    percent: float | None = Field(None, gt=0, le=100, description="keep this % of the "
                                  "documents in play")
    k: int | None = Field(None, gt=0, description="or: keep this many documents")
    when: Literal["before", "after"] = Field(
        "after", description="the population: documents that passed the document rules "
        "(after) or every document (before)")

    @model_validator(mode="after")
    def _one_budget(self) -> BudgetConfig:
        if (self.percent is None) == (self.k is None):
            raise ValueError(f"{self.RULE_NAME} needs exactly one of percent or k")
        return self

    def budget(self, n: int) -> int:
        """How many of ``n`` documents in play are kept."""
        return min(n, self.k) if self.k is not None else math.ceil(n * (self.percent or 0) / 100)


def softmax(values: np.ndarray, tau: float) -> np.ndarray:
    """softmax(values / tau), computed stably (the largest value is subtracted first)."""
    z = np.asarray(values, np.float64) / tau
    e = np.exp(z - z.max()) if len(z) else z
    return e / e.sum() if len(z) else e


def allocate(weights: np.ndarray, sizes: np.ndarray, budget: int) -> np.ndarray:
    """Integer quotas summing to ``min(budget, sizes.sum())``, each at most its cluster's size,
    proportional to ``weights`` among the clusters not already full: a cluster whose share
    exceeds its size keeps all of it and the rest is shared again among the others (water
    filling). Fractions are rounded by largest remainder, ties to the lower cluster index."""
    w = np.asarray(weights, np.float64)
    sizes = np.asarray(sizes, np.int64)
    budget = int(min(max(budget, 0), int(sizes.sum())))
    quota = np.zeros(len(sizes), np.float64)
    active = (sizes > 0) & (w > 0)
    if not active.any() and budget:  # every weight zero: share equally
        w, active = np.ones(len(sizes)), sizes > 0
    remaining = float(budget)
    while active.any():
        share = np.zeros(len(sizes))
        share[active] = remaining * w[active] / w[active].sum()
        full = active & (share >= sizes)
        if not full.any():
            quota[active] = share[active]
            break
        quota[full] = sizes[full]
        remaining -= float(sizes[full].sum())
        active &= ~full
    out = np.minimum(np.floor(quota + 1e-9).astype(np.int64), sizes)
    left = budget - int(out.sum())
    if left > 0:
        frac = quota - out
        frac[out >= sizes] = -1.0  # a full cluster cannot take more
        order = np.lexsort((np.arange(len(sizes)), -frac))
        out[order[:left]] += 1
    return out


def coverage(before: dict[int, int], after: dict[int, int]) -> dict[str, Any]:
    """How many clusters a selection still covers, and the clusters it thinned most (share of
    the cluster's documents kept, lowest first)."""
    had = {c: n for c, n in before.items() if n > 0}
    kept = {c: after.get(c, 0) for c in had}
    thinned = sorted(((c, n, kept[c]) for c, n in had.items() if kept[c] < n),
                     key=lambda t: (t[2] / t[1], -t[1], t[0]))
    return {"clusters_before": len(had),
            "clusters_after": sum(1 for v in kept.values() if v > 0),
            "clusters_emptied": sorted(c for c, v in kept.items() if v == 0),
            "thinned": [{"cluster": c, "before": n, "kept": k} for c, n, k in thinned]}
