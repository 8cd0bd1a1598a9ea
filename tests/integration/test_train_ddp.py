"""Data-parallel training under Ray Train's TorchTrainer on CPU (gloo): two workers, each
taking half of every batch, train the same model as one process taking all of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytestmark = pytest.mark.slow
SEQ = 64


def make_data(root: Path, lines: list[str]) -> Path:
    from tasks import tokenize
    from tasks.store import write_parquet

    docs = [json.loads(line) for line in lines]
    kept = root / "kept" / "part-00000.parquet"
    write_parquet(pa.table({"id": [d["id"] for d in docs],
                            "text": pa.array([d["text"] for d in docs], pa.large_string()),
                            "source": [d["source"] for d in docs],
                            "lang": [d["lang"] for d in docs]}), kept)
    out = root / "tokens"
    tok = out / "tokenizer.json"
    tokenize.train_tokenizer(tokenize.iter_train_texts([str(kept)], 0.0, 10**9), 400, 2, tok)
    stats = tokenize.pack_shard(str(kept), str(tok), str(out), "00000", SEQ, 0.0)
    tokenize.write_meta(out, tok, SEQ, [stats])
    return out


def test_two_cpu_workers_match_one_process(tmp_path: Path, sample_lines: list[str]) -> None:
    import torch
    from safetensors.numpy import load_file

    from infra import ray as ray_engine
    from tasks.train import TrainConfig, complete_checkpoints, train

    data = make_data(tmp_path, sample_lines[:150])
    # 2 micro-batches per step: the first is accumulated without a gradient all-reduce
    cfg = TrainConfig(batch_size=8, grad_accum=2, max_tokens=4 * 16 * SEQ, warmup_steps=2,
                      log_every=1, checkpoint_every=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray Train worker: the same float summation
    try:
        one = train(cfg, data, tmp_path / "one", tmp_path / "one" / "metrics.jsonl")
    finally:
        torch.set_num_threads(threads)

    two_dir = tmp_path / "two"
    ray_engine.run_distributed(
        "tasks.train:train",
        {"config": cfg.model_copy(update={"workers": 2}), "data_dir": data, "out_dir": two_dir,
         "metrics_path": two_dir / "metrics.jsonl"},
        num_workers=2, storage=two_dir / "ray")
    two = json.loads((two_dir / "summary.json").read_text())
    assert two["workers"] == 2 and one["workers"] == 1
    assert two["tokens"] == one["tokens"] == 4 * 16 * SEQ  # batch_size is the global batch
    rows1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (two_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows2] == [1, 2, 3, 4]  # rank 0 alone writes
    for a, b in zip(rows1, rows2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert [s for s, _ in complete_checkpoints(two_dir)] == [2, 4]
    w1 = load_file(tmp_path / "one" / "checkpoint" / "model.safetensors")
    w2 = load_file(two_dir / "checkpoint" / "model.safetensors")
    # float round-off only: gloo sums two half-batch gradients where one process sums eight
    # rows, and Adam scales near-zero gradients up to ~lr. The bound was 1e-5; on an AMD EPYC
    # machine the code from before the stage refactor measures 1.57e-5 here, as does today's
    assert max(float(np.abs(w1[k] - w2[k]).max()) for k in w1) < 5e-5
