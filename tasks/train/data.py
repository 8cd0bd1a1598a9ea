"""Training data: the token shards of a tokenized data dir and the order rows are drawn in.

Rows are drawn uniformly from the packed data by a seeded permutation per epoch; `source_weights`
(and `anneal_source_weights` for the last `anneal_fraction` of steps) reweight sources using
meta.json's per-source row index, and continual pre-training's `replay` is one more pool. The
whole sampling state is a few positions, so a resumed run draws exactly the same rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig


class PackedSequences:
    """All training rows of a data directory, addressed by one global index (mmap, no copies).

    `add` appends another data directory's rows (continual pre-training's replay data) after
    these; `source_rows` gives each source's global row indices from meta.json's index.
    """

    def __init__(self, data_dir: Path, meta: dict[str, Any]):
        self.seq_len: int = meta["seq_len"]
        self.shards: list[np.ndarray] = []
        self.sources: dict[str, list[np.ndarray]] = {}
        self.starts = np.zeros(1, dtype=np.int64)
        self.add(data_dir, meta, "")
        if len(self) == 0:
            raise ValueError(f"{data_dir}: no training sequences")

    def add(self, data_dir: Path, meta: dict[str, Any], prefix: str) -> range:
        """Append a data dir's rows; its sources are keyed `prefix + source`. Returns their
        global index range."""
        if meta["seq_len"] != self.seq_len:
            raise ValueError(f"{data_dir}: rows of {meta['seq_len']} tokens, this run's are "
                             f"{self.seq_len}")
        first = len(self)
        offset = first
        for shard in meta["train_shards"]:
            arr = np.load(data_dir / shard["path"], mmap_mode="r", allow_pickle=False)
            if arr.ndim != 2 or arr.shape[1] != self.seq_len or arr.shape[0] != shard["n_seq"]:
                raise ValueError(
                    f"{shard['path']}: shape {arr.shape}, meta says ({shard['n_seq']}, "
                    f"{self.seq_len})"
                )
            self.shards.append(arr)
            # data tokenized before the source index existed: one unnamed source
            ranges = shard.get("sources", {"": [0, shard["n_seq"]]})
            for src, (lo, hi) in ranges.items():
                self.sources.setdefault(prefix + src, []).append(
                    np.arange(offset + lo, offset + hi, dtype=np.int64))
            offset += len(arr)
        # starts[i] = global index of shard i's first row
        self.starts = np.cumsum([0] + [len(a) for a in self.shards])
        return range(first, len(self))

    def source_rows(self) -> dict[str, np.ndarray]:
        return {src: np.concatenate(parts) for src, parts in sorted(self.sources.items())}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def get(self, indices: list[int]) -> np.ndarray:
        """Rows at global `indices` as an int64 (len(indices), seq_len) array."""
        shard_ids = np.searchsorted(self.starts, indices, side="right") - 1
        rows = [self.shards[s][i - self.starts[s]] for s, i in zip(shard_ids, indices, strict=True)]
        return np.stack(rows).astype(np.int64)


class DataOrder:
    """Global sequence indices: a fresh seeded permutation per epoch, epochs concatenated.

    (epoch, index into that epoch's permutation) is the whole state, so a resumed run picks up
    exactly the rows the interrupted one would have read next. `stream` gives independent
    orders for the pools of a Mixture (0: the plain single-pool order).
    """

    def __init__(self, n: int, seed: int, epoch: int = 0, index: int = 0, stream: int = 0):
        self.n, self.seed, self.epoch, self.index, self.stream = n, seed, epoch, index, stream
        self.perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        key = [self.seed, epoch] if self.stream == 0 else [self.seed, self.stream, epoch]
        return np.random.default_rng(key).permutation(self.n)

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            if self.index == self.n:  # epoch used up: next permutation
                self.epoch, self.index = self.epoch + 1, 0
                self.perm = self._permutation(self.epoch)
            m = min(k - len(out), self.n - self.index)
            out += self.perm[self.index : self.index + m].tolist()
            self.index += m
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


class Mixture:
    """Rows drawn from named pools by weight: each pool has its own DataOrder over its rows, and
    which pool fills each slot of a batch is drawn from a generator seeded by (seed, step,
    micro-batch) -- so the state is the pools' positions alone and a resumed run draws the same.

    One pool with no weights is exactly the plain DataOrder (state {"epoch", "index"}).
    """

    def __init__(self, pools: dict[str, np.ndarray], seed: int,
                 state: dict[str, Any] | None = None):
        self.names = list(pools)
        self.rows = pools
        self.seed = seed
        self.single = len(pools) == 1
        state = state or {}
        if self.single:
            self.orders = {self.names[0]: DataOrder(len(pools[self.names[0]]), seed, **state)}
        else:
            saved = state.get("pools", {})
            self.orders = {
                name: DataOrder(len(rows), seed, stream=zlib.crc32(name.encode()) or 1,
                                **saved.get(name, {}))
                for name, rows in pools.items()}

    def take(self, k: int, probs: np.ndarray, step: int, micro: int) -> list[int]:
        """k global row indices for micro-batch `micro` of optimizer step `step`; probs: one
        probability per pool (in pool order)."""
        if self.single:
            name = self.names[0]
            return self.rows[name][self.orders[name].take(k)].tolist()
        rng = np.random.default_rng([self.seed, 0x5EED, step, micro])
        choice = rng.choice(len(self.names), size=k, p=probs)
        out = np.empty(k, dtype=np.int64)
        for i, name in enumerate(self.names):
            slots = np.flatnonzero(choice == i)
            if len(slots):
                out[slots] = self.rows[name][self.orders[name].take(len(slots))]
        return out.tolist()

    def state(self) -> dict[str, Any]:
        if self.single:
            return self.orders[self.names[0]].state()
        return {"pools": {name: o.state() for name, o in self.orders.items()}}


REPLAY = "replay:"  # prefix of the previous run's sources in a Mixture


def mixture_pools(data: PackedSequences, config: TrainConfig, replay: bool
                  ) -> tuple[dict[str, np.ndarray], Callable[[int, int], np.ndarray]]:
    """The pools a run samples from and its probabilities per step: probs(step, total_steps).

    Without source weights, this run's rows are one pool ("train"), else one pool per source;
    with replay, the previous run's rows are one more pool (REPLAY) drawn with probability
    `config.replay`, the rest shared by this run's pools in proportion to rows x weight.
    """
    by_source = data.source_rows()
    current = {s: r for s, r in by_source.items() if not s.startswith(REPLAY)}
    weighted = bool(config.source_weights or config.anneal_source_weights)
    unknown = set(config.source_weights) | set(config.anneal_source_weights)
    unknown -= set(current)
    if weighted and unknown:
        raise ValueError(f"source weights for {sorted(unknown)}, but the data's sources are "
                         f"{sorted(current)}")
    # this run's rows come first (0..n-1), the replayed ones after them
    n = sum(len(r) for r in current.values())
    pools = dict(current) if weighted else {"train": np.arange(n, dtype=np.int64)}
    if replay:  # keyed by the prefix alone: no source name collides with it
        pools[REPLAY] = np.arange(n, len(data), dtype=np.int64)

    def weights(table: dict[str, float]) -> np.ndarray:
        if not weighted:
            return np.ones(1)
        w = np.array([len(current[s]) * table.get(s, 1.0) for s in current], dtype=np.float64)
        if w.sum() <= 0:
            raise ValueError(f"source weights {table} leave nothing to sample")
        return w

    plain = weights(config.source_weights)
    anneal = weights({**config.source_weights, **config.anneal_source_weights})

    def probs(step: int, total_steps: int) -> np.ndarray:
        annealing = (config.anneal_source_weights
                     and step >= round(total_steps * (1 - config.anneal_fraction)))
        w = anneal if annealing else plain
        p = w / w.sum()
        return np.append(p * (1 - config.replay), config.replay) if replay else p

    return pools, probs


def sequence_order(n: int, seed: int) -> Iterator[int]:
    """DataOrder as an endless iterator of indices."""
    order = DataOrder(n, seed)
    while True:
        yield order.take(1)[0]
