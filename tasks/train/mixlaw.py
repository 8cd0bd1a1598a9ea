"""The static data mixing law of Ye et al. ("Data Mixing Laws", 2024), the law Aioli's paper
analyses as its static special case: fitted on the per-source held-out losses of runs that
differ only in their mixture, it predicts the mixture that minimises a weighted mean loss.

Per source i, with proportions p over the m mixed sources (summing to 1):

    L_i(p) = c_i + k_i * exp(sum_j t_ij p_j)

Because the proportions sum to 1, adding a constant to every t_ij only rescales k_i, so the t's
are fitted in the canonical form sum_j t_ij = 0 and each source has m + 1 free parameters. A fit
asks for m + 2 distinct mixtures: one more than the parameters, so the fit is not exact by
construction and its leave-one-out error means something. The exponent is fitted by scipy's
least squares; for a given exponent the best c_i and k_i are a linear least-squares solve
(variable projection), so the non-linear search runs over m - 1 numbers per source only.

Also here: the simplex points a search trains (a lattice or a seeded Dirichlet sample), and
the source weights (`train.source_weights`) that give a run exactly chosen proportions.
Pure numpy/scipy: no prefect, no torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np

# the loss surface over the exponent can have local minima: the residuals are tried at seeded
# candidate exponents (cheap: one linear solve each), and least squares starts from the best few
CANDIDATES = 64
STARTS = 3


class NotEnoughPoints(ValueError):
    """Fewer distinct mixtures than the law needs."""


def points_needed(m: int) -> int:
    """Distinct mixtures a fit of m sources needs: m + 1 parameters per source, plus one."""
    return m + 2


# --- the points a search trains ------------------------------------------------------------

def lattice_size(m: int, r: int) -> int:
    """Points of the simplex lattice {k / r} in m dimensions."""
    return comb(r + m - 1, m - 1)


def simplex_grid(m: int, at_least: int) -> np.ndarray:
    """The coarsest simplex lattice {(k_1/r, ..., k_m/r): sum k = r} with at least `at_least`
    points (with m = 2 exactly that many), sorted; shape (n, m)."""
    if m < 2:
        raise ValueError("a mixture search needs at least two sources")
    r = 1
    while lattice_size(m, r) < at_least:
        r += 1
    # stars and bars: m - 1 bar positions among r + m - 1 slots give one composition of r
    bars = np.array(list(itertools.combinations(range(r + m - 1), m - 1)), dtype=np.int64)
    edges = np.column_stack([np.full(len(bars), -1), bars, np.full(len(bars), r + m - 1)])
    counts = np.diff(edges, axis=1) - 1
    return counts[np.lexsort(counts.T[::-1])[::-1]].astype(np.float64) / r


def dirichlet_points(m: int, n: int, seed: int, alpha: float = 1.0) -> np.ndarray:
    """n mixtures drawn from a symmetric Dirichlet(alpha) (alpha 1: uniform on the simplex),
    seeded; shape (n, m)."""
    if m < 2:
        raise ValueError("a mixture search needs at least two sources")
    return np.random.default_rng([seed, 0xD1C]).dirichlet(np.full(m, alpha), size=n)


def weights_for(p: Sequence[float], rows: Sequence[int]) -> list[float]:
    """source_weights that make a run draw proportions p: a weight multiplies its source's
    natural share (rows), so w_s ~ p_s / rows_s; scaled so the largest is 1."""
    p, n = np.asarray(p, dtype=np.float64), np.asarray(rows, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError(f"every mixed source needs training rows, got {list(rows)}")
    w = p / n
    return (w / w.max()).tolist()


def source_rows(meta: Mapping[str, Any]) -> dict[str, int]:
    """Training rows per source of a tokenized data dir's meta.json."""
    out: dict[str, int] = {}
    for shard in meta["train_shards"]:
        for src, (lo, hi) in shard.get("sources", {}).items():
            out[src] = out.get(src, 0) + int(hi) - int(lo)
    return dict(sorted(out.items()))


# --- the law --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceFit:
    c: float
    k: float
    t: np.ndarray  # (m,), sum 0

    def predict(self, p: np.ndarray) -> np.ndarray:
        return self.c + self.k * np.exp(np.atleast_2d(p) @ self.t)


@dataclass(frozen=True)
class MixingLaw:
    sources: list[str]  # the mixed sources (columns of p)
    targets: list[str]  # the sources whose losses were fitted (rows)
    fits: list[SourceFit]

    def predict(self, p: np.ndarray) -> np.ndarray:
        """Loss of every target at mixtures p: shape (n, len(targets))."""
        p = np.atleast_2d(np.asarray(p, dtype=np.float64))
        return np.column_stack([f.predict(p) for f in self.fits])

    def params(self) -> dict[str, dict[str, Any]]:
        return {s: {"c": f.c, "k": f.k, "t": dict(zip(self.sources, f.t.tolist(), strict=True))}
                for s, f in zip(self.targets, self.fits, strict=True)}


def _zero_sum(u: np.ndarray) -> np.ndarray:
    return np.append(u, -u.sum())


