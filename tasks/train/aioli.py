"""Aioli ("Aioli: A Unified Optimization Framework for Language Model Data Mixing", Chen et
al. 2024; code: HazyResearch/aioli): online mixing proportions from the linear dynamic mixing
law.

The law says one step on proportions p lowers source i's loss by (A p)_i. The run is split
into `rounds`; each round starts with an estimation phase (`estimation_fraction` of its steps):
`sweeps` passes over the sources in a seeded order, each training a few steps on proportions
perturbed towards one source (`one_hot_factor` on it, the rest spread evenly) and measuring
every source's loss on fixed probe rows before and after. A is fitted to those loss drops by
least squares, normalised as the paper's code does (shifted to be non-negative, divided by its
sum), and the proportions take one exponentiated-gradient step, p <- p * exp(eta A^T 1) / Z;
the rest of the round trains on them. With `ema`, A is averaged over rounds and the step is
taken from the starting proportions, as in the paper's code. Proportions are kept under the
sources' max_epochs caps like fixed ones (mixing.cap_probs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .mixing import cap_probs
from .options import MixingConfig


def perturbed(k: int, j: int, factor: float) -> np.ndarray:
    """Proportions with `factor` on source j and the rest spread evenly (factor 1: one-hot)."""
    p = np.full(k, (1.0 - factor) / (k - 1))
    p[j] = factor
    return p


def fit_mixing_law(props: np.ndarray, drops: np.ndarray) -> np.ndarray:
    """A (k x k) of the linear dynamic mixing law, drops[o] = A @ props[o], fitted by least
    squares over the observations o (props: n x k proportions trained on; drops: n x k loss
    decreases they caused)."""
    a_t, *_ = np.linalg.lstsq(np.asarray(props, float), np.asarray(drops, float), rcond=None)
    return a_t.T


def normalise(a: np.ndarray) -> np.ndarray:
    """The paper's code: shift so the smallest entry is 0 (when negative), divide by the sum."""
    a = a - min(0.0, float(a.min()))
    total = a.sum()
    return a / total if total > 0 else np.full_like(a, 1.0 / a.size)


def eg_step(p: np.ndarray, a: np.ndarray, eta: float) -> np.ndarray:
    """One exponentiated-gradient step: p * exp(eta * A^T 1), renormalised."""
    g = eta * a.sum(axis=0)
    w = p * np.exp(g - g.max())  # shifted for overflow; the shift cancels in the normalisation
    return w / w.sum()


@dataclass(frozen=True)
class Segment:
    start: int  # first step trained on the perturbed proportions
    stop: int  # the step after its last: the loss is measured here
    source: int  # the group the proportions lean towards
    round: int
    last: bool  # the round's last estimation segment: A is fitted at `stop`


