"""tasks.train on a tiny data directory built here in the format tasks/tokenize.py writes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.train import (
    BOOKKEEPING_FIELDS,
    PRESETS,
    PackedSequences,
    TrainConfig,
    build_model,
    flops_per_token,
    lr_at,
    sequence_order,
    train,
    train_seeds,
)

CORPUS = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
EOS = "<|endoftext|>"
SEQ_LEN = 64
METRIC_KEYS = {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"}
SUMMARY_KEYS = {
    "steps", "tokens", "final_loss", "params", "seconds", "tokens_per_s", "flops_per_token",
    "model_flops_per_s", "peak_flops", "mfu", "checkpoint", "resumed_from_step", "seed",
    "config_hash", "data_hash", "workers", "init_from", "replay_data", "averaged_steps",
    "data_plan", "epochs", "mixing",
}


def make_data_dir(root: Path, n_docs: int = 200, vocab_size: int = 300, n_shards: int = 2) -> Path:
    """Byte-level BPE on the first n_docs corpus texts; EOS-separated, packed, sharded .npy."""
    if not CORPUS.exists():
        pytest.skip(f"corpus sample not found at {CORPUS}")
    with CORPUS.open() as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(n_docs), f, strict=False)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    eos_id = tok.token_to_id(EOS)

    stream: list[int] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        stream += [eos_id, *enc.ids]
    n_seq = len(stream) // SEQ_LEN
    rows = np.array(stream[: n_seq * SEQ_LEN], dtype=np.uint16).reshape(n_seq, SEQ_LEN)

    data_dir = root / "data"
    (data_dir / "train").mkdir(parents=True)
    tok.save(str(data_dir / "tokenizer.json"))
    shards = []
    for i, part in enumerate(np.array_split(rows, n_shards)):
        rel = f"train/part-{i:05d}.npy"
        np.save(data_dir / rel, part, allow_pickle=False)
        shards.append({"path": rel, "n_seq": len(part)})
    meta = {
        "vocab_size": tok.get_vocab_size(),
        "eos_id": eos_id,
        "eos_token": EOS,
        "seq_len": SEQ_LEN,
        "dtype": "uint16",
        "train_shards": shards,
    }
    (data_dir / "meta.json").write_text(json.dumps(meta))
    return data_dir


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("train"))


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def config(steps: int, **kw) -> TrainConfig:
    kw.setdefault("batch_size", 8)
    kw.setdefault("log_every", 1)
    return TrainConfig(max_tokens=steps * kw["batch_size"] * SEQ_LEN, **kw)


def test_presets_build_and_tie_embeddings():
    blocks_of = {}
    for preset in PRESETS:
        # the GPU sizes on the meta device: shapes and counts, no memory
        with torch.device("meta" if preset in ("125m", "350m", "1b") else "cpu"):
            model = build_model(preset, vocab_size=300, seq_len=SEQ_LEN, eos_id=0)
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert model.config._attn_implementation == "sdpa"
        blocks_of[preset] = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    # the names say the sizes (block parameters; embeddings add vocab x hidden)
    for preset, (lo, hi) in {"small": (4e6, 6e6), "20m": (18e6, 24e6), "125m": (80e6, 90e6),
                             "350m": (290e6, 320e6), "1b": (0.9e9, 1.0e9)}.items():
        assert lo < blocks_of[preset] < hi, (preset, blocks_of[preset])
    tiny = build_model("tiny", vocab_size=300, seq_len=SEQ_LEN, eos_id=0)
    blocks = sum(p.numel() for n, p in tiny.named_parameters() if "embed" not in n)
    assert 0.5e6 < blocks < 1.5e6
    with pytest.raises(KeyError):
        build_model("nope", 300, SEQ_LEN, 0)


def test_import_for_config_is_torch_free():
    # recipe validation imports TrainConfig in the CLI process; torch must not come with it
    code = "import sys, tasks.train; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_config_rejects_unknown_keys_and_counts_steps():
    with pytest.raises(ValueError):
        TrainConfig(learning_rate=1e-3)
    assert TrainConfig(max_tokens=10, batch_size=16).total_steps(64) == 1  # at least one
    assert TrainConfig(max_tokens=100_000, batch_size=4, grad_accum=2).total_steps(64) == 195
    for bad in [{"checkpoint_every": -1}, {"keep_checkpoints": 0}, {"peak_flops": 0}]:
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    # bookkeeping fields may change between a run and its resumption; the rest may not
    assert BOOKKEEPING_FIELDS <= set(TrainConfig.model_fields)
    base = TrainConfig()
    assert base.model_copy(update={"checkpoint_every": 5, "peak_flops": 1e12}).trajectory() == (
        base.trajectory())
    assert base.model_copy(update={"lr": 1e-4}).trajectory() != base.trajectory()


def test_flops_per_token_counts_every_matmul():
    T = SEQ_LEN
    for preset in ("tiny", "small"):
        model = build_model(preset, vocab_size=300, seq_len=T, eos_id=0)
        c = model.config
        # every 2-D parameter is a matmul weight (the tied embedding is the LM head, counted once)
        matmul = sum(p.numel() for p in model.parameters() if p.dim() == 2)
        attention = 12 * c.num_hidden_layers * c.hidden_size * T
        assert flops_per_token(c, T) == 6 * matmul + attention
    # grouped-query attention: k and v shrink, the attention term does not
    cfg = build_model("tiny", 300, T, 0).config
    full = flops_per_token(cfg, T)
    cfg.num_key_value_heads = 2
    # k and v (x2) each lose 2 heads of dim 32 on a 128-wide input, in each of 4 layers
    assert full - flops_per_token(cfg, T) == 6 * 4 * 2 * (128 * 2 * 32)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1e-3, min_lr_ratio=0.1, warmup_steps=10)
    total = 111  # decay spans steps 10..110, i.e. 100 steps
    assert lr_at(0, total, cfg) == pytest.approx(1e-4)
    assert lr_at(4, total, cfg) == pytest.approx(5e-4)
    assert lr_at(9, total, cfg) == pytest.approx(1e-3)  # warmup ends at the peak
    assert lr_at(10, total, cfg) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_at(60, total, cfg) == pytest.approx(0.55e-3)  # halfway: midpoint of peak, floor
    quarter = 1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 0.9e-3
    assert lr_at(35, total, cfg) == pytest.approx(quarter)
    assert lr_at(total - 1, total, cfg) == pytest.approx(1e-4)  # floor at the last step
    lrs = [lr_at(s, total, cfg) for s in range(10, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_train_loss_goes_down_logs_and_checkpoint_loads(data_dir: Path, tmp_path: Path):
    metrics = tmp_path / "metrics.jsonl"
    cfg = config(30, warmup_steps=5)
    result = train(cfg, data_dir, tmp_path / "run", metrics_path=metrics)

    assert result["steps"] == 30
    assert result["tokens"] == 30 * 8 * SEQ_LEN
    assert result["params"] > 0 and result["seconds"] > 0 and result["tokens_per_s"] > 0
    assert set(result) == SUMMARY_KEYS
    assert result["resumed_from_step"] is None and result["seed"] == 0
    assert result["model_flops_per_s"] == pytest.approx(
        result["flops_per_token"] * result["tokens_per_s"])
    assert result["peak_flops"] is None and result["mfu"] is None  # CPU: no known peak
    assert not (tmp_path / "run" / "checkpoints").exists()  # checkpoint_every=0: only the final
    rows = read_metrics(metrics)
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all(set(r) == METRIC_KEYS for r in rows)
    assert rows[-1]["tokens"] == result["tokens"]
    assert rows[-1]["loss"] == result["final_loss"]
    losses = [r["loss"] for r in rows]
    assert losses[0] == pytest.approx(math.log(300), rel=0.05)  # random init ~ uniform
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0

    # the checkpoint is a self-contained HF folder: model and tokenizer load from disk only
    ckpt = Path(result["checkpoint"])
    assert ckpt == tmp_path / "run" / "checkpoint"
    assert (ckpt / "model.safetensors").exists()
    assert not list(ckpt.glob("*.bin")) and not list(ckpt.glob("*.pkl"))
    model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    assert tokenizer.eos_token == EOS
    assert tokenizer.eos_token_id == model.config.eos_token_id
    raw = Tokenizer.from_file(str(data_dir / "tokenizer.json"))
    text = "The server configuration file is read at startup."
    ids = tokenizer(text)["input_ids"]
    assert ids == raw.encode(text).ids  # no BOS/EOS added behind our back
    assert tokenizer.decode(ids) == text

    # the saved weights are the trained ones: loss on training rows matches the log, not ln(V)
    rows_ = np.load(data_dir / "train" / "part-00000.npy")[:16].astype(np.int64)
    batch = torch.from_numpy(rows_)
    with torch.no_grad():
        loss = model(input_ids=batch, labels=batch).loss.item()
    assert loss < losses[0] - 1.0


def test_same_seed_same_losses(data_dir: Path, tmp_path: Path):
    runs, summaries = {}, {}
    # b also sets a peak FLOP/s figure: MFU is reported, training is unchanged
    for name, seed, peak in [("a", 0, None), ("b", 0, 1e12), ("c", 1, None)]:
        metrics = tmp_path / f"{name}.jsonl"
        cfg = config(6, seed=seed, peak_flops=peak)
        summaries[name] = train(cfg, data_dir, tmp_path / name, metrics_path=metrics)
        runs[name] = [(r["loss"], r["grad_norm"]) for r in read_metrics(metrics)]
    assert runs["a"] == runs["b"]  # bit-identical on CPU
    assert runs["a"] != runs["c"]
    b = summaries["b"]
    assert b["peak_flops"] == 1e12 and b["mfu"] == pytest.approx(b["model_flops_per_s"] / 1e12)
    assert summaries["a"]["config_hash"] == b["config_hash"] != summaries["c"]["config_hash"]


def test_train_seeds_one_run_per_seed(data_dir: Path, tmp_path: Path):
    cfg = config(3, log_every=3)
    summaries = train_seeds(cfg, [7, 3], data_dir, tmp_path / "seeds")
    assert [s["seed"] for s in summaries] == [7, 3]
    for s in summaries:
        run = tmp_path / "seeds" / f"seed-{s['seed']}"
        assert Path(s["checkpoint"]) == run / "checkpoint"
        assert (run / "checkpoint" / "model.safetensors").exists()
        assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [3]
    assert summaries[0]["final_loss"] != summaries[1]["final_loss"]
    with pytest.raises(ValueError, match="duplicate"):
        train_seeds(cfg, [1, 1], data_dir, tmp_path / "dup")


def test_data_order_and_shard_addressing(data_dir: Path):
    meta = json.loads((data_dir / "meta.json").read_text())
    data = PackedSequences(data_dir, meta)
    rows = np.concatenate([np.load(data_dir / s["path"]) for s in meta["train_shards"]])
    assert len(data) == len(rows)
    idx = [0, len(rows) - 1, meta["train_shards"][0]["n_seq"], 5]  # both shards, the boundary
    assert np.array_equal(data.get(idx), rows[idx].astype(np.int64))

    n = 10
    order = sequence_order(n, seed=3)
    epoch0, epoch1 = [next(order) for _ in range(n)], [next(order) for _ in range(n)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n))  # each epoch sees every row once
    assert epoch0 != epoch1
    again = sequence_order(n, seed=3)
    assert [next(again) for _ in range(n)] == epoch0


def test_grad_accum_matches_one_big_batch(data_dir: Path, tmp_path: Path):
    # 2 x 4 sequences accumulated == 8 sequences at once: same rows, same init, same update
    losses = {}
    for name, batch_size, grad_accum in [("big", 8, 1), ("accum", 4, 2)]:
        cfg = TrainConfig(
            batch_size=batch_size, grad_accum=grad_accum, log_every=1, max_tokens=3 * 8 * SEQ_LEN
        )
        metrics = tmp_path / f"{name}.jsonl"
        train(cfg, data_dir, tmp_path / name, metrics_path=metrics)
        losses[name] = [r["loss"] for r in read_metrics(metrics)]
    assert len(losses["big"]) == 3
    assert losses["accum"] == pytest.approx(losses["big"], abs=1e-5)


def test_budget_beyond_data_runs_more_epochs(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    small = make_data_dir(tmp_path, n_docs=10, n_shards=1)
    n_rows = json.loads((small / "meta.json").read_text())["train_shards"][0]["n_seq"]
    steps = n_rows // 8 + 3  # more rows than the data holds
    cfg = TrainConfig(batch_size=8, max_tokens=steps * 8 * SEQ_LEN, log_every=1000)
    metrics = tmp_path / "m.jsonl"
    result = train(cfg, small, tmp_path / "run", metrics_path=metrics)
    assert result["steps"] == steps
    assert [r["step"] for r in read_metrics(metrics)] == [steps]  # only the last step logs
    assert math.isfinite(result["final_loss"])
    # the repetition is counted before training, seen by the end, and warned about
    assert result["data_plan"]["sources"][""]["epochs"] == pytest.approx(steps * 8 / n_rows)
    assert result["epochs"] == {"": pytest.approx(steps * 8 / n_rows)}
    assert "data repeats" in caplog.text


def test_bf16_autocast_trains_and_saves_fp32_weights(data_dir: Path, tmp_path: Path):
    # the GPU default (dtype auto = bf16 autocast on cuda), forced here on the CPU
    result = train(config(4, dtype="bf16", warmup_steps=1), data_dir, tmp_path / "bf16",
                   metrics_path=tmp_path / "m.jsonl")
    fp32 = train(config(4, warmup_steps=1), data_dir, tmp_path / "fp32")
    assert math.isfinite(result["final_loss"])
    assert result["final_loss"] != fp32["final_loss"]  # autocast did run in bf16
    assert result["final_loss"] == pytest.approx(fp32["final_loss"], abs=0.1)
    model = AutoModelForCausalLM.from_pretrained(result["checkpoint"], local_files_only=True)
    assert model.model.embed_tokens.weight.dtype == torch.float32  # master weights stay fp32
