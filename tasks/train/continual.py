"""Continual pre-training: the previous run's model to start from, and its data to replay.

`init_from` is a run id or a save_pretrained folder; `resolve_init` turns it into an InitSource
(resolved in the flow process, which reads the catalog, and handed to train() in the Ray actor;
a later refresh flow calls it the same way). The model starts from that checkpoint, the LR
re-warms to a new peak and re-decays, and `replay` of each batch is drawn from the previous
run's token shards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import PRESETS, TrainConfig
from .data import REPLAY, PackedSequences

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

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
    rows = Catalog(catalog).stage_versions(ref, ["tokenize", "train"])
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


def add_replay(data: PackedSequences, meta: dict[str, Any], config: TrainConfig,
               init: InitSource | None) -> Path | None:
    """Append the rows to replay (config.replay_data, else the init run's own data) to `data`
    under the REPLAY prefix; returns their dir, or None without init or replay."""
    if init is None or config.replay <= 0:
        return None
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
    return replay_dir
