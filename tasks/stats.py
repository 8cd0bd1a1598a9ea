"""Statistics that say whether a difference is real.

- ``paired_bootstrap``: the difference of a ratio metric (sum num / sum den, which covers
  accuracy — num = correct, den = 1 — and bits per byte — num = bits, den = bytes) between two
  models scored on the same items, with a percentile interval from resampling items and seeds
  together (paired: the same resampled items for both models).
- ``snr``: "Signal and Noise" (Heineman et al., 2025): signal = spread of the metric across the
  compared models / mean; noise = std of the metric over the last checkpoints or seeds of one
  model / mean; SNR = signal / noise. Low-SNR tasks are noise, not evidence.
- ``verdict``: better / worse / can't tell, from the interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z_POWER = 1.96 + 0.84  # two-sided alpha 0.05, power 0.8


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    d = den.sum()
    return float(num.sum() / d) if d else float("nan")


def paired_bootstrap(
    num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
    higher_is_better: bool, metric: str = "", n_boot: int = 2000, ci: float = 0.95,
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
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        items = rng.integers(0, n_items, n_items)  # the same items for both: paired
        sa = rng.integers(0, num_a.shape[0], num_a.shape[0])
        sb = rng.integers(0, num_b.shape[0], num_b.shape[0])
        ra = _ratio(num_a[np.ix_(sa, items)], den_a[np.ix_(sa, items)])
        rb = _ratio(num_b[np.ix_(sb, items)], den_b[np.ix_(sb, items)])
        diffs[i] = rb - ra
    lo, hi = np.nanquantile(diffs, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    mde = Z_POWER * float(np.nanstd(diffs))
    return Comparison(metric, a, b, b - a, float(lo), float(hi), mde, n_items,
                      max(num_a.shape[0], num_b.shape[0]),
                      verdict(float(lo), float(hi), higher_is_better))


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    if ci_low > 0:
        return "better" if higher_is_better else "worse"
    if ci_high < 0:
        return "worse" if higher_is_better else "better"
    return "can't tell"


def snr(per_model: dict[str, list[float]]) -> dict[str, float]:
    """per_model: model -> the metric at its last checkpoints (or seeds). Returns signal,
    noise and snr; noise pools the relative std within each model."""
    finals = np.array([np.mean(v) for v in per_model.values()])
    mean = float(np.mean(finals))
    if mean == 0 or len(finals) < 2:
        return {"signal": float("nan"), "noise": float("nan"), "snr": float("nan")}
    signal = float((finals.max() - finals.min()) / abs(mean))
    stds = [np.std(v, ddof=1) for v in per_model.values() if len(v) > 1]
    noise = float(np.mean(stds) / abs(mean)) if stds else float("nan")
    return {"signal": signal, "noise": noise,
            "snr": signal / noise if noise and not np.isnan(noise) else float("nan")}
