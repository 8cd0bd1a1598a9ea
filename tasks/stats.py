"""Statistics that say whether a difference is real.

- ``paired_bootstrap``: the difference of a ratio metric (sum num / sum den, which covers
  accuracy — num = correct, den = 1 — and bits per byte — num = bits, den = bytes) between two
  models scored on the same items. Items are resampled together for both models (paired: item
  difficulty cancels out) and seeds are resampled within each side.
- ``snr``: "Signal and Noise" (Heineman et al., 2025): signal = spread of the metric across the
  compared models / mean; noise = std of the metric over the last checkpoints and seeds of one
  model / mean; SNR = signal / noise. Low-SNR tasks are noise, not evidence.
- ``verdict``: better / worse / can't tell, from the interval.

Why the interval is not the bare percentile interval of the bootstrap: with few seeds a side
(2-4, what proxy ablations afford) resampling seeds underestimates seed-to-seed variance by a
factor (n - 1) / n and ignores how uncertain that variance is. Two runs of the same recipe then
differ "significantly" far more often than 5 %. So the standard error adds the unbiased
between-seed variance of each side (s^2 / n) to the paired item-bootstrap variance, and the
interval uses Student's t with Welch-Satterthwaite degrees of freedom. With many seeds this is
the bootstrap interval; with one seed a side only item noise is measured (``seeds`` says so).
tests/bench/test_bench_decisions.py measures the calibration (null) and power (planted effect).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
POWER = 0.8
# item-bootstrap replicates are drawn in blocks of at most this many indices: ~8 MB of indices
# and ~32 MB of gathered totals whatever the number of items
BLOCK_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class Comparison:
    metric: str
    a: float
    b: float
    diff: float  # b - a
    ci_low: float
    ci_high: float
    mde: float  # minimum detectable effect at this number of items and seeds
    items: int
    seeds: int
    verdict: str  # "better" | "worse" | "can't tell"  (B relative to A)
    se: float = float("nan")  # standard error of diff: items (bootstrap) + seeds
    df: float = float("nan")  # degrees of freedom of the t interval
    se_items: float = float("nan")  # the item part alone (paired bootstrap)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    d = den.sum()
    return float(num.sum() / d) if d else float("nan")


def _per_seed(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return num.sum(1) / den.sum(1)


def bootstrap_diffs(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray,
                    den_b: np.ndarray, n_boot: int, rng: np.random.Generator,
                    resample_seeds: bool = True) -> np.ndarray:
    """Replicates of B - A: items resampled with replacement, the same items for both sides
    (paired); seeds resampled within each side when ``resample_seeds``."""
    n_items = num_a.shape[1]
    if not resample_seeds:
        # a side's metric is sum over (seeds, items) of num / of den, so per item the totals
        # over seeds are all a resample needs: one gather per block of replicates
        cols = np.stack([num_a.sum(0), den_a.sum(0), num_b.sum(0), den_b.sum(0)])
        out = np.empty(n_boot)
        block = max(1, BLOCK_ELEMENTS // max(n_items, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            for start in range(0, n_boot, block):
                n = min(block, n_boot - start)
                totals = cols[:, rng.integers(0, n_items, (n, n_items))].sum(2)
                out[start:start + n] = totals[2] / totals[3] - totals[0] / totals[1]
        return out
    out = np.empty(n_boot)
    for i in range(n_boot):
        items = rng.integers(0, n_items, n_items)
        sa = rng.integers(0, num_a.shape[0], num_a.shape[0])
        sb = rng.integers(0, num_b.shape[0], num_b.shape[0])
        ra = _ratio(num_a[np.ix_(sa, items)], den_a[np.ix_(sa, items)])
        rb = _ratio(num_b[np.ix_(sb, items)], den_b[np.ix_(sb, items)])
        out[i] = rb - ra
    return out


def t_quantile(q: float, df: float) -> float:
    from scipy.stats import t  # scipy comes with the base stack (great-expectations)

    return float(t.ppf(q, df)) if df < 1e6 else float(np.sqrt(2) * _erfinv(2 * q - 1))


def _erfinv(y: float) -> float:
    from scipy.special import erfinv

    return float(erfinv(y))


def seed_variance(num: np.ndarray, den: np.ndarray) -> tuple[float, int]:
    """(s^2 / n, n - 1): the variance of a side's seed mean from its between-seed spread."""
    n = num.shape[0]
    if n < 2:
        return 0.0, 0
    return float(np.var(_per_seed(num, den), ddof=1) / n), n - 1


def interval(diff: float, var_items: float, df_items: float,
             seed_parts: list[tuple[float, int]], ci: float = 1 - ALPHA
             ) -> tuple[float, float, float, float, float]:
    """(low, high, se, df, mde) of a t interval whose variance is the item part plus each
    side's seed part; df by Welch-Satterthwaite."""
    parts = [(var_items, df_items)] + [p for p in seed_parts if p[1] > 0]
    var = sum(v for v, _ in parts)
    se = math.sqrt(var)
    denom = sum(v * v / d for v, d in parts if d > 0 and v > 0)
    df = var * var / denom if denom > 0 else float(max(df_items, 1))
    df = max(df, 1.0)
    half = t_quantile(1 - (1 - ci) / 2, df) * se
    mde = (t_quantile(1 - ALPHA / 2, df) + t_quantile(POWER, df)) * se
    return diff - half, diff + half, se, df, mde


