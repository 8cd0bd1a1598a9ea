"""Fixed data mixtures: the pools a run draws from and each pool's probability per step.

Sources become pools (tasks/train/data.py `Mixture`) when a recipe samples by source:
`source_weights` (and `anneal_source_weights` for the last `anneal_fraction` of the steps),
`mix_temperature` (p_s ~ w_s * n_s^(1/T), T annealed: "Upsample or Upweight?"), `max_epochs`
or `mixing`. Continual pre-training's replay is one more pool with the fixed share `replay`.
`StaticMix` keeps capped sources under their `max_epochs` by down-weighting them for the rest
of the run (the others renormalised); online mixing (Aioli) lives in tasks/train/aioli.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .config import TrainConfig
from .data import REPLAY, PackedSequences
from .options import MixTemperature


def temperature_at(step: int, total_steps: int, t: MixTemperature) -> float:
    """T at optimizer step `step` (0-based): linear from `start` at the first step to `end` at
    step until x (total_steps - 1) -- the last step with until 1 -- and `end` after that; with
    shape step, `start` before step until x total_steps and `end` from it."""
    if t.shape == "step":
        return t.start if step < t.until * total_steps else t.end
    at = t.until * (total_steps - 1)
    return t.end if step >= at else t.start + (t.end - t.start) * step / at


def split_pools(data: PackedSequences, config: TrainConfig, replay: bool
                ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The pools (name -> global rows) and this run's sources: one pool "train" unless the
    recipe samples by source (one pool per source); replay is one more pool (REPLAY)."""
    current = {s: r for s, r in data.source_rows().items() if not s.startswith(REPLAY)}
    named = (set(config.source_weights) | set(config.anneal_source_weights)
             | set(config.source_loss_weights)
             | (set(config.max_epochs) if isinstance(config.max_epochs, dict) else set()))
    unknown = named - set(current)
    if unknown:
        raise ValueError(f"source weights or caps for {sorted(unknown)}, but the data's sources "
                         f"are {sorted(current)}")
    # this run's rows come first (0..n-1), the replayed ones after them
    n = sum(len(r) for r in current.values())
    pools = dict(current) if config.per_source() else {"train": np.arange(n, dtype=np.int64)}
    if replay:  # keyed by the prefix alone: no source name collides with it
        pools[REPLAY] = np.arange(n, len(data), dtype=np.int64)
    return pools, list(current)


def mixture_pools(data: PackedSequences, config: TrainConfig, replay: bool
                  ) -> tuple[dict[str, np.ndarray], Callable[[int, int], np.ndarray]]:
    """The pools a run samples from and its fixed probabilities per step: probs(step,
    total_steps), one per pool. This run's pools share 1 - replay in proportion to
    w_s * n_s^(1/T) (T = 1 without mix_temperature); replay has `replay`."""
    pools, sources = split_pools(data, config, replay)
    if not config.per_source():
        sources = ["train"]
    rows = np.array([len(pools[s]) for s in sources], dtype=np.float64)

    def weights(table: dict[str, float]) -> np.ndarray:
        w = np.array([table.get(s, 1.0) for s in sources], dtype=np.float64)
        if (w * rows).sum() <= 0:
            raise ValueError(f"source weights {table} leave nothing to sample")
        return w

    plain = weights(config.source_weights)
    anneal = weights({**config.source_weights, **config.anneal_source_weights})

    def probs(step: int, total_steps: int) -> np.ndarray:
        annealing = (config.anneal_source_weights
                     and step >= round(total_steps * (1 - config.anneal_fraction)))
        w = anneal if annealing else plain
        t = config.mix_temperature
        size = rows ** (1.0 / temperature_at(step, total_steps, t)) if t else rows
        p = w * size / (w * size).sum()
        return np.append(p * (1 - config.replay), config.replay) if replay else p

    return pools, probs


def keep_under_caps(q: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """The distribution closest in shape to `q` with q_s <= caps_s: capped entries are cut to
    their cap and the excess goes to the others in proportion to q (water-filling). Entries of
    q that are 0 stay 0. When the caps cannot hold all the mass (sum of caps over q > 0 below
    1), the result is the caps scaled to sum to 1 (every capped source runs out together)."""
    q = np.asarray(q, dtype=np.float64)
    live = q > 0
    if np.minimum(caps, 1.0)[live].sum() < 1.0:
        out = np.where(live, np.minimum(caps, 1.0), 0.0)
        return out / out.sum() if out.sum() > 0 else out
    out, fixed = q / q.sum(), np.zeros(len(q), dtype=bool)
    while True:
        over = (out > caps) & ~fixed
        if not over.any():
            return out
        out[over] = caps[over]
        fixed |= over
        free = live & ~fixed
        out[free] *= (1.0 - out[fixed].sum()) / out[free].sum()


class StaticMix:
    """Fixed proportions per step, kept under the pools' limits (rows each may still give) with
    on_max_epochs: downweight. probs(step, drawn) is None when the capped rows cannot fill the
    step: the run ends there."""

    def __init__(self, probs: Callable[[int, int], np.ndarray], limit: np.ndarray,
                 replay: bool, config: TrainConfig, slots_per_step: int):
        self.schedule, self.limit, self.replay = probs, limit, replay
        self.downweight = config.on_max_epochs == "downweight" and np.isfinite(limit).any()
        self.replay_share = config.replay if replay else 0.0
        self.slots = slots_per_step
        self.total_steps = 0  # set by the plan (tasks/train/repetition.py)

    def base(self, step: int) -> np.ndarray:
        return self.schedule(step, self.total_steps)

    def probs(self, step: int, drawn: np.ndarray) -> np.ndarray | None:
        p = self.base(step)
        if not self.downweight:
            return p
        return cap_probs(p, self.limit, drawn, self.slots * (self.total_steps - step),
                         self.replay_share, self.slots)

    def probe_due(self, step: int) -> bool:
        return False

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, Any] | None:
        return None


def cap_probs(p: np.ndarray, limit: np.ndarray, drawn: np.ndarray, slots_left: int,
              replay_share: float, slots_per_step: int) -> np.ndarray | None:
    """`p` (one per pool, replay last when replay_share > 0) with this run's pools kept under
    their remaining allowance spread over the rest of the run; None when it cannot fill one
    more step."""
    n = len(p) - (1 if replay_share > 0 else 0)
    own = slots_left * (1.0 - replay_share)  # slots this run's pools fill until the end
    room = (limit - drawn)[:n]
    if room[p[:n] > 0].sum() < slots_per_step * (1.0 - replay_share) - 1e-9:
        return None
    q = keep_under_caps(p[:n], room / max(own, 1e-12))
    return np.append(q * (1 - replay_share), replay_share) if replay_share > 0 else q
