"""Everything a run needs to know about its data before the first step: the rows (with replay),
the pools (the stability gap's top rows), the mixer (fixed proportions or Aioli), the caps, the
curriculum order, per-source loss weights, and the plan (steps and epochs per source).
Torch-free: the train stage calls it in the flow process to log the plan, the loop calls it
again in the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .aioli import AioliMix
from .config import TrainConfig
from .continual import InitSource, add_replay
from .curriculum import fixed_orders
from .data import REPLAY, Mixture, PackedSequences
from .mixing import StaticMix, mixture_pools
from .repetition import (
    by_source,
    epochs,
    make_plan,
    plan_steps,
    pool_limits,
    source_rows,
    stops_at_caps,
)
from .stability import select_subset


@dataclass
class Sampling:
    data: PackedSequences
    replay_dir: Path | None
    pools: dict[str, np.ndarray]
    mix: StaticMix | AioliMix
    limit: np.ndarray  # rows each pool may give (inf = no cap)
    hard_limit: np.ndarray | None  # what the Mixture enforces (downweight); None with stop
    fixed: dict[str, np.ndarray]  # curriculum order per pool
    steps: int
    plan: dict[str, Any]
    seed: int
    loss_weight: np.ndarray | None  # per global row (source_loss_weights), None = all 1
    pool_loss_weight: np.ndarray | None  # mean loss weight of each pool's rows

    def mixture(self, state: dict[str, Any] | None = None) -> Mixture:
        return Mixture(self.pools, self.seed, state, self.hard_limit, self.fixed)

    def epochs_seen(self, mixture: Mixture) -> dict[str, float]:
        return epochs(by_source(mixture, self.data), source_rows(self.data, self.pools))

    def mean_loss_weight(self, p: np.ndarray) -> float:
        """The expected loss weight of a row drawn with pool probabilities p (the loss is
        divided by it, so loss weights shift emphasis without changing the step size)."""
        return float(np.dot(p, self.pool_loss_weight)) if self.pool_loss_weight is not None \
            else 1.0

    def probe_rows(self, n: int) -> list[np.ndarray]:
        """Aioli's probe rows: up to n seeded rows of each mixed source's pool."""
        assert isinstance(self.mix, AioliMix)
        rng = np.random.default_rng([self.seed, 0xA10])
        out = []
        for g in self.mix.groups:
            rows = self.pools[list(self.pools)[g]]
            out.append(np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False)))
        return out


def prepare(config: TrainConfig, data_dir: Path, meta: dict[str, Any],
            init: InitSource | None) -> Sampling:
    data = PackedSequences(data_dir, meta)
    replay_dir = add_replay(data, meta, config, init)
    pools, probs = mixture_pools(data, config, replay=replay_dir is not None)
    requested = config.total_steps(data.seq_len)
    share = config.replay if replay_dir is not None else 0.0
    subset = None
    if config.selects_subset():  # the stability gap's top rows by score: the new data's pool
        assert config.stability is not None
        pools["train"], subset = select_subset(config.stability, config, data, meta,
                                               pools["train"], requested, share)
    names = list(pools)
    limit = pool_limits(config, pools)
    fixed = fixed_orders(config.order, data, meta, pools) if config.order else {}
    slots = config.batch_size * config.grad_accum
    static = StaticMix(probs, limit, replay_dir is not None, config, slots)
    if config.mixing is not None:  # the plan (and its length) at Aioli's first proportions
        cur = [i for i, n in enumerate(names) if n != REPLAY]
        w0 = probs(0, requested)[cur]
        groups = [i for i in cur if config.source_weights.get(names[i], 1.0) > 0]
        init_p = (w0[[cur.index(g) for g in groups]] if config.mixing.init == "static"
                  else np.ones(len(groups)))
        first = np.zeros(len(names))
        first[groups] = init_p / init_p.sum() * (1 - share)
        if share:
            first[-1] = share
        static = StaticMix(lambda step, total: first, limit, share > 0, config, slots)
    # downweight: the Mixture itself never passes a cap; stop: the plan ends the run first
    hard = None if stops_at_caps(config) else limit
    counting = Mixture(pools, config.seed, None, hard, fixed)
    steps, drawn = plan_steps(static, config, len(pools), requested, limit, len(pools) == 1)
    mix: StaticMix | AioliMix = static
    basis = "fixed proportions"
    if config.mixing is not None:
        mix = AioliMix(config.mixing, names, groups, init_p, limit, share, slots, steps,
                       config.seed)
        basis = "aioli's first proportions"
    plan = make_plan(config, data, counting, requested, steps, drawn, basis)
    if subset is not None:
        plan["stability"] = subset
    loss_weight = pool_weight = None
    if config.source_loss_weights:
        src_names, ids = data.source_ids()
        per_source = np.array([config.source_loss_weights.get(s, 1.0) for s in src_names])
        loss_weight = per_source[ids]
        pool_weight = np.array([loss_weight[rows].mean() for rows in pools.values()])
    return Sampling(data, replay_dir, pools, mix, limit, hard, fixed, steps, plan, config.seed,
                    loss_weight, pool_weight)