def paired_bootstrap(
    num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
    higher_is_better: bool, metric: str = "", n_boot: int = 2000, ci: float = 1 - ALPHA,
    seed: int = 0,
) -> Comparison:
    """Arrays are (seeds, items): per seed, the per-item numerator and denominator of the
    metric, items aligned between A and B (same item ids in the same order). A and B may have
    different numbers of seeds; items must match."""
    num_a, den_a, num_b, den_b = (np.atleast_2d(np.asarray(x, dtype=np.float64))
                                  for x in (num_a, den_a, num_b, den_b))
    if num_a.shape[1] != num_b.shape[1]:
        raise ValueError(f"items differ: {num_a.shape[1]} vs {num_b.shape[1]}")
    n_items = num_a.shape[1]
    a, b = _ratio(num_a, den_a), _ratio(num_b, den_b)
    rng = np.random.default_rng(seed)
    seed_parts = [seed_variance(num_a, den_a), seed_variance(num_b, den_b)]
    many_seeds = any(d > 0 for _, d in seed_parts)
    # the item part: seeds held fixed (their spread is the seed part)
    diffs = bootstrap_diffs(num_a, den_a, num_b, den_b, n_boot, rng,
                            resample_seeds=not many_seeds)
    var_items = float(np.nanvar(diffs, ddof=1)) if n_boot > 1 else 0.0
    lo, hi, se, df, mde = interval(b - a, var_items, max(n_items - 1, 1), seed_parts, ci)
    if not many_seeds:  # items only: the bootstrap's own percentile interval
        lo, hi = (float(x) for x in np.nanquantile(diffs, [(1 - ci) / 2, 1 - (1 - ci) / 2]))
    return Comparison(metric, a, b, b - a, lo, hi, mde, n_items,
                      max(num_a.shape[0], num_b.shape[0]),
                      verdict(lo, hi, higher_is_better), se, df, math.sqrt(var_items))


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    if ci_low > 0:
        return "better" if higher_is_better else "worse"
    if ci_high < 0:
        return "worse" if higher_is_better else "better"
    return "can't tell"


def snr(per_model: dict[str, list[float]]) -> dict[str, float]:
    """per_model: model -> the metric at its last checkpoints and/or seeds (each value one
    checkpoint of one seed). signal = (max - min of the models' means) / |mean|; noise = the
    models' mean within-model std / |mean|; snr = signal / noise (NaN where a model has a
    single value: no noise measured)."""
    vals = {k: [x for x in v if not math.isnan(x)] for k, v in per_model.items()}
    vals = {k: v for k, v in vals.items() if v}
    finals = np.array([np.mean(v) for v in vals.values()])
    mean = float(np.mean(finals)) if len(finals) else float("nan")
    if len(finals) < 2 or mean == 0 or math.isnan(mean):
        return {"signal": float("nan"), "noise": float("nan"), "snr": float("nan")}
    signal = float((finals.max() - finals.min()) / abs(mean))
    stds = [np.std(v, ddof=1) for v in vals.values() if len(v) > 1]
    noise = float(np.mean(stds) / abs(mean)) if stds else float("nan")
    return {"signal": signal, "noise": noise,
            "snr": signal / noise if noise and not math.isnan(noise) else float("nan")}


def aggregate(comparisons: list[tuple[np.ndarray, ...]], higher_is_better: bool,
              metric: str = "aggregate", n_boot: int = 2000, ci: float = 1 - ALPHA,
              seed: int = 0, scale: float = 1.0) -> Comparison:
    """The mean over tasks of a metric (each task weighted equally, times ``scale``, e.g.
    1 / (1 - 1/4) for centred accuracy), compared like one metric: per task (num_a, den_a,
    num_b, den_b) arrays of shape (seeds, items); seeds must be the same models across tasks.
    Items are resampled within each task; the seed part uses the per-seed task means."""
    rng = np.random.default_rng(seed)
    arrs = [tuple(np.atleast_2d(np.asarray(x, dtype=np.float64)) for x in c)
            for c in comparisons]
    a = scale * float(np.mean([_ratio(c[0], c[1]) for c in arrs]))
    b = scale * float(np.mean([_ratio(c[2], c[3]) for c in arrs]))
    diffs = scale * np.mean([bootstrap_diffs(*c, n_boot, rng, resample_seeds=False)
                             for c in arrs], axis=0)
    var_items = float(np.var(diffs, ddof=1))
    seed_parts = []
    for side in (0, 2):
        per_seed = scale * np.mean([_per_seed(c[side], c[side + 1]) for c in arrs], axis=0)
        n = len(per_seed)
        seed_parts.append((float(np.var(per_seed, ddof=1) / n), n - 1) if n > 1 else (0.0, 0))
    n_items = sum(c[0].shape[1] for c in arrs)
    lo, hi, se, df, mde = interval(b - a, var_items, max(n_items - 1, 1), seed_parts, ci)
    return Comparison(metric, a, b, b - a, lo, hi, mde, n_items,
                      max(arrs[0][0].shape[0], arrs[0][2].shape[0]),
                      verdict(lo, hi, higher_is_better), se, df, math.sqrt(var_items))
