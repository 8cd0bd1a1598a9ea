"""Train a small Llama-style proxy LM on a tokenized data directory.

One readable loop in the spirit of nanoGPT: seeded data order, AdamW, linear warmup then cosine
decay, gradient clipping and accumulation, JSONL metrics, and a Hugging Face checkpoint
(safetensors + tokenizer) that `AutoModelForCausalLM` / `AutoTokenizer` load offline.

Input: the directory written by tasks/tokenize.py (tokenizer.json, meta.json, .npy shards of
shape (n_seq, seq_len)). Same config + same data => identical losses on CPU.

torch and transformers are imported inside the functions that use them, so importing this module
for TrainConfig alone (recipe validation in the CLI) stays fast and torch-free.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

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
}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str = Field("tiny", description="model size: tiny (CPU) | small | 20m | 125m (GPU)")
    batch_size: int = Field(16, ge=1, description="sequences per micro-batch")
    max_tokens: int = Field(400_000, ge=1, description="token budget; sets the optimizer steps")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(3e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to this * lr")
    warmup_steps: int = Field(20, ge=0, description="linear warmup steps")
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

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; known: {sorted(PRESETS)}")
        return v

    def tokens_per_step(self, seq_len: int) -> int:
        return self.batch_size * seq_len * self.grad_accum

    def total_steps(self, seq_len: int) -> int:
        return max(1, self.max_tokens // self.tokens_per_step(seq_len))


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
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay.

    Warmup reaches the peak lr at step warmup_steps - 1; the cosine then falls from lr at step
    warmup_steps to min_lr_ratio * lr at the last step (total_steps - 1).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    min_lr = config.lr * config.min_lr_ratio
    decay_steps = max(1, total_steps - 1 - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - min_lr)


class PackedSequences:
    """All training rows of a data directory, addressed by one global index (mmap, no copies)."""

    def __init__(self, data_dir: Path, meta: dict[str, Any]):
        self.seq_len: int = meta["seq_len"]
        self.shards: list[np.ndarray] = []
        for shard in meta["train_shards"]:
            arr = np.load(data_dir / shard["path"], mmap_mode="r", allow_pickle=False)
            if arr.ndim != 2 or arr.shape[1] != self.seq_len or arr.shape[0] != shard["n_seq"]:
                raise ValueError(
                    f"{shard['path']}: shape {arr.shape}, meta says ({shard['n_seq']}, "
                    f"{self.seq_len})"
                )
            self.shards.append(arr)
        # starts[i] = global index of shard i's first row
        self.starts = np.cumsum([0] + [len(a) for a in self.shards])
        if len(self) == 0:
            raise ValueError(f"{data_dir}: no training sequences")

    def __len__(self) -> int:
        return int(self.starts[-1])

    def get(self, indices: list[int]) -> np.ndarray:
        """Rows at global `indices` as an int64 (len(indices), seq_len) array."""
        shard_ids = np.searchsorted(self.starts, indices, side="right") - 1
        rows = [self.shards[s][i - self.starts[s]] for s, i in zip(shard_ids, indices, strict=True)]
        return np.stack(rows).astype(np.int64)


def sequence_order(n: int, seed: int) -> Iterator[int]:
    """Global sequence indices: a fresh seeded permutation per epoch, epochs concatenated."""
    for epoch in itertools.count():
        yield from np.random.default_rng([seed, epoch]).permutation(n).tolist()


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


def train(
    config: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    metrics_path: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    import torch

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    meta = json.loads((data_dir / "meta.json").read_text())
    data = PackedSequences(data_dir, meta)
    seq_len = data.seq_len
    steps = config.total_steps(seq_len)
    tokens_per_step = config.tokens_per_step(seq_len)

    device = resolve_device(config.device)
    use_bf16 = config.dtype == "bf16" or (config.dtype == "auto" and device.type == "cuda")
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    )

    # seed everything that draws random numbers: model init (torch) and data order (numpy rng)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    model = build_model(config.preset, meta["vocab_size"], seq_len, meta["eos_id"]).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    optimizer = make_optimizer(model, config, fused=device.type == "cuda")
    fwd = torch.compile(model) if config.compile else model
    order = sequence_order(len(data), config.seed)

    metrics_file = None
    if metrics_path is not None:
        metrics_path = Path(metrics_path)
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_file = metrics_path.open("w")  # one run per file: a rerun replaces it

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"train {config.preset}", unit="step")

    loss_value = float("nan")
    t0 = time.perf_counter()
    try:
        for step in range(steps):
            lr = lr_at(step, steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr

            loss_sum = torch.zeros((), device=device)
            for _ in range(config.grad_accum):
                batch = data.get([next(order) for _ in range(config.batch_size)])
                input_ids = torch.from_numpy(batch).to(device, non_blocking=True)
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
            if done % config.log_every == 0 or last:
                # .item() syncs the device, so only on logging steps
                loss_value = loss_sum.item() / config.grad_accum
                elapsed = time.perf_counter() - t0
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
            if bar is not None:
                bar.update(1)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0

    ckpt = out_dir / "checkpoint"
    save_checkpoint(model, data_dir, meta, ckpt)
    tokens = steps * tokens_per_step
    return {
        "steps": steps,
        "tokens": tokens,
        "final_loss": loss_value,
        "params": n_params,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "checkpoint": str(ckpt),
    }
