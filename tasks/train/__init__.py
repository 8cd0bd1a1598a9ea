"""Train a small Llama-style proxy LM on a tokenized data directory.

One readable loop in the spirit of nanoGPT (`loop.train`) over seeded, source-weighted data
(`data`, `mixing`; online mixing: `aioli`; epochs and max_epochs caps: `repetition`; a
quality-ordered curriculum: `curriculum`; the stability gap's subset: `stability`; all
prepared by `sampling`), writing a Hugging Face checkpoint that `AutoModelForCausalLM` /
`AutoTokenizer` load offline. Continual
pre-training (`init_from`, `continual`) starts from a previous run's model and replays its
data; `average_last` averages the last k checkpoints into the final one. With
`checkpoint_every` the run is resumable (`checkpoint`): a later `train()` on the same out_dir
carries on from the newest complete checkpoint, giving the same losses and weights as an
uninterrupted run.

Input: the directory written by tasks/tokenize.py (tokenizer.json, meta.json, .npy shards of
shape (n_seq, seq_len)). Same config + same data => identical losses on CPU.

torch and transformers are imported inside the functions that use them, so importing this package
for TrainConfig alone (recipe validation in the CLI) stays fast and torch-free.
"""

from .checkpoint import (
    CHECKPOINTS,
    COMPLETE,
    average_checkpoints,
    complete_checkpoints,
    load_train_state,
    read_train_state,
    run_identity,
    save_checkpoint,
    save_train_state,
)
from .config import BOOKKEEPING_FIELDS, PRESETS, TrainConfig, lr_at
from .continual import INIT_INFO, InitSource, load_init_model, resolve_init
from .data import REPLAY, Allocator, DataOrder, Mixture, PackedSequences, sequence_order
from .loop import train, train_seeds
from .mixing import mixture_pools
from .model import (
    PEAK_BF16_FLOPS,
    build_model,
    flops_per_token,
    known_peak_flops,
    make_optimizer,
    resolve_device,
)
from .options import MixingConfig, MixTemperature, OrderConfig, StabilityConfig
from .repetition import epochs_table
from .sampling import prepare

__all__ = [
    "BOOKKEEPING_FIELDS",
    "CHECKPOINTS",
    "COMPLETE",
    "INIT_INFO",
    "PEAK_BF16_FLOPS",
    "PRESETS",
    "REPLAY",
    "Allocator",
    "DataOrder",
    "InitSource",
    "MixTemperature",
    "MixingConfig",
    "Mixture",
    "OrderConfig",
    "PackedSequences",
    "StabilityConfig",
    "TrainConfig",
    "average_checkpoints",
    "build_model",
    "complete_checkpoints",
    "epochs_table",
    "flops_per_token",
    "known_peak_flops",
    "load_init_model",
    "load_train_state",
    "lr_at",
    "make_optimizer",
    "mixture_pools",
    "prepare",
    "read_train_state",
    "resolve_device",
    "resolve_init",
    "run_identity",
    "save_checkpoint",
    "save_train_state",
    "sequence_order",
    "train",
    "train_seeds",
]
