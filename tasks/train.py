"""Train a small Llama-style proxy LM on a tokenized data directory.

One readable loop in the spirit of nanoGPT: seeded data order, AdamW, linear warmup then cosine
or warmup-stable-decay (WSD), gradient clipping and accumulation, JSONL metrics, and a Hugging
Face checkpoint (safetensors + tokenizer) that `AutoModelForCausalLM` / `AutoTokenizer` load
offline. The same loop runs data-parallel (DDP) when torch.distributed is initialised, as Ray
Train's TorchTrainer does for `workers > 1` (infra/ray.py).

Data sampling: rows are drawn uniformly from the packed data by a seeded permutation per epoch;
`source_weights` (and `anneal_source_weights` for the last `anneal_fraction` of steps) reweight
sources using meta.json's per-source row index.

Continual pre-training (`init_from`, a run id or a save_pretrained folder; `resolve_init`): the
model starts from that checkpoint, the LR re-warms to a new peak and re-decays, and `replay` of
each batch is drawn from the previous run's token shards. `average_last` averages the weights of
the last k checkpoints into the final one.

Resumable: with `checkpoint_every` set, the loop saves out_dir/checkpoints/step-<N>/ (the HF
model + tokenizer, plus the optimizer moments, data position and RNG states, all without pickle)
and a later `train()` on the same out_dir carries on from the newest complete one, giving the
same losses and weights as an uninterrupted run.

Input: the directory written by tasks/tokenize.py (tokenizer.json, meta.json, .npy shards of
shape (n_seq, seq_len)). Same config + same data => identical losses on CPU.

torch and transformers are imported inside the functions that use them, so importing this module
for TrainConfig alone (recipe validation in the CLI) stays fast and torch-free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

log = logging.getLogger(__name__)

# LlamaConfig kwargs per model size. Parameter counts are for the transformer blocks only
# (embeddings are tied, so they add vocab_size * hidden_size once).
PRESETS: dict[str, dict[str, Any]] = {
    # ~0.85M block params: CPU smoke tests and laptop demos
    "tiny": dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384
    ),
    # ~5.1M
    "small": dict(
        hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=768
    ),
    # ~21M
    "20m": dict(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1024
    ),
    # ~85M block params (GPT-2-small shape with a SwiGLU MLP); meant for a GPU
    "125m": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=2048
    ),
    # ~308M (GPT-2-medium shape, SwiGLU)
    "350m": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=2816
    ),
    # ~0.97B: TinyLlama-1.1B's shape (grouped-query attention, 4 key/value heads)
    "1b": dict(
        hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
        intermediate_size=5632
    ),
}

# Fields that change what is logged or saved, not the weights: a resumed run may use other values
# (say, checkpoint more often after a crash) and still continue the same trajectory.
# `workers` splits the same global batch over processes: the same trajectory up to float
# summation order.
BOOKKEEPING_FIELDS = frozenset(
    {"log_every", "checkpoint_every", "keep_checkpoints", "peak_flops", "seeds", "workers"})

# Dense bf16 peak FLOP/s by CUDA device name (first substring match wins), for MFU.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str = Field("tiny", description="model size: tiny (CPU), small, 20m, 125m, 350m, "
                        "1b (GPU)")
    batch_size: int = Field(
        16, ge=1, description="sequences per micro-batch, over all workers (each of N workers "
        "takes batch_size / N)")
    max_tokens: int = Field(400_000, ge=1, description="token budget; sets the optimizer steps")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the decay ends at this * lr")
    warmup_steps: int = Field(20, ge=0, description="linear warmup steps (from 0; with "
                              "init_from this is the re-warming)")
    schedule: Literal["cosine", "wsd"] = Field(
        "cosine", description="after warmup: cosine decay, or warmup-stable-decay (constant lr, "
        "then a linear decay over the last decay_fraction of steps)")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of steps that decay")
    weight_decay: float = Field(0.1, ge=0, description="AdamW, on 2-D weights only")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="max grad norm; 0 disables clipping")
    seed: int = Field(0, description="model init and data order")
    log_every: int = Field(5, ge=1, description="steps between metrics lines")
    device: str = Field("auto", description="auto = cuda if available, else cpu")
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on cuda, else fp32")
    compile: bool = Field(False, description="torch.compile the model")
    seeds: list[int] = Field(
        default_factory=list,
        description="train one proxy per seed (seed noise for comparisons); empty = [seed]")
    checkpoint_every: int = Field(
        0, ge=0, description="steps between resumable checkpoints (checkpoints/step-N/, and the "
        "last step); 0 = none, only the final checkpoint/")
    keep_checkpoints: int = Field(
        2, ge=1, description="newest resumable checkpoints kept; older ones are deleted")
    peak_flops: float | None = Field(
        None, gt=0, description="peak FLOP/s of the device for MFU; None = a known GPU's bf16 "
        "peak, else no MFU")
    workers: int = Field(
        1, ge=1, description="data-parallel workers: > 1 runs Ray Train's TorchTrainer (DDP, "
        "CPU or one GPU each); 1 = one Ray actor, or DDP over all GPUs when there are several")
    source_weights: dict[str, float] = Field(
        default_factory=dict, description="sampling weight per source (multiplies its natural "
        "share of rows; unlisted = 1, 0 = never), e.g. {wikipedia: 2.0}")
    anneal_source_weights: dict[str, float] = Field(
        default_factory=dict, description="weights that replace source_weights in the last "
        "anneal_fraction of steps: upsample chosen domains while the lr decays")
    anneal_fraction: float = Field(0.15, gt=0, lt=1, description="share of steps at the end "
                                   "that use anneal_source_weights")
    init_from: str | None = Field(
        None, description="continual pre-training: a run id (its final checkpoint, from the "
        "catalog) or a save_pretrained folder; its tokenizer is reused by the tokenize stage")
    replay: float = Field(
        0.05, ge=0, lt=1, description="with init_from: share of training rows drawn from the "
        "previous run's token shards (0.25 for a strong distribution shift; 0 = none)")
    replay_data: str | None = Field(
        None, description="tokenized data dir to replay instead of the init run's own")
    average_last: int = Field(
        0, ge=0, description="average the weights of the last k resumable checkpoints into "
        "the final one (needs checkpoint_every and keep_checkpoints >= k); 0 or 1 = off")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; known: {sorted(PRESETS)}")
        return v

    @field_validator("source_weights", "anneal_source_weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not w >= 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by workers "
                             f"{self.workers}")
        if self.average_last > 1 and (self.checkpoint_every == 0
                                      or self.keep_checkpoints < self.average_last):
            raise ValueError(f"average_last {self.average_last} needs checkpoint_every > 0 and "
                             f"keep_checkpoints >= {self.average_last}")
        return self

    def tokens_per_step(self, seq_len: int) -> int:
        return self.batch_size * seq_len * self.grad_accum

    def total_steps(self, seq_len: int) -> int:
        return max(1, self.max_tokens // self.tokens_per_step(seq_len))

    def per_seed(self) -> list[TrainConfig]:
        """One config per proxy to train: ``seeds`` expanded into ``seed``."""
        return [self.model_copy(update={"seed": s, "seeds": []})
                for s in (self.seeds or [self.seed])]

    def trajectory(self) -> dict[str, Any]:
        """The fields that decide the trained weights: a run may only resume if these match."""
        return self.model_dump(exclude=BOOKKEEPING_FIELDS)


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(preset: str, vocab_size: int, seq_len: int, eos_id: int) -> LlamaForCausalLM:
    """A freshly initialised model (seed torch first for a reproducible init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    config = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=seq_len,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        # GPT-2 convention: one <|endoftext|> token is BOS, EOS and (for batching) padding
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        attn_implementation="sdpa",
        **PRESETS[preset],
    )
    return LlamaForCausalLM(config)


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the decay.

    Warmup reaches the peak lr at step warmup_steps - 1. cosine: falls from lr at step
    warmup_steps to min_lr_ratio * lr at the last step (total_steps - 1). wsd: holds the peak,
    then over the last round(decay_fraction * total_steps) steps falls linearly, reaching
    min_lr_ratio * lr at the last step (the decay phase is what a continued run re-does).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    min_lr = config.lr * config.min_lr_ratio
    if config.schedule == "wsd":
        decay_steps = max(1, round(config.decay_fraction * total_steps))
        decay_start = max(config.warmup_steps, total_steps - decay_steps)
        if step < decay_start:
            return config.lr
        progress = min(1.0, (step - decay_start + 1) / (total_steps - decay_start))
        return config.lr - progress * (config.lr - min_lr)
    decay_steps = max(1, total_steps - 1 - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - min_lr)


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