def _linear(p: np.ndarray, y: np.ndarray, t: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Best c, k for exponent t, and the residuals."""
    x = np.column_stack([np.ones(len(p)), np.exp(p @ t)])
    (c, k), *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(c), float(k), x @ np.array([c, k]) - y


def fit_source(p: np.ndarray, y: np.ndarray, seed: int = 0) -> SourceFit:
    """One source's law from mixtures p (n, m) and its losses y (n,)."""
    from scipy.optimize import least_squares

    m = p.shape[1]
    rng = np.random.default_rng([seed, 0x1A4])
    cands = np.vstack([np.zeros(m - 1), rng.normal(0, 3.0, (CANDIDATES - 1, m - 1))])
    costs = [float(np.sum(_linear(p, y, _zero_sum(u))[2] ** 2)) for u in cands]
    best: tuple[float, np.ndarray] | None = None
    for u0 in cands[np.argsort(costs)[:STARTS]]:
        res = least_squares(lambda u: _linear(p, y, _zero_sum(u))[2], u0, method="lm",
                            xtol=1e-12, ftol=1e-12)
        cost = float(np.sum(res.fun ** 2))
        if best is None or cost < best[0] - 1e-15:
            best = (cost, res.x)
    assert best is not None
    t = _zero_sum(best[1])
    c, k, _ = _linear(p, y, t)
    return SourceFit(c, k, t)


def _check(p: np.ndarray, y: np.ndarray) -> None:
    if p.ndim != 2 or y.ndim != 2 or len(p) != len(y):
        raise ValueError(f"mixtures {p.shape} and losses {y.shape} do not match")
    m = p.shape[1]
    if m < 2:
        raise ValueError("a mixing law needs at least two mixed sources")
    distinct = len(np.unique(np.round(p, 9), axis=0))
    if distinct < points_needed(m):
        raise NotEnoughPoints(
            f"the mixing law of {m} sources has {m + 1} parameters per source and needs at "
            f"least {points_needed(m)} distinct mixtures; got {distinct}")
    if not np.isfinite(y).all():
        raise ValueError("losses must be finite")


def fit_law(p: np.ndarray, losses: np.ndarray, sources: Sequence[str],
            targets: Sequence[str], seed: int = 0) -> MixingLaw:
    """The law of every target source: p (n, m) mixtures over `sources`, losses (n, len(targets)).
    NotEnoughPoints when there are fewer than m + 2 distinct mixtures."""
    p, losses = np.asarray(p, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    _check(p, losses)
    return MixingLaw(list(sources), list(targets),
                     [fit_source(p, losses[:, i], seed) for i in range(losses.shape[1])])


def quality(p: np.ndarray, losses: np.ndarray, law: MixingLaw, seed: int = 0
            ) -> dict[str, Any]:
    """The fit's R^2 per target (on the points it was fitted to), and the leave-one-out error:
    each point predicted by the law fitted without it (mean absolute error per target and
    overall); LOO is None when leaving a point out leaves too few."""
    p, losses = np.asarray(p, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    pred = law.predict(p)
    ss_res = ((losses - pred) ** 2).sum(axis=0)
    ss_tot = ((losses - losses.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan)
    out: dict[str, Any] = {
        "r2": dict(zip(law.targets, r2.tolist(), strict=True)),
        "rmse": dict(zip(law.targets, np.sqrt(ss_res / len(p)).tolist(), strict=True)),
        "loo_mae": None, "loo_mae_mean": None}
    if len(np.unique(np.round(p, 9), axis=0)) - 1 < points_needed(p.shape[1]):
        return out
    errs = np.empty_like(losses)
    for i in range(len(p)):
        keep = np.arange(len(p)) != i
        sub = fit_law(p[keep], losses[keep], law.sources, law.targets, seed)
        errs[i] = np.abs(sub.predict(p[i])[0] - losses[i])
    out["loo_mae"] = dict(zip(law.targets, errs.mean(axis=0).tolist(), strict=True))
    out["loo_mae_mean"] = float(errs.mean())
    return out


def objective_weights(targets: Sequence[str], given: Mapping[str, float] | None) -> np.ndarray:
    """Weights of the targets' losses in the objective: equal (the mean) unless given; unlisted
    targets get 0 when some are given. Normalised to sum 1."""
    if not given:
        return np.full(len(targets), 1.0 / len(targets))
    unknown = set(given) - set(targets)
    if unknown:
        raise ValueError(f"objective weights for {sorted(unknown)}, but the fitted sources are "
                         f"{list(targets)}")
    w = np.array([float(given.get(t, 0.0)) for t in targets])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"objective weights must be >= 0 and not all 0, got {dict(given)}")
    return w / w.sum()


def predict_best(law: MixingLaw, weights: np.ndarray | None = None,
                 resolution: int = 40) -> tuple[np.ndarray, float]:
    """The mixture minimising sum_i weights_i L_i(p) over the simplex, and that value: the best
    point of a lattice of `resolution`, refined by SLSQP (bounds 0..1, sum 1) from it."""
    from scipy.optimize import minimize

    m = len(law.sources)
    w = np.full(len(law.targets), 1 / len(law.targets)) if weights is None else weights

    def f(p: np.ndarray) -> float:
        return float((law.predict(p) @ w)[0])

    grid = simplex_grid(m, lattice_size(m, resolution))
    vals = law.predict(grid) @ w
    start = grid[int(np.argmin(vals))]
    res = minimize(f, start, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
                   options={"ftol": 1e-12, "maxiter": 500})
    best = start
    if res.success and f(np.clip(res.x, 0, None) / np.clip(res.x, 0, None).sum()) <= f(start):
        best = np.clip(res.x, 0, None)
        best = best / best.sum()
    return best, f(best)
