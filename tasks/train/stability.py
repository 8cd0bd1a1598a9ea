"""The stability gap ("Efficient Continual Pre-training by Mitigating the Stability Gap", Wang et
al. 2024): a model continued on new data first loses ground on its old domain, then recovers.
The paper's remedies, for `init_from` runs with `train.stability`:

- train on a high-quality subset of the new data for several epochs instead of all of it once:
  the rows with the highest stored score (tokenize carries `stability.by` as it does a
  curriculum's `order.by`), as many as let the run's token budget see each `epochs` times, at
  most `top_percent` % of the scored rows;
- keep the mixture close to the original data: that is `replay` (tasks/train/continual.py);
- and to see the gap: the old domain's loss on fixed rows of the init run's data at step 0
  and every `probe_every` steps up to `probe_steps` (no gradient, eval mode).

Torch-free: the loop computes the losses (model.probe_losses).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .data import PackedSequences
from .options import StabilityConfig

RECOVERED = 0.01  # back within 1 % of the initial old-domain loss


def subset_size(budget_rows: int, epochs: float, top_percent: float, scored: int) -> int:
    """Rows in the subset: ceil(budget_rows / epochs) -- the budget sees each row at most
    `epochs` times (exactly when it divides) -- but at most floor(top_percent % of the scored
    rows), and at least 1."""
    by_epochs = math.ceil(budget_rows / epochs)
    by_share = math.floor(top_percent / 100 * scored)
    return max(1, min(by_epochs, by_share))


def top_rows(scores: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """The n rows (of `rows`, global indices) with the highest scores, in row order; rows
    without a score (NaN) never; ties go to the lower row index."""
    s = scores[rows]
    have = rows[~np.isnan(s)]
    ranked = have[np.lexsort((have, -scores[have]))]  # score descending, then row ascending
    return np.sort(ranked[:n])


def select_subset(st: StabilityConfig, config: TrainConfig, data: PackedSequences,
                  meta: dict[str, Any], rows: np.ndarray, steps: int, replay_share: float
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """The new data's rows to train on (global indices) and the record of the choice."""
    assert st.by is not None  # only a subset-selecting stability gets here
    scores = data.scores_of(meta, st.by, "stability")
    scored = int((~np.isnan(scores[rows])).sum())
    if scored == 0:
        raise ValueError(f"stability by {st.by!r}: no training row has a score")
    slots = config.batch_size * config.grad_accum
    budget = math.floor(steps * slots * (1 - replay_share))  # the new data's share of the rows
    chosen = top_rows(scores, rows, subset_size(budget, st.epochs, st.top_percent, scored))
    return chosen, {"by": st.by, "rows": len(chosen), "scored_rows": scored,
                    "all_rows": len(rows), "budget_rows": budget,
                    "epochs_target": st.epochs, "top_percent": st.top_percent,
                    "min_score": float(scores[chosen].min())}


def probe_schedule(st: StabilityConfig, steps: int) -> list[int]:
    """The steps (updates done) the old-domain loss is measured after: 0, probe_every, ...
    up to probe_steps, and no later than the run's last step."""
    return list(range(0, min(st.probe_steps, steps) + 1, st.probe_every))


def _pack(stream: list[int], seq_len: int, n: int) -> np.ndarray:
    k = min(n, len(stream) // seq_len)
    return np.asarray(stream[: k * seq_len], dtype=np.int64).reshape(k, seq_len)


def old_domain_rows(data_dir: Path, n: int) -> tuple[np.ndarray, str]:
    """Fixed rows of the init run's data to measure its loss on, and where they come from:
    its first held-out documents (heldout/ files in name order, packed like training rows,
    `<|endoftext|>` after each), or, when they fill fewer than n rows, its last n training
    rows. Reads only as many documents as it needs."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    meta = json.loads((data_dir / "meta.json").read_text())
    seq_len = meta["seq_len"]
    tok = Tokenizer.from_file(str(data_dir / "tokenizer.json"))
    stream: list[int] = []
    for path in sorted((data_dir / "heldout").glob("part-*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=64, columns=["text"]):
            for enc in tok.encode_batch(batch.column(0).to_pylist(), add_special_tokens=False):
                stream += [*enc.ids, meta["eos_id"]]
            if len(stream) >= n * seq_len:
                return _pack(stream, seq_len, n), "heldout"
    data = PackedSequences(data_dir, meta)
    last = list(range(max(0, len(data) - n), len(data)))
    return data.get(last), "train-tail"


def old_domain_dir(config: TrainConfig, init: Any, vocab_size: int) -> Path | None:
    """The init run's data the old-domain loss is measured on: the replay data (replay_data,
    else the data the init model was trained on); None when unknown."""
    found = Path(config.replay_data) if config.replay_data else init.data_dir
    if found is None:
        return None
    if json.loads((found / "meta.json").read_text())["vocab_size"] != vocab_size:
        raise ValueError(f"old-domain data {found}: another vocabulary than this run's")
    return Path(found)


class ProbeRows:
    """Rows held in memory, read like PackedSequences (model.probe_losses reads `get`)."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def get(self, indices: list[int]) -> np.ndarray:
        return self.rows[indices]


def gap(curve: list[tuple[int, float]] | list[list[float]]) -> dict[str, Any] | None:
    """The stability gap of an old-domain loss curve [(step, loss), ...]: the initial loss, the
    highest (and its step), the gap between them, and the first step after the highest whose
    loss is within 1 % of the initial one (the peak's own step when it is step 0, no gap;
    None = not recovered by the last measured step)."""
    if not curve:
        return None
    pts = sorted((int(s), float(v)) for s, v in curve)
    first = pts[0][1]
    peak_step, peak = max(pts, key=lambda p: (p[1], -p[0]))
    recovered: int | None = peak_step if peak_step == pts[0][0] else next(
        (s for s, v in pts if s > peak_step and v <= first * (1 + RECOVERED)), None)
    return {"initial": first, "max": peak, "max_step": peak_step, "gap": peak - first,
            "recovered_step": recovered, "last_step": pts[-1][0]}


def gap_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stability gap per seed from a run's catalog metrics (`old_domain_loss`), as rows
    for a report: the initial loss, the highest (the gap, and its step), the recovery."""
    curves: dict[int, list[tuple[int, float]]] = {}
    for m in metrics:
        if m["name"] == "old_domain_loss":
            curves.setdefault(m.get("seed") or 0, []).append((m["step"], m["value"]))
    out = []
    for seed, pts in sorted(curves.items()):
        g = gap(pts)
        assert g is not None
        out.append({"seed": seed, "initial": round(g["initial"], 4),
                    "max (gap)": f"{g['max']:.4f} (+{g['gap']:.4f} at step {g['max_step']})",
                    "recovered": (f"step {g['recovered_step']}"
                                  if g["recovered_step"] is not None
                                  else f"not recovered in {g['last_step']} steps")})
    return out
