"""Training data: the token shards of a tokenized data dir and the order rows are drawn in.

Rows are drawn uniformly from the packed data by a seeded permutation per epoch (or in a fixed
order: a curriculum). With per-source sampling (tasks/train/mixing.py) every source is a pool
and each batch is filled from the pools in the given proportions by `Allocator`: deterministic,
so the rows each source contributes over a run are known before it starts. Continual
pre-training's `replay` is one more pool. The whole sampling state is a few positions, so a
resumed run draws exactly the same rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class PackedSequences:
    """All training rows of a data directory, addressed by one global index (mmap, no copies).

    `add` appends another data directory's rows (continual pre-training's replay data) after
    these; `source_rows` gives each source's global row indices from meta.json's index.
    """

    def __init__(self, data_dir: Path, meta: dict[str, Any]):
        self.seq_len: int = meta["seq_len"]
        self.shards: list[np.ndarray] = []
        self.sources: dict[str, list[np.ndarray]] = {}
        self.scores: list[np.ndarray] = []  # per-row score (NaN = none), when tokenized with one
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
            self.scores.append(np.load(data_dir / shard["score"], allow_pickle=False)
                               if "score" in shard else np.full(len(arr), np.nan, np.float32))
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

    def source_ids(self) -> tuple[list[str], np.ndarray]:
        """The sources (sorted) and, per global row, the index of its source."""
        names = sorted(self.sources)
        ids = np.empty(len(self), dtype=np.int32)
        for i, src in enumerate(names):
            for rows in self.sources[src]:
                ids[rows] = i
        return names, ids

    def row_scores(self) -> np.ndarray:
        """Per global row its score (float32, NaN where none)."""
        return np.concatenate(self.scores).astype(np.float32, copy=False)

    def scores_of(self, meta: dict[str, Any], column: str, setting: str) -> np.ndarray:
        """``row_scores``, after checking tokenize carried ``column`` (``train.<setting>.by``:
        order or stability)."""
        if meta.get("row_score") != column:
            have = meta.get("row_score")
            raise ValueError(f"{setting} by {column!r}: the data was tokenized "
                             + (f"with row scores of {have!r}" if have else "without row scores")
                             + f"; the tokenize stage writes them when train.{setting}.by is set")
        return self.row_scores()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def get(self, indices: list[int]) -> np.ndarray:
        """Rows at global `indices` as an int64 (len(indices), seq_len) array."""
        shard_ids = np.searchsorted(self.starts, indices, side="right") - 1
        rows = [self.shards[s][i - self.starts[s]] for s, i in zip(shard_ids, indices, strict=True)]
        return np.stack(rows).astype(np.int64)


class DataOrder:
    """Global sequence indices: a fresh seeded permutation per epoch, epochs concatenated
    (or, with `fixed`, that order every epoch: a curriculum).

    (epoch, index into that epoch's permutation) is the whole state, so a resumed run picks up
    exactly the rows the interrupted one would have read next. `stream` gives independent
    orders for the pools of a Mixture (0: the plain single-pool order).
    """

    def __init__(self, n: int, seed: int, epoch: int = 0, index: int = 0, stream: int = 0,
                 fixed: np.ndarray | None = None):
        self.n, self.seed, self.epoch, self.index, self.stream = n, seed, epoch, index, stream
        self.fixed = fixed
        self.perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        if self.fixed is not None:
            return self.fixed
        key = [self.seed, epoch] if self.stream == 0 else [self.seed, self.stream, epoch]
        return np.random.default_rng(key).permutation(self.n)

    def drawn(self) -> int:
        """Indices handed out so far."""
        return self.epoch * self.n + self.index

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


class Allocator:
    """How many slots of each batch each pool fills: proportional, deterministic, exact.

    Each pool's target grows by k * p per batch of k; the slots go to the pools furthest below
    their targets (largest remainder), so after any batch every pool has drawn within one row of
    its target. `limit` (rows a pool may still give, e.g. a max_epochs cap) is never exceeded:
    a full pool's slots go to the others. The state is the targets and the rows drawn.
    """

    def __init__(self, n_pools: int, limit: np.ndarray | None = None,
                 state: dict[str, Any] | None = None):
        state = state or {}
        self.target = np.array(state.get("target", np.zeros(n_pools)), dtype=np.float64)
        self.drawn = np.array(state.get("drawn", np.zeros(n_pools)), dtype=np.int64)
        self.limit = np.full(n_pools, np.inf) if limit is None else np.asarray(limit, float)

    def allocate(self, k: int, p: np.ndarray) -> np.ndarray:
        """Slots per pool for a batch of k (they sum to k unless every pool is at its limit)."""
        self.target += k * p
        owed = self.target - self.drawn
        room = self.limit - self.drawn
        counts = np.minimum(np.floor(np.clip(owed, 0, None)), room).astype(np.int64)
        while counts.sum() > k:  # rounding gave too many: take from the smallest remainders
            have = np.flatnonzero(counts > 0)
            counts[have[np.argmin((owed - counts)[have])]] -= 1
        while (left := k - int(counts.sum())) > 0:
            open_ = np.flatnonzero((p > 0) & (counts < room))
            if not len(open_):
                break
            best = open_[np.argsort(-(owed - counts)[open_], kind="stable")][:left]
            counts[best] += 1
        self.drawn += counts
        return counts

    def state(self) -> dict[str, Any]:
        return {"target": self.target.tolist(), "drawn": self.drawn.tolist()}


class Mixture:
    """Rows drawn from named pools: each pool has its own DataOrder over its rows; how many slots
    of a batch each pool fills is decided by an Allocator, and where they sit in the batch by a
    generator seeded by (seed, step, micro-batch) -- so a resumed run draws the same.

    One pool is exactly the plain DataOrder (state {"epoch", "index"}). `limit`: the most rows
    each pool may give over the run; `fixed`: a pool's rows in a fixed order (a curriculum).
    """

    def __init__(self, pools: dict[str, np.ndarray], seed: int,
                 state: dict[str, Any] | None = None, limit: np.ndarray | None = None,
                 fixed: dict[str, np.ndarray] | None = None):
        self.names = list(pools)
        self.rows = pools
        self.seed = seed
        self.single = len(pools) == 1
        state, fixed = state or {}, fixed or {}
        if self.single:
            name = self.names[0]
            self.orders = {name: DataOrder(len(pools[name]), seed, **state,
                                           fixed=fixed.get(name))}
        else:
            saved = state.get("pools", {})
            self.orders = {
                name: DataOrder(len(rows), seed, stream=zlib.crc32(name.encode()) or 1,
                                **saved.get(name, {}), fixed=fixed.get(name))
                for name, rows in pools.items()}
        drawn = [o.drawn() for o in self.orders.values()]
        self.alloc = Allocator(len(pools), limit,
                               {"target": state.get("target", drawn), "drawn": drawn})

    def take(self, k: int, probs: np.ndarray, step: int, micro: int) -> list[int]:
        """k global row indices for micro-batch `micro` of optimizer step `step`; probs: one
        probability per pool (in pool order)."""
        if self.single:
            name = self.names[0]
            self.alloc.drawn += k
            return self.rows[name][self.orders[name].take(k)].tolist()
        counts = self.alloc.allocate(k, probs)
        if counts.sum() < k:
            raise RuntimeError(f"step {step}: every pool is at its limit (max_epochs)")
        slots = np.random.default_rng([self.seed, 0x5EED, step, micro]).permutation(
            np.repeat(np.arange(len(self.names)), counts))
        out = np.empty(k, dtype=np.int64)
        for i, name in enumerate(self.names):
            where = np.flatnonzero(slots == i)
            if len(where):
                out[where] = self.rows[name][self.orders[name].take(len(where))]
        return out.tolist()

    def drawn(self) -> np.ndarray:
        """Rows drawn so far per pool."""
        return self.alloc.drawn.copy()

    def source_counts(self, source_ids: np.ndarray, n_sources: int,
                      drawn: np.ndarray | None = None) -> np.ndarray:
        """Rows drawn per source (source_ids: each global row's source) after `drawn` rows per
        pool (default: so far): whole epochs of each pool plus the next epoch's prefix."""
        drawn = self.drawn() if drawn is None else drawn
        counts = np.zeros(n_sources, dtype=np.int64)
        for (name, order), d in zip(self.orders.items(), drawn, strict=True):
            rows = self.rows[name]
            full, rest = divmod(int(d), len(rows))
            counts += full * np.bincount(source_ids[rows], minlength=n_sources)
            head = rows[order._permutation(full)[:rest]]
            counts += np.bincount(source_ids[head], minlength=n_sources)
        return counts

    def state(self) -> dict[str, Any]:
        if self.single:
            return self.orders[self.names[0]].state()
        return {"pools": {name: o.state() for name, o in self.orders.items()},
                "target": self.alloc.target.tolist()}


REPLAY = "replay:"  # prefix of the previous run's sources in a Mixture


def sequence_order(n: int, seed: int) -> Iterator[int]:
    """DataOrder as an endless iterator of indices."""
    order = DataOrder(n, seed)
    while True:
        yield order.take(1)[0]