def make_optimizer(model: torch.nn.Module, config: TrainConfig, fused: bool) -> torch.optim.AdamW:
    # nanoGPT rule: decay every matrix (linear weights and the tied embedding), not the 1-D
    # RMSNorm gains (Llama has no biases).
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)


def flops_per_token(model_config: Any, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward (PaLM appendix B; nanoGPT's estimate_mfu):

        6 * N  +  12 * L * d_attn * T

    N counts the weights that take part in a matmul: per layer the q, k, v, o projections and the
    gate/up/down MLP, plus the LM head (vocab x hidden; with tied embeddings that is the embedding
    matrix once, the lookup itself being free). RMSNorm gains are negligible and left out. Each
    such weight costs 2 FLOPs per token forward and 4 backward, hence 6N. The second term is
    attention over the context: QK^T and scores @ V each take 2 * T * d_attn FLOPs per token and
    layer forward, times 3 with backward; d_attn = n_heads * head_dim, T = seq_len, counted for the
    full T x T score matrix (no discount for the causal mask), as PaLM and nanoGPT do.
    """
    c = model_config
    hidden, layers, heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o + k, v
    mlp = 3 * hidden * c.intermediate_size  # gate, up, down
    n = layers * (attn + mlp) + c.vocab_size * hidden
    return float(6 * n + 12 * layers * heads * head_dim * seq_len)


def known_peak_flops(device: torch.device, bf16: bool) -> float | None:
    """Dense bf16 peak of a known CUDA GPU (PEAK_BF16_FLOPS), else None (CPU, fp32, unknown)."""
    import torch

    if device.type != "cuda" or not bf16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def save_checkpoint(
    model: LlamaForCausalLM, data_dir: Path, meta: dict[str, Any], ckpt: Path
) -> None:
    """Model (safetensors) and tokenizer side by side, loadable with the Auto* classes."""
    from transformers import PreTrainedTokenizerFast

    ckpt.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(ckpt)  # safetensors is the only format in transformers 5
    eos = meta["eos_token"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(data_dir / "tokenizer.json"),
        eos_token=eos,
        bos_token=eos,
        pad_token=eos,
    )
    tokenizer.save_pretrained(ckpt)


# ----------------------------------------------------------------------------- resumable state
# out_dir/checkpoints/step-<N>/ holds what `save_checkpoint` writes (so it can be evaluated like
# the final one) plus the training state, without pickle:
#   train_state.safetensors  optimizer state per param index ("optim.<i>.exp_avg", ".exp_avg_sq",
#                            ".step") and RNG states ("rng.torch_cpu", "rng.torch_cuda") as uint8
#   train_state.json         step, tokens, loss, lr and total steps, data position (epoch, index),
#                            elapsed time, numpy/python RNG, optimizer groups, config and data hash
#   COMPLETE                 written last; a step dir without it is never resumed from
# Each dir is written under a temporary name and renamed into place once complete.
CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def run_identity(config: TrainConfig, meta: dict[str, Any]) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the trajectory config and the data's meta."""
    return {"config_hash": _digest(config.trajectory()), "data_hash": _digest(meta)}


def complete_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of the fully written resumable checkpoints under out_dir, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    found = []
    for d in root.glob("step-*"):
        step = d.name.removeprefix("step-")
        if step.isdigit() and (d / COMPLETE).is_file():
            found.append((int(step), d))
    return sorted(found)


def _write_dir(final: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) into a temporary sibling dir, then swap it in for `final` by renames, so a
    reader (or a killed process) never sees a half-written `final`."""
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    for d in (tmp, old):
        shutil.rmtree(d, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _remove_temp_dirs(out_dir: Path) -> None:
    """Leftovers of a process killed in the middle of _write_dir."""
    for root in (out_dir, out_dir / CHECKPOINTS):
        for d in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
            shutil.rmtree(d, ignore_errors=True)


def _rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.torch_cuda"] = torch.cuda.get_rng_state(device)
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return tensors, {
        "numpy": {"keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }


def _set_rng_state(
    tensors: dict[str, torch.Tensor], saved: dict[str, Any], device: torch.device
) -> None:
    import torch

    torch.set_rng_state(tensors["rng.torch_cpu"])
    if device.type == "cuda" and "rng.torch_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.torch_cuda"], device)
    n = saved["numpy"]
    keys = np.array(n["keys"], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    p = saved["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def save_train_state(
    ckpt: Path,
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    device: torch.device,
    data_dir: Path,
    meta: dict[str, Any],
) -> None:
    """One resumable checkpoint into the (temporary) dir `ckpt`; COMPLETE is written last."""
    from safetensors.torch import save_file

    save_checkpoint(model, data_dir, meta, ckpt)
    opt = optimizer.state_dict()
    tensors = {
        f"optim.{i}.{name}": t.detach().cpu().contiguous()
        for i, per_param in opt["state"].items()
        for name, t in per_param.items()
    }
    rng_tensors, rng_json = _rng_state(device)
    tensors.update(rng_tensors)
    save_file(tensors, ckpt / "train_state.safetensors")
    groups = [{**g, "betas": list(g["betas"])} for g in opt["param_groups"]]
    state = {**state, "optimizer_groups": groups, "rng": rng_json}
    (ckpt / "train_state.json").write_text(json.dumps(state, indent=1))
    (ckpt / COMPLETE).write_text("")


def read_train_state(ckpt: Path, config: TrainConfig, identity: dict[str, str]) -> dict[str, Any]:
    """The JSON half of a checkpoint; ValueError if it belongs to another config or data."""
    state = json.loads((ckpt / "train_state.json").read_text())
    if state["config_hash"] != identity["config_hash"]:
        old, new = state["config"], config.trajectory()
        diff = ", ".join(
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        )
        raise ValueError(
            f"{ckpt} was written with another train config ({diff}); resume with the same "
            "config or train into a fresh out_dir"
        )
    if state["data_hash"] != identity["data_hash"]:
        raise ValueError(
            f"{ckpt} was trained on other data (meta.json differs); resume on the same data "
            "directory or train into a fresh out_dir"
        )
    return state


def load_train_state(
    ckpt: Path,
    state: dict[str, Any],
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> None:
    """Weights, optimizer moments and RNG states of checkpoint `ckpt` into the live objects."""
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{ckpt}: weights do not fit the model ({missing=}, {unexpected=})")

    tensors = load_file(ckpt / "train_state.safetensors")
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            per_param.setdefault(int(i), {})[name] = t
    current = optimizer.state_dict()["param_groups"]
    groups = []
    for saved, cur in zip(state["optimizer_groups"], current, strict=True):
        # hyperparameters from the checkpoint; implementation choices from this process
        impl = {k: cur[k] for k in ("foreach", "fused", "capturable") if k in cur}
        groups.append({**saved, "betas": tuple(saved["betas"]), **impl})
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    _set_rng_state(tensors, state["rng"], device)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (and no torn last line); the resumed run appends."""
    keep = []
    if path.exists():
        for line in path.read_text().splitlines(keepends=True):
            try:
                if not line.endswith("\n") or json.loads(line)["step"] > step:
                    break
            except (json.JSONDecodeError, KeyError, TypeError):
                break
            keep.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def _prune_checkpoints(out_dir: Path, keep: int) -> None:
    """Keep the `keep` newest complete checkpoints; drop older ones and incomplete step dirs."""
    complete = complete_checkpoints(out_dir)
    doomed = [d for _, d in complete[: max(0, len(complete) - keep)]]
    doomed += [d for d in (out_dir / CHECKPOINTS).glob("step-*") if not (d / COMPLETE).is_file()]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- continual
# A previous run's model to continue from. Resolved in the flow process (it reads the catalog)
# and handed to train() in the Ray actor; a later refresh flow calls resolve_init the same way.
INIT_INFO = "datamill.json"  # written into the final checkpoint: where its training data lives


@dataclass(frozen=True)
class InitSource:
    checkpoint: Path  # a save_pretrained folder: model.safetensors, config.json, tokenizer
    data_dir: Path | None  # the tokenized data it was trained on (replay), when known
    identity: str  # content address: the run's train stage version, or a hash of the weights
    run_id: str | None = None

    @property
    def tokenizer(self) -> Path:
        """The tokenizer.json to reuse: the tokenize stage's own file when the data is known
        (byte-identical to the original), else the checkpoint's copy."""
        if self.data_dir is not None and (self.data_dir / "tokenizer.json").is_file():
            return self.data_dir / "tokenizer.json"
        return self.checkpoint / "tokenizer.json"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def resolve_init(ref: str, data_root: Path | None = None, seed: int | None = None
                 ) -> InitSource:
    """`init_from` -> InitSource. `ref` is a save_pretrained folder (has config.json), or a run
    id looked up in `<data_root>/catalog.duckdb`: that run's final train checkpoint (the one
    trained with `seed` when the run trained several) and its tokenize stage's data."""
    folder = Path(ref).expanduser()
    if (folder / "config.json").is_file():
        folder = folder.resolve()
        data_dir = None
        if (folder / INIT_INFO).is_file():
            rel = json.loads((folder / INIT_INFO).read_text())["data_dir"]
            cand = (folder / rel).resolve()
            data_dir = cand if (cand / "meta.json").is_file() else None
        return InitSource(folder, data_dir, _file_digest(folder / "model.safetensors"))
    if data_root is None:
        raise ValueError(f"init_from {ref!r}: not a save_pretrained folder (no config.json), "
                         "and no data root to look it up as a run id")
    from tasks.catalog import Catalog

    data_root = Path(data_root)
    catalog = data_root / "catalog.duckdb"
    if not catalog.is_file():
        raise ValueError(f"init_from {ref!r}: not a checkpoint folder, and no catalog at "
                         f"{catalog} to look it up as a run id")
    with Catalog(catalog).connect(read_only=True) as con:
        rows = con.execute("SELECT stage, version FROM stages WHERE run_id = ? AND stage IN "
                           "('tokenize', 'train') ORDER BY rowid", [ref]).fetchall()
    trains = [v for st, v in rows if st == "train"]
    toks = [v for st, v in rows if st == "tokenize"]
    if not trains:
        raise ValueError(f"init_from {ref!r}: no such run in {catalog}, or it trained no model "
                         "(a run id or a save_pretrained folder is expected)")
    stage = data_root / "stages" / "train"
    chosen = trains[0]
    for v in dict.fromkeys(trains):
        manifest = stage / v / "manifest.json"
        if seed is not None and manifest.is_file() and \
                json.loads(manifest.read_text())["config"].get("seed") == seed:
            chosen = v
            break
    ckpt = stage / chosen / "checkpoint"
    if not (ckpt / "model.safetensors").is_file():
        raise ValueError(f"init_from {ref!r}: its checkpoint {ckpt} is missing")
    data_dir = data_root / "stages" / "tokenize" / toks[-1] if toks else None
    if data_dir is not None and not (data_dir / "meta.json").is_file():
        data_dir = None
    return InitSource(ckpt, data_dir, chosen, run_id=ref)


def _vocab(path: Path) -> dict[str, int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)


def load_init_model(init: InitSource, preset: str, meta: dict[str, Any], data_dir: Path
                    ) -> LlamaForCausalLM:
    """The init checkpoint's model, after checking it fits this run's preset and tokens."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(
        init.checkpoint, local_files_only=True, attn_implementation="sdpa", dtype=torch.float32)
    c = model.config
    diff = {k: (getattr(c, k, None), v) for k, v in PRESETS[preset].items()
            if getattr(c, k, None) != v}
    if diff:
        shown = ", ".join(f"{k} {a} (preset: {b})" for k, (a, b) in diff.items())
        raise ValueError(f"init_from {init.checkpoint}: not a {preset!r} model ({shown}); set "
                         "train.preset to the init model's")
    if c.vocab_size != meta["vocab_size"]:
        raise ValueError(f"init_from {init.checkpoint}: vocabulary {c.vocab_size}, but the data "
                         f"was tokenized with {meta['vocab_size']}; tokenize with the init run's "
                         "tokenizer (the flow does this for init_from)")
    if _vocab(init.checkpoint / "tokenizer.json") != _vocab(data_dir / "tokenizer.json"):
        raise ValueError(f"init_from {init.checkpoint}: the data in {data_dir} was tokenized "
                         "with another tokenizer of the same size")
    if c.max_position_embeddings < meta["seq_len"]:
        raise ValueError(f"init_from {init.checkpoint}: trained for {c.max_position_embeddings} "
                         f"positions, the data has rows of {meta['seq_len']}")
    return model


def average_checkpoints(dirs: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the model.safetensors of `dirs` (accumulated in float64)."""
    from safetensors.torch import load_file

    if not dirs:
        raise ValueError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    dtypes = {}
    for d in dirs:
        for k, t in load_file(Path(d) / "model.safetensors").items():
            dtypes[k] = t.dtype
            total[k] = total[k] + t.double() if k in total else t.double()
    return {k: (t / len(dirs)).to(dtypes[k]) for k, t in total.items()}


def _load_weights(model: LlamaForCausalLM, weights: dict[str, torch.Tensor], where: Any) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{where}: weights do not fit the model ({missing=}, {unexpected=})")


# ----------------------------------------------------------------------------- training
def _dist() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised (Ray Train's DDP)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def train(
    config: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    metrics_path: Path | None = None,
    progress: bool = False,
    init: InitSource | None = None,
) -> dict[str, Any]:
    """Train one proxy model into out_dir/checkpoint and return a summary (also written to
    out_dir/summary.json).

    If out_dir holds resumable checkpoints from an earlier, interrupted call (same config and
    data, else ValueError), training continues from the newest complete one and the metrics file
    keeps its lines up to that step; otherwise training starts fresh (from `init`'s weights with
    config.init_from, resolved from the path when not given) and the metrics file is rewritten.

    Under torch.distributed (DDP), every rank runs this: each takes its share of every batch,
    rank 0 alone writes metrics and checkpoints.
    """
    import torch

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    rank, world = _dist()
    meta = json.loads((data_dir / "meta.json").read_text())
    data = PackedSequences(data_dir, meta)
    seq_len = data.seq_len
    steps = config.total_steps(seq_len)
    tokens_per_step = config.tokens_per_step(seq_len)
    identity = run_identity(config, meta)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} workers")
    per_rank = config.batch_size // world

    if config.init_from and init is None:
        init = resolve_init(config.init_from)
    replay_dir = None
    if init is not None and config.replay > 0:
        replay_dir = Path(config.replay_data) if config.replay_data else init.data_dir
        if replay_dir is None:
            raise ValueError(f"replay {config.replay}: the data {init.checkpoint} was trained "
                             "on is unknown; set train.replay_data to a tokenized data dir or "
                             "train.replay: 0")
        replay_meta = json.loads((replay_dir / "meta.json").read_text())
        if replay_meta["vocab_size"] != meta["vocab_size"]:
            raise ValueError(f"replay data {replay_dir}: vocabulary {replay_meta['vocab_size']}, "
                             f"this run's {meta['vocab_size']}")
        if not len(data.add(replay_dir, replay_meta, REPLAY)):
            raise ValueError(f"replay data {replay_dir} has no training rows")
    pools, probs = mixture_pools(data, config, replay=replay_dir is not None)

    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())  # set by Ray Train per rank
    use_bf16 = config.dtype == "bf16" or (config.dtype == "auto" and device.type == "cuda")
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    )

    # seed every global RNG: torch draws the model init; the data order has its own generator
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    if init is not None:
        model = load_init_model(init, config.preset, meta, data_dir)
    else:
        model = build_model(config.preset, meta["vocab_size"], seq_len, meta["eos_id"])
    model = model.to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    optimizer = make_optimizer(model, config, fused=device.type == "cuda")
    order = Mixture(pools, config.seed)

    # carry on from the newest complete checkpoint an earlier (killed) call left behind
    if rank == 0:
        _remove_temp_dirs(out_dir)
    _barrier(world)
    start, resumed_from, loss_value, elapsed_before = 0, None, float("nan"), 0.0
    if saved := complete_checkpoints(out_dir):
        start, ckpt = saved[-1]
        state = read_train_state(ckpt, config, identity)  # refuses another config or data
        load_train_state(ckpt, state, model, optimizer, device)
        order = Mixture(pools, config.seed, state["data_order"])
        loss_value, elapsed_before, resumed_from = state["loss"], state["elapsed_s"], start
        log.info("resuming %s from step %d of %d", out_dir, start, steps)
    fwd: Any = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        fwd = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        fwd = torch.compile(fwd)

    metrics_file = None
    if metrics_path is not None and rank == 0:
        metrics_path = Path(metrics_path)
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_from is None:
            metrics_file = metrics_path.open("w")  # a fresh run replaces the file
        else:
            _truncate_metrics(metrics_path, start)  # drop steps the checkpoint does not cover
            metrics_file = metrics_path.open("a")

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=f"train {config.preset}", unit="step")

    t0 = time.perf_counter() - elapsed_before  # elapsed_s counts all attempts' training time
    try:
        for step in range(start, steps):
            lr = lr_at(step, steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            p = probs(step, steps)

            loss_sum = torch.zeros((), device=device)
            for micro in range(config.grad_accum):
                # every rank draws the same global batch and keeps its slice of it
                rows = order.take(config.batch_size, p, step, micro)
                batch = data.get(rows[rank * per_rank:(rank + 1) * per_rank])
                input_ids = torch.from_numpy(batch).to(device, non_blocking=True)
                # DDP: all-reduce the gradients once, on the last micro-batch
                sync = world == 1 or micro == config.grad_accum - 1
                with nullcontext() if sync else fwd.no_sync():
                    with autocast:
                        # labels = inputs: the model shifts them internally for next-token loss
                        loss = fwd(input_ids=input_ids, labels=input_ids, use_cache=False).loss
                    # scale so the accumulated gradient is the mean over micro-batches
                    (loss / config.grad_accum).backward()
                loss_sum += loss.detach()

            # returns the norm before clipping; an infinite max norm only measures it
            max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            last = done == steps
            log_now = done % config.log_every == 0 or last
            every = config.checkpoint_every
            save_now = every > 0 and (done % every == 0 or last)
            if log_now or save_now:
                if world > 1:  # the mean over ranks is the global batch's loss
                    import torch.distributed as dist

                    dist.all_reduce(loss_sum)
                    loss_sum /= world
                # .item() syncs the device, so only on logging and checkpoint steps
                loss_value = loss_sum.item() / config.grad_accum
                elapsed = time.perf_counter() - t0
            if log_now and rank == 0:
                record = {
                    "step": done,
                    "loss": loss_value,
                    "lr": lr,
                    "grad_norm": grad_norm.item(),
                    "tokens": done * tokens_per_step,
                    "tokens_per_s": done * tokens_per_step / elapsed,
                    "elapsed_s": elapsed,
                }
                if metrics_file is not None:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()  # so a watcher can tail the file live
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            if save_now and rank == 0:
                state = {
                    "step": done,
                    "tokens": done * tokens_per_step,
                    "loss": loss_value,
                    "lr": lr,
                    "total_steps": steps,
                    "data_order": order.state(),
                    "elapsed_s": elapsed,
                    **identity,
                    "config": config.trajectory(),
                }
                _write_dir(
                    out_dir / CHECKPOINTS / f"step-{done}",
                    lambda tmp, state=state: save_train_state(
                        tmp, model, optimizer, state, device, data_dir, meta
                    ),
                )
                _prune_checkpoints(out_dir, config.keep_checkpoints)
            if bar is not None:
                bar.update(1)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0

    averaged: list[int] = []
    if config.average_last > 1 and rank == 0:
        # the last k checkpoints (the final step is one): their mean is the final model
        last_k = complete_checkpoints(out_dir)[-config.average_last:]
        averaged = [s for s, _ in last_k]
        _load_weights(model, average_checkpoints([d for _, d in last_k]), out_dir)

    ckpt = out_dir / "checkpoint"
    tokens = steps * tokens_per_step
    fpt = flops_per_token(model.config, seq_len)
    model_flops_per_s = fpt * tokens / seconds
    peak = config.peak_flops or known_peak_flops(device, use_bf16)
    summary = {
        "steps": steps,
        "tokens": tokens,
        "final_loss": loss_value,
        "params": n_params,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "flops_per_token": fpt,
        "model_flops_per_s": model_flops_per_s,
        "peak_flops": peak,
        "mfu": model_flops_per_s / peak if peak else None,
        "checkpoint": str(ckpt),
        "resumed_from_step": resumed_from,
        "seed": config.seed,
        "workers": world,
        "init_from": str(init.checkpoint) if init is not None else None,
        "replay_data": str(replay_dir) if replay_dir is not None else None,
        "averaged_steps": averaged,
        **identity,
    }
    if rank == 0:
        info = {"data_dir": os.path.relpath(data_dir.resolve(), ckpt.resolve()),
                "init_from": summary["init_from"], "steps": steps, "tokens": tokens,
                "averaged_steps": averaged, "seed": config.seed}

        def write_final(tmp: Path) -> None:
            save_checkpoint(model, data_dir, meta, tmp)
            (tmp / INIT_INFO).write_text(json.dumps(info, indent=1))

        _write_dir(ckpt, write_final)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    _barrier(world)
    return summary


def train_seeds(
    config: TrainConfig,
    seeds: list[int],
    data_dir: Path,
    out_dir: Path,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One proxy per seed, sequentially, each in out_dir/seed-<s>/ (checkpoint/, metrics.jsonl,
    checkpoints/) so that each run resumes on its own. Returns train()'s summaries in seed order.
    """
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds: {seeds}")
    out_dir = Path(out_dir)
    summaries = []
    for seed in seeds:
        run_config = TrainConfig.model_validate({**config.model_dump(), "seed": seed})
        run_dir = out_dir / f"seed-{seed}"
        summaries.append(train(run_config, data_dir, run_dir, run_dir / "metrics.jsonl", progress))
    return summaries
