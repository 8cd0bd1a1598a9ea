"""Training throughput: ``tasks.train.train`` vs a bare torch loop over the same model and data.

Both sides train ``build_model(preset, ...)`` from the same seed, with the same batch size,
sequence length, number of steps and AdamW hyperparameters, on rows of the same token shards
(the sample run through ``tasks/tokenize.py``'s own functions: BPE training, packing, meta).
The bare loop is what a person would write by hand: rows preloaded into one tensor, a seeded
permutation, forward with labels, backward, clip, step. ``train`` adds what the stage needs
(learning-rate schedule, memory-mapped shards, metrics, the device-side loss sum); its
tokens/s should match the bare loop's (target >= 1.0x). The two are run alternately, three
times each, after a warm-up, and the best run of each is reported (the machine is shared).

Also printed: the model FLOPs per token (``tasks.train.flops_per_token``) and the FLOP/s and
MFU that ``train`` reports. MFU needs a device peak: on CPU there is none, so it prints n/a. On
a machine with CUDA the 125m preset in bf16 is measured too (that path has not been run here).

``DATAMILL_BENCH_SCALE`` (default 3) multiplies the number of steps. ``DATAMILL_BENCH_THREADS``
(default 1) sets torch's CPU threads for both sides; 0 keeps torch's default (one per core). One
thread is the default because on a small shared machine a second OpenMP thread waits on a busy
core: runs measured there with 2 threads swung between 1.4k and 14k tokens/s, with 1 thread
within a few percent.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "sample.jsonl"
TARGET = 1.0
VOCAB = 2048


def make_data_dir(root: Path, seq_len: int) -> Path:
    """The sample through tasks/tokenize.py: BPE tokenizer, one packed shard, meta.json."""
    from tasks.store import write_parquet
    from tasks.tokenize import iter_train_texts, pack_shard, train_tokenizer, write_meta

    docs = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    kept = root / "kept" / "part-00000.parquet"
    write_parquet(pa.table({
        "id": [d["id"] for d in docs],
        "text": pa.array([d["text"] for d in docs], pa.large_string()),
        "source": [d.get("source", "") for d in docs],
        "lang": pa.array([d.get("lang") for d in docs], pa.string()),
    }), kept)
    out = root / "tokens"
    tok_path = out / "tokenizer.json"
    train_tokenizer(iter_train_texts([str(kept)], 0.0, 1 << 30), VOCAB, 2, tok_path)
    shard = pack_shard(str(kept), str(tok_path), str(out), "00000", seq_len, 0.0)
    write_meta(out, tok_path, seq_len, [shard])
    return out


def bare_loop(data_dir: Path, preset: str, batch: int, steps: int, seed: int, device: str,
              bf16: bool, lr: float = 3e-3) -> dict[str, float]:
    """The same model, batch and steps in the plainest loop; timed like ``train`` (the loop only,
    from the first step to the last optimizer step, device synchronised at the end)."""
    import torch

    from tasks.train import build_model

    meta = json.loads((data_dir / "meta.json").read_text())
    seq_len = meta["seq_len"]
    rows = torch.from_numpy(np.concatenate(
        [np.load(data_dir / s["path"]) for s in meta["train_shards"]]).astype(np.int64))
    torch.manual_seed(seed)
    model = build_model(preset, meta["vocab_size"], seq_len, meta["eos_id"]).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device == "cuda")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    order = order.repeat(1 + steps * batch // len(rows))
    autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    t0 = time.perf_counter()
    for step in range(steps):
        ids = rows[order[step * batch:(step + 1) * batch]].to(device, non_blocking=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    final = loss.item()  # syncs the device
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tokens_per_s": steps * batch * seq_len / seconds, "loss": final}


def datamill_train(data_dir: Path, out: Path, preset: str, batch: int, steps: int, seed: int,
                   device: str, bf16: bool) -> dict[str, Any]:
    from tasks.train import TrainConfig, train

    seq_len = json.loads((data_dir / "meta.json").read_text())["seq_len"]
    config = TrainConfig(
        preset=preset, batch_size=batch, max_tokens=steps * batch * seq_len, seed=seed,
        device=device, dtype="bf16" if bf16 else "fp32", warmup_steps=max(1, steps // 10),
        log_every=steps)
    result = train(config, data_dir, out)
    assert result["steps"] == steps
    assert np.isfinite(result["final_loss"])
    return result


def compare(case: dict[str, Any], data_dir: Path, tmp: Path, rounds: int = 3) -> dict[str, Any]:
    """A short warm-up of each, then `rounds` rounds of (bare, train), the order flipped every
    round so that a slow spell on the shared machine does not always hit the same side; the
    best run of each side is the figure (the least disturbed one)."""
    args = (case["preset"], case["batch"], case["steps"], 0, case["device"], case["bf16"])
    warm = (case["preset"], case["batch"], 3, 0, case["device"], case["bf16"])
    bare_loop(data_dir, *warm)
    datamill_train(data_dir, tmp / "warm", *warm)
    bare: list[dict[str, Any]] = []
    dm: list[dict[str, Any]] = []
    for i in range(rounds):
        for side in ("bare", "train") if i % 2 == 0 else ("train", "bare"):
            if side == "bare":
                bare.append(bare_loop(data_dir, *args))
            else:
                dm.append(datamill_train(data_dir, tmp / f"run{i}", *args))
    best_bare = max(bare, key=lambda r: r["tokens_per_s"])
    best_dm = max(dm, key=lambda r: r["tokens_per_s"])
    return {"bare": best_bare, "train": best_dm, "all_bare": bare, "all_train": dm}


def test_train_vs_bare_torch(
    tmp_path: Path, bench_scale: int, table: Callable[..., str]
) -> None:
    import torch

    threads = int(os.environ.get("DATAMILL_BENCH_THREADS", "1"))
    default_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        _run(tmp_path, bench_scale, table)
    finally:
        torch.set_num_threads(default_threads)


def _run(tmp_path: Path, bench_scale: int, table: Callable[..., str]) -> None:
    import torch

    seq_len = 128
    data_dir = make_data_dir(tmp_path, seq_len)
    meta = json.loads((data_dir / "meta.json").read_text())
    n_rows = sum(s["n_seq"] for s in meta["train_shards"])

    cases = [{"name": "tiny fp32 cpu", "preset": "tiny", "batch": 16, "steps": 15 * bench_scale,
              "device": "cpu", "bf16": False}]
    if torch.cuda.is_available():
        cases.append({"name": "125m bf16 cuda", "preset": "125m", "batch": 16,
                      "steps": 30 * bench_scale, "device": "cuda", "bf16": True})

    rows = []
    for case in cases:
        res = compare(case, data_dir, tmp_path / case["name"].replace(" ", "-"))
        tr, bare = res["train"], res["bare"]
        ratio = tr["tokens_per_s"] / bare["tokens_per_s"]
        fpt = tr["flops_per_token"]
        mfu = f"{100 * tr['mfu']:.1f}%" if tr["mfu"] is not None else "n/a (no peak)"
        runs = " / ".join(f"{r['tokens_per_s']:,.0f}" for r in res["all_train"])
        bare_runs = " / ".join(f"{r['tokens_per_s']:,.0f}" for r in res["all_bare"])
        rows.append([
            case["name"], f"{case['batch']}x{seq_len}x{case['steps']}",
            f"{tr['tokens_per_s']:,.0f}", f"{bare['tokens_per_s']:,.0f}", f"{ratio:.2f}x",
            "PASS" if ratio >= TARGET else "MISS", f"{fpt / 1e6:.2f}M",
            f"{tr['model_flops_per_s'] / 1e9:.2f}G", mfu,
        ])
        case["runs"] = f"{case['name']}: train {runs}; bare {bare_runs} tokens/s"
        case["params"] = tr["params"]

    print(f"\n\n=== train: tasks.train.train vs bare torch loop (baseline: bare loop, same run) "
          f"===\ndata: {SAMPLE.relative_to(ROOT)} tokenized by tasks/tokenize.py (vocab {VOCAB}, "
          f"{n_rows:,} rows of {seq_len}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, cpus {os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.2f}")
    print(table(
        ["case", "batch x seq x steps", "train tok/s", "bare tok/s", "ratio", f">={TARGET:g}x",
         "FLOPs/token", "train FLOP/s", "MFU"], rows))
    for case in cases:
        print(f"  {case['runs']} ({case['params']:,} params)")
    print("FLOPs/token = tasks.train.flops_per_token (6N + attention, forward + backward); "
          "train FLOP/s and MFU are what train() reports.")
    if not torch.cuda.is_available():
        print("GPU MFU (125m preset, bf16) is not measured on this machine: no CUDA device.")
