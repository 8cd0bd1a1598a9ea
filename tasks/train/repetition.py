"""Repetition ("To Repeat or Not To Repeat: Insights from Scaling LLM under Token-Crisis"): how
many epochs of each source a run sees, known before it starts, and `max_epochs` caps.

Batches are filled from the pools deterministically (data.Allocator), so replaying the sampling
without the data -- which pool fills which slots, step by step -- gives the exact rows each
pool gives; each pool's seeded order then says which sources they are. `plan` does that once
before training: the epochs per source (rows drawn / rows), and the step the run must end at
when a cap stops it (on_max_epochs: stop) or when the capped sources together cannot fill the
budget (downweight). The training summary holds the plan and the epochs seen; `epochs_table`
turns a summary into rows for a report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import TrainConfig
from .data import REPLAY, Allocator, Mixture, PackedSequences

REPLAY_NAME = "replay"  # the previous run's rows, all sources together, in the plan


def pool_limits(config: TrainConfig, pools: dict[str, np.ndarray]) -> np.ndarray:
    """The most rows each pool may give: floor(max_epochs x rows) for a capped source, else
    unlimited (inf); the replay pool and the single all-sources pool are never capped."""
    out = []
    for name, rows in pools.items():
        cap = config.cap(name) if config.per_source() and name != REPLAY else None
        out.append(np.inf if cap is None else math.floor(cap * len(rows)))
    return np.array(out, dtype=np.float64)


def stops_at_caps(config: TrainConfig) -> bool:
    """Whether a cap ends the run (on_max_epochs: stop, fixed proportions) rather than
    down-weighting its source."""
    return (config.on_max_epochs == "stop" and config.mixing is None
            and config.max_epochs is not None)


def simulate(mix: Any, n_pools: int, total_steps: int, batch_size: int, grad_accum: int,
             limit: np.ndarray | None, stop_at: np.ndarray | None) -> tuple[int, np.ndarray]:
    """The sampling of a run without its data: (steps it completes, rows drawn per pool).

    It ends early when `mix` cannot fill a step (None), or -- `stop_at` -- before the step that
    would draw more rows than stop_at from some pool."""
    alloc = Allocator(n_pools, limit)
    for step in range(total_steps):
        p = mix.probs(step, alloc.drawn)
        if p is None:
            return step, alloc.drawn
        before = alloc.drawn.copy()
        for _ in range(grad_accum):
            alloc.allocate(batch_size, p)
        if stop_at is not None and (alloc.drawn > stop_at).any():
            return step, before
    return total_steps, alloc.drawn


def plan_steps(mix: Any, config: TrainConfig, n_pools: int, steps: int, limit: np.ndarray,
               single: bool) -> tuple[int, np.ndarray]:
    """(steps to train, rows drawn per pool). A shortened run is planned again at its new
    length (the schedules depend on it) until the plan completes."""
    batch = config.batch_size * config.grad_accum
    if single:
        mix.total_steps = steps
        return steps, np.array([steps * batch])
    stop = stops_at_caps(config)
    while True:
        mix.total_steps = steps
        done, drawn = simulate(mix, n_pools, steps, config.batch_size, config.grad_accum,
                               None if stop else limit, limit if stop else None)
        if done == steps:
            return steps, drawn
        if done == 0:
            raise ValueError(f"max_epochs {config.max_epochs} leaves not one step of "
                             f"{batch} rows to train")
        steps = done


def by_source(mixture: Mixture, data: PackedSequences, drawn: np.ndarray | None = None
              ) -> dict[str, int]:
    """Rows drawn per source (the previous run's together as "replay") after `drawn` rows
    per pool (default: what `mixture` has drawn so far)."""
    names, ids = data.source_ids()
    counts = mixture.source_counts(ids, len(names), drawn)
    out: dict[str, int] = {}
    for name, c in zip(names, counts, strict=True):
        key = REPLAY_NAME if name.startswith(REPLAY) else name
        out[key] = out.get(key, 0) + int(c)
    return out


def source_rows(data: PackedSequences, pools: dict[str, np.ndarray] | None = None
                ) -> dict[str, int]:
    """Rows per source that the run may draw: those in its pools (default: all rows; the
    stability gap's subset is fewer)."""
    held = None
    if pools is not None:
        held = np.zeros(len(data), dtype=bool)
        for rows in pools.values():
            held[rows] = True
    out: dict[str, int] = {}
    for name, rows in data.source_rows().items():
        key = REPLAY_NAME if name.startswith(REPLAY) else name
        out[key] = out.get(key, 0) + (len(rows) if held is None else int(held[rows].sum()))
    return out


def epochs(drawn: dict[str, int], rows: dict[str, int]) -> dict[str, float]:
    return {s: drawn.get(s, 0) / n for s, n in rows.items() if n}


def make_plan(config: TrainConfig, data: PackedSequences, mixture: Mixture, requested: int,
              steps: int, drawn: np.ndarray, basis: str) -> dict[str, Any]:
    """The record of a plan: per source its rows (in the pools), the rows it gives, its epochs
    and its cap."""
    rows, got = source_rows(data, mixture.rows), by_source(mixture, data, drawn)
    return {
        "steps_requested": requested,
        "steps": steps,
        "stopped_by": "max_epochs" if steps < requested else None,
        "basis": basis,
        "sources": {s: {"rows": n, "rows_drawn": got.get(s, 0), "epochs": got.get(s, 0) / n,
                        "max_epochs": None if s == REPLAY_NAME else config.cap(s)}
                    for s, n in rows.items() if n},
    }


def describe(plan: dict[str, Any]) -> str:
    """One log line: the epochs of every source."""
    parts = [f"{s} {v['epochs']:.2f}" + (f" (cap {v['max_epochs']:g})" if v["max_epochs"]
                                         else "")
             for s, v in sorted(plan["sources"].items())]
    line = f"epochs per source over {plan['steps']} steps: " + ", ".join(parts)
    if plan["stopped_by"]:
        line += (f"; stopped by max_epochs after {plan['steps']} of "
                 f"{plan['steps_requested']} steps")
    if st := plan.get("stability"):
        line += (f"; stability: the top {st['rows']} of {st['scored_rows']} scored rows by "
                 f"{st['by']}")
    return line


def repeat_warning(plan: dict[str, Any]) -> str | None:
    """A warning naming the sources whose rows are seen more than once, or None."""
    rep = {s: v["epochs"] for s, v in plan["sources"].items() if v["rows_drawn"] > v["rows"]}
    if not rep:
        return None
    shown = ", ".join(f"{s} {e:.2f} epochs" for s, e in sorted(rep.items()))
    return (f"data repeats: {shown}. Repeated tokens are worth less than fresh ones ('To "
            "Repeat or Not To Repeat'): cap them with train.max_epochs, or train with "
            "train.dropout")


def epochs_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for a report from a train summary (the train manifest's `summary`): per source
    its rows, the epochs planned before training and seen by the end, and its cap."""
    plan = summary.get("data_plan") or {}
    seen = summary.get("epochs") or {}
    return [{"source": s, "rows": v["rows"], "epochs_planned": round(v["epochs"], 4),
             "epochs_seen": round(seen.get(s, float("nan")), 4), "max_epochs": v["max_epochs"]}
            for s, v in sorted(plan.get("sources", {}).items())]
