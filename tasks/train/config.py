"""The train config: model-size presets and `TrainConfig`, the recipe's `train:` section.

Torch-free: tasks/recipe.py imports this for validation alone.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.identity import OPERATIONAL, identity, is_operational

from .options import MixingConfig, MixTemperature, OrderConfig, StabilityConfig

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

# checkpoints averaged by default with a curriculum (order)
CURRICULUM_AVERAGE = 6

# Fields that change what is logged or saved, not the weights: a resumed run may use other values
# (say, checkpoint more often after a crash) and still continue the same trajectory.
# `workers` splits the same global batch over processes: the same trajectory up to float
# summation order.

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
    schedule: Literal["cosine", "wsd", "constant"] = Field(
        "cosine", description="after warmup: cosine decay, warmup-stable-decay (constant lr, "
        "then a linear decay over the last decay_fraction of steps), or constant (no decay; "
        "the default with order)")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of steps that decay")
    weight_decay: float = Field(0.1, ge=0, description="AdamW, on 2-D weights only")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="max grad norm; 0 disables clipping")
    seed: int = Field(0, description="model init and data order")
    log_every: Annotated[int, OPERATIONAL] = Field(5, ge=1,
                                                   description="steps between metrics lines")
    device: str = Field("auto", description="auto = cuda if available, else cpu")
    dtype: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on cuda, else fp32")
    compile: bool = Field(False, description="torch.compile the model")
    seeds: Annotated[list[int], OPERATIONAL] = Field(
        default_factory=list,
        description="train one proxy per seed (seed noise for comparisons); empty = [seed]")
    checkpoint_every: Annotated[int, OPERATIONAL] = Field(
        0, ge=0, description="steps between resumable checkpoints (checkpoints/step-N/, and the "
        "last step); 0 = none, only the final checkpoint/")
    keep_checkpoints: Annotated[int, OPERATIONAL] = Field(
        2, ge=1, description="newest resumable checkpoints kept; older ones are deleted")
    peak_flops: Annotated[float | None, OPERATIONAL] = Field(
        None, gt=0, description="peak FLOP/s of the device for MFU; None = a known GPU's bf16 "
        "peak, else no MFU")
    workers: Annotated[int, OPERATIONAL] = Field(
        1, ge=1, description="data-parallel workers: > 1 runs Ray Train's TorchTrainer (DDP, "
        "CPU or one GPU each); 1 = one Ray task, or DDP over all GPUs when there are several")
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
        "the final one (needs checkpoint_every and keep_checkpoints >= k); 0 or 1 = off; "
        f"{CURRICULUM_AVERAGE} by default with order")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on the embeddings, attention weights and each "
        "block's attention and MLP outputs while training (multi-epoch runs: 'To Repeat or Not "
        "To Repeat'); 0 = none")
    max_epochs: float | dict[str, float] | None = Field(
        None, description="cap on the epochs each source is seen: one number for every source, "
        "or per source ({wikipedia: 2}; unlisted = no cap); null = no cap")
    on_max_epochs: Literal["downweight", "stop"] = Field(
        "downweight", description="a capped source about to exceed max_epochs: downweight it "
        "(the others renormalised), or stop training before it would")
    source_loss_weights: dict[str, float] = Field(
        default_factory=dict, description="loss weight per source (upweighting instead of "
        "upsampling; unlisted = 1), e.g. {python-docs: 3.0}")
    mix_temperature: MixTemperature | None = Field(
        None, description="temperature sampling p_s ~ n_s^(1/T), T moving from start to end "
        "over training; null = natural proportions")
    mixing: MixingConfig | None = Field(
        None, description="online data mixing ({method: aioli}); null = fixed proportions")
    order: OrderConfig | None = Field(
        None, description="curriculum: rows in the order of a per-row score ({by: COLUMN}); "
        "null = shuffled")
    stability: StabilityConfig | None = Field(
        None, description="with init_from: train on the top rows of the new data by a score "
        "for several epochs, and record the old-domain loss over the first steps ({by: "
        "COLUMN}); null = off")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; known: {sorted(PRESETS)}")
        return v

    @field_validator("source_weights", "anneal_source_weights", "source_loss_weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not w >= 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        return v

    @field_validator("max_epochs")
    @classmethod
    def _positive_caps(cls, v: float | dict[str, float] | None) -> Any:
        caps = v.values() if isinstance(v, dict) else [] if v is None else [v]
        if any(not c > 0 for c in caps):
            raise ValueError(f"max_epochs must be > 0, got {v}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _curriculum_defaults(cls, data: Any) -> Any:
        """The remedy of 'How Learning Rate Decay Wastes Your Best Data' paired with a
        curriculum: a constant lr and the average of the last checkpoints, unless set."""
        if isinstance(data, dict) and data.get("order") is not None:
            data = {"schedule": "constant", "average_last": CURRICULUM_AVERAGE, **data}
            if int(data["average_last"]) > 1:
                data.setdefault("keep_checkpoints", data["average_last"])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.batch_size % self.workers:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by workers "
                             f"{self.workers}")
        if self.average_last > 1 and (self.checkpoint_every == 0
                                      or self.keep_checkpoints < self.average_last):
            why = (" (order averages the last checkpoints by default; average_last: 0 turns "
                   "that off)" if self.order is not None else "")
            raise ValueError(f"average_last {self.average_last} needs checkpoint_every > 0 and "
                             f"keep_checkpoints >= {self.average_last}{why}")
        if self.mixing is not None:
            if self.on_max_epochs == "stop" and self.max_epochs is not None:
                raise ValueError("mixing keeps sources under max_epochs by down-weighting them; "
                                 "on_max_epochs: stop needs fixed proportions (no mixing)")
            if self.mix_temperature is not None or self.anneal_source_weights:
                raise ValueError("mixing sets the proportions itself: drop mix_temperature and "
                                 "anneal_source_weights")
        if self.stability is not None:
            self._check_stability(self.stability)
        return self

    def _check_stability(self, st: StabilityConfig) -> None:
        if not self.init_from:
            raise ValueError("stability is for continual pre-training: it needs init_from (the "
                             "run whose model and old data it starts from)")
        if st.by is None:
            return
        if self.order is not None and self.order.by != st.by:
            raise ValueError(f"order.by {self.order.by!r} and stability.by {st.by!r} differ: "
                             "tokenize carries one row-score column per run")
        if self.per_source():
            raise ValueError("stability.by draws the new data from one pool (its top rows): "
                             "drop source_weights, anneal_source_weights, mix_temperature, "
                             "mixing and max_epochs")

    def selects_subset(self) -> bool:
        """Whether the new data is cut to its top rows (stability.by)."""
        return self.stability is not None and self.stability.by is not None

    def versioned(self) -> dict[str, Any]:
        """The train stage's versioned config (tasks/identity.py), `stability` only when it
        selects a subset: its probes only measure, so a recipe without one keeps its version."""
        out = identity(self)
        if not self.selects_subset():
            out.pop("stability")
        return out

    def cap(self, source: str) -> float | None:
        """max_epochs of one source (None = no cap)."""
        if isinstance(self.max_epochs, dict):
            return self.max_epochs.get(source)
        return self.max_epochs

    def per_source(self) -> bool:
        """Whether rows are drawn from one pool per source (any per-source sampling feature)."""
        return bool(self.source_weights or self.anneal_source_weights or self.mix_temperature
                    or self.mixing or self.max_epochs is not None)

    def tokens_per_step(self, seq_len: int) -> int:
        return self.batch_size * seq_len * self.grad_accum

    def total_steps(self, seq_len: int) -> int:
        return max(1, self.max_tokens // self.tokens_per_step(seq_len))

    def per_seed(self) -> list[TrainConfig]:
        """One config per proxy to train: ``seeds`` expanded into ``seed``."""
        return [self.model_copy(update={"seed": s, "seeds": []})
                for s in (self.seeds or [self.seed])]

    def trajectory(self) -> dict[str, Any]:
        """The fields that decide the trained weights: a run may only resume if these match
        (stability as in `versioned`: its probes may change on resume)."""
        out = self.model_dump(exclude=BOOKKEEPING_FIELDS | {"stability"})
        if self.selects_subset():
            out["stability"] = identity(self.stability)
        return out


# how often to log / checkpoint, how many seeds and workers: not what one seed's model is
BOOKKEEPING_FIELDS = frozenset(n for n in TrainConfig.model_fields
                               if is_operational(TrainConfig, n))


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then the decay.

    Warmup reaches the peak lr at step warmup_steps - 1. constant: stays there. cosine: falls
    from lr at step warmup_steps to min_lr_ratio * lr at the last step (total_steps - 1). wsd:
    holds the peak, then over the last round(decay_fraction * total_steps) steps falls
    linearly, reaching min_lr_ratio * lr at the last step (the decay phase is what a continued
    run re-does).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
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
