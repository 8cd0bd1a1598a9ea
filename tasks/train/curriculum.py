"""A quality-ordered curriculum ("How Learning Rate Decay Wastes Your Best Data in
Curriculum-Based LLM Pretraining", Luo et al. 2025): rows in the order of a stored score
instead of shuffled.

tokenize carries each row's score (the token-weighted mean of a filter score column over the
documents in the row; tasks/tokenize.py) into `train/*.score.npy`, named in meta.json as
`row_score`. Every pool of this run's rows is read in score order, every epoch the same (the
single pool: all rows; per-source pools: each source's rows, interleaved by the mixture); rows
without a score come first. Replayed rows stay shuffled. The paper pairs the order with a
constant learning rate and the average of the last checkpoints, which TrainConfig makes the
default with `order`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import REPLAY, PackedSequences
from .options import OrderConfig


def score_order(scores: np.ndarray, ascending: bool) -> np.ndarray:
    """Positions of `scores` in curriculum order: ascending (or descending) score, rows without
    a score (NaN) first, ties in their stored order."""
    key = np.where(np.isnan(scores), -np.inf, scores if ascending else -scores)
    return np.argsort(key, kind="stable")


def fixed_orders(order: OrderConfig, data: PackedSequences, meta: dict[str, Any],
                 pools: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each of this run's pools in curriculum order (positions into the pool's rows)."""
    scores = data.scores_of(meta, order.by, "order")
    return {name: score_order(scores[rows], order.ascending)
            for name, rows in pools.items() if name != REPLAY}