class AioliMix:
    """Proportions over this run's pools per step: perturbed during estimation, p otherwise.

    groups: the pool indices Aioli mixes (this run's sources with a non-zero source weight);
    init: their starting proportions; limit: rows each pool may give; the replay pool, when
    there is one, is last and keeps its share."""

    def __init__(self, cfg: MixingConfig, names: list[str], groups: list[int],
                 init: np.ndarray, limit: np.ndarray, replay_share: float,
                 slots_per_step: int, total_steps: int, seed: int):
        k = len(groups)
        if k < 2:
            raise ValueError(f"mixing: aioli needs at least 2 sources to mix, the data has {k}")
        if cfg.one_hot_factor <= 1.0 / k:
            raise ValueError(f"mixing.one_hot_factor {cfg.one_hot_factor} must exceed 1/{k} "
                             "(else the perturbed proportions cannot tell the sources apart)")
        self.cfg, self.names, self.groups, self.k = cfg, names, groups, k
        self.init = np.asarray(init, float) / np.sum(init)
        self.p = self.init.copy()
        self.limit, self.replay_share, self.slots = limit, replay_share, slots_per_step
        self.total_steps, self.seed = total_steps, seed
        self.segments = self._schedule()
        self.ending = {s.stop: s for s in self.segments}
        self.probes = {s.stop for s in self.segments} | {s.start for s in self.segments
                                                         if s.start == self._round_start(s)}
        self.prev: np.ndarray | None = None
        self.obs_p: list[list[float]] = []
        self.obs_d: list[list[float]] = []
        self.a_avg: np.ndarray | None = None
        self.rounds: list[dict[str, Any]] = []

    def _round_start(self, seg: Segment) -> int:
        return round(seg.round * self.total_steps / self.cfg.rounds)

    def _schedule(self) -> list[Segment]:
        """Each round's estimation segments: sweeps x k of equal length, as close to
        estimation_fraction of the round as whole steps allow (at least one step each)."""
        cfg, k, out = self.cfg, self.k, []
        for r in range(cfg.rounds):
            lo = round(r * self.total_steps / cfg.rounds)
            hi = round((r + 1) * self.total_steps / cfg.rounds)
            budget = round(cfg.estimation_fraction * (hi - lo))
            sweeps = max(1, min(cfg.sweeps, budget // k))
            each = max(1, budget // (sweeps * k))
            if lo + sweeps * k * each >= hi:
                raise ValueError(
                    f"mixing: round {r} has {hi - lo} steps, too few for {k} sources to be "
                    f"estimated and trained on; use fewer rounds (now {cfg.rounds}) or more "
                    "steps")
            step = lo
            rng = np.random.default_rng([self.seed, 0xA101, r])
            for sweep in range(sweeps):
                order = rng.permutation(k)
                for i, j in enumerate(order):
                    last = sweep == sweeps - 1 and i == k - 1
                    out.append(Segment(step, step + each, int(j), r, last))
                    step += each
        return out

    def estimation_steps(self) -> int:
        return sum(s.stop - s.start for s in self.segments)

    def probe_due(self, step: int) -> bool:
        """Whether the probe losses are measured before training step `step`."""
        return step in self.probes

    def observe(self, step: int, losses: np.ndarray) -> None:
        """The probe losses (one per group) measured before training step `step`."""
        losses = np.asarray(losses, float)
        seg = self.ending.get(step)
        if seg is not None and self.prev is not None:
            self.obs_p.append(perturbed(self.k, seg.source, self.cfg.one_hot_factor).tolist())
            self.obs_d.append((self.prev - losses).tolist())
            if seg.last:
                self._update(step, seg.round)
        self.prev = losses

    def _update(self, step: int, rnd: int) -> None:
        a = normalise(fit_mixing_law(np.array(self.obs_p), np.array(self.obs_d)))
        ema = self.cfg.ema
        if ema is not None:
            self.a_avg = a if self.a_avg is None else (1 - ema) * a + ema * self.a_avg
            self.p = eg_step(self.init, self.a_avg, self.cfg.step_size)
        else:
            self.p = eg_step(self.p, a, self.cfg.step_size)
        self.obs_p, self.obs_d = [], []
        self.rounds.append({"round": rnd, "step": step, "A": a.tolist(),
                            "proportions": {self.names[g]: float(v)
                                            for g, v in zip(self.groups, self.p, strict=True)}})

    def base(self, step: int) -> np.ndarray:
        """Proportions per pool before the caps."""
        seg = next((s for s in self.segments if s.start <= step < s.stop), None)
        q = perturbed(self.k, seg.source, self.cfg.one_hot_factor) if seg else self.p
        full = np.zeros(len(self.limit))
        full[self.groups] = q * (1.0 - self.replay_share)
        if self.replay_share > 0:
            full[-1] = self.replay_share
        return full

    def probs(self, step: int, drawn: np.ndarray) -> np.ndarray | None:
        p = self.base(step)
        if not np.isfinite(self.limit).any():
            return p
        return cap_probs(p, self.limit, drawn, self.slots * (self.total_steps - step),
                         self.replay_share, self.slots)

    def state(self) -> dict[str, Any]:
        return {"p": self.p.tolist(), "prev": None if self.prev is None else self.prev.tolist(),
                "obs_p": self.obs_p, "obs_d": self.obs_d, "rounds": self.rounds,
                "a_avg": None if self.a_avg is None else self.a_avg.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.p = np.array(state["p"])
        self.prev = None if state["prev"] is None else np.array(state["prev"])
        self.obs_p, self.obs_d, self.rounds = state["obs_p"], state["obs_d"], state["rounds"]
        self.a_avg = None if state["a_avg"] is None else np.array(state["a_avg"])

    def summary(self) -> dict[str, Any]:
        return {"method": "aioli", "sources": [self.names[g] for g in self.groups],
                "init": {self.names[g]: float(v) for g, v in zip(self.groups, self.init,
                                                                  strict=True)},
                "estimation_steps": self.estimation_steps(), "rounds": self.rounds}
