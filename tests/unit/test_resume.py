"""Resumable training: a run SIGKILLed mid-training and started again ends where an uninterrupted
run ends, step for step (losses) and weight for weight."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from test_train import config, make_data_dir, read_metrics
from transformers import AutoModelForCausalLM

from tasks.train import CHECKPOINTS, COMPLETE, DataOrder, complete_checkpoints, train

ROOT = Path(__file__).resolve().parents[2]
N, K = 12, 3  # steps, checkpoint every K steps

# the interrupted run: a separate process, so it can be killed for real
CHILD = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[4]))  # as the parent, so float sums add up the same way
from tasks.train import TrainConfig, train
out = Path(sys.argv[3])
train(TrainConfig.model_validate_json(sys.argv[1]), Path(sys.argv[2]), out, out / "metrics.jsonl")
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("resume"), n_docs=100)


def weights(run: Path) -> dict[str, np.ndarray]:
    return load_file(run / "checkpoint" / "model.safetensors")


def kill_after_first_checkpoint(cfg, data_dir: Path, run: Path) -> int:
    """Start training in a child process, SIGKILL it once a checkpoint is complete; its step."""
    args = [cfg.model_dump_json(), str(data_dir), str(run), str(torch.get_num_threads())]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not complete_checkpoints(run):
            assert child.poll() is None, "the child ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (run / "checkpoint").exists()  # cut short: no final checkpoint
    return complete_checkpoints(run)[-1][0]


def test_killed_run_resumes_exactly(data_dir: Path, tmp_path: Path):
    cfg = config(N, warmup_steps=3, checkpoint_every=K, keep_checkpoints=2)

    ref = tmp_path / "ref"  # uninterrupted, no periodic checkpoints at all
    ref_summary = train(
        cfg.model_copy(update={"checkpoint_every": 0}), data_dir, ref, ref / "metrics.jsonl"
    )
    assert not (ref / CHECKPOINTS).exists()

    run = tmp_path / "run"
    killed_at = kill_after_first_checkpoint(cfg, data_dir, run)
    assert K <= killed_at < N and killed_at % K == 0
    assert len(complete_checkpoints(run)) <= 2  # pruned as it went

    # a resumable checkpoint holds no pickle, and its model loads like the final one
    newest = complete_checkpoints(run)[-1][1]
    assert not [p for p in newest.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
    state = json.loads((newest / "train_state.json").read_text())
    assert state["step"] == killed_at and state["tokens"] == killed_at * 8 * 64
    assert set(state["data_order"]) == {"epoch", "index"}
    AutoModelForCausalLM.from_pretrained(newest, local_files_only=True)

    # debris a kill mid-write could leave: ignored on resume, cleaned up afterwards
    partial = run / CHECKPOINTS / f"step-{N - 1}"  # newer than any real one, but no marker
    shutil.copytree(newest, partial)
    (partial / COMPLETE).unlink()
    (partial / "train_state.safetensors").write_bytes(b"torn")
    (run / CHECKPOINTS / f".tmp-step-{N}-12345").mkdir()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99, "lo')  # a torn last line

    # resume with a different bookkeeping field (keep_checkpoints): allowed
    summary = train(
        cfg.model_copy(update={"keep_checkpoints": 1}), data_dir, run, run / "metrics.jsonl"
    )
    assert summary["resumed_from_step"] == killed_at
    assert not partial.exists() and not list((run / CHECKPOINTS).glob(".tmp-*"))
    assert [s for s, _ in complete_checkpoints(run)] == [N]  # the last step, keep_checkpoints=1

    ref_rows, rows = read_metrics(ref / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, N + 1))  # no gap, no duplicate
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(ref_rows, rows, strict=True))
    after = [(a, b) for a, b in zip(ref_rows, rows, strict=True) if a["step"] > killed_at]
    assert len(after) == N - killed_at
    for a, b in after:
        assert abs(a["loss"] - b["loss"]) <= 1e-6
        assert abs(a["grad_norm"] - b["grad_norm"]) <= 1e-6 and a["lr"] == b["lr"]
    w_ref, w_run = weights(ref), weights(run)
    assert w_ref.keys() == w_run.keys()
    weight_diff = max(float(np.abs(w_ref[k] - w_run[k]).max()) for k in w_ref)
    assert weight_diff <= 1e-6
    assert summary["final_loss"] == pytest.approx(ref_summary["final_loss"], abs=1e-6)
    assert summary["tokens"] == ref_summary["tokens"]
    print(f"resumed from step {killed_at}: max |loss diff| {loss_diff:.3g}, "
          f"max |weight diff| {weight_diff:.3g}")

    # again on the finished dir: resumes at the last step, trains nothing, same answer
    metrics_before = (run / "metrics.jsonl").read_text()
    again = train(cfg, data_dir, run, run / "metrics.jsonl")
    assert again["resumed_from_step"] == N and again["final_loss"] == summary["final_loss"]
    assert (run / "metrics.jsonl").read_text() == metrics_before

    # another config, or other data, is refused before anything is touched
    with pytest.raises(ValueError, match=r"another train config \(lr: 0.003 -> 0.001\)"):
        train(cfg.model_copy(update={"lr": 1e-3}), data_dir, run, run / "metrics.jsonl")
    other = tmp_path / "other-data"
    shutil.copytree(data_dir, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "train_shards": meta["train_shards"][:1]}))
    with pytest.raises(ValueError, match="other data"):
        train(cfg, other, run, run / "metrics.jsonl")
    assert (run / "metrics.jsonl").read_text() == metrics_before
    assert [s for s, _ in complete_checkpoints(run)] == [N]


def test_only_complete_checkpoints_count(tmp_path: Path):
    root = tmp_path / CHECKPOINTS
    for name, marker in [("step-4", True), ("step-12", True), ("step-16", False),
                         ("step-x", True), (".tmp-step-20-1", True)]:
        (root / name).mkdir(parents=True)
        if marker:
            (root / name / COMPLETE).write_text("")
    assert complete_checkpoints(tmp_path) == [(4, root / "step-4"), (12, root / "step-12")]
    assert complete_checkpoints(tmp_path / "nothing") == []


def test_data_order_resumes_mid_epoch():
    full = DataOrder(7, seed=5)
    expected = full.take(20)  # crosses two epoch boundaries
    first = DataOrder(7, seed=5)
    head = first.take(9)
    state = first.state()
    assert state == {"epoch": 1, "index": 2}
    assert head + DataOrder(7, seed=5, **state).take(11) == expected
    at_boundary = DataOrder(7, seed=5)
    at_boundary.take(7)
    assert at_boundary.state() == {"epoch": 0, "index": 7}
    assert DataOrder(7, seed=5, **at_boundary.state()).take(13) == expected[7:]


def test_checkpoint_dirs_reach_the_disk_before_they_are_swapped_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """write_dir fsyncs every file of the new checkpoint and its folder before the rename that
    makes it visible, and the parent after: a power loss never leaves COMPLETE without data."""
    import os

    from tasks.train.checkpoint import COMPLETE, write_dir

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"),
                                                     real_replace(a, b))[1])

    def write(d: Path) -> None:
        (d / "model.safetensors").write_bytes(b"w" * 100)
        (d / COMPLETE).write_text("")

    write_dir(tmp_path / "step-2", write)
    assert (tmp_path / "step-2" / COMPLETE).is_file()
    swap = events.index("replace step-2")
    assert events[:swap].count("fsync") >= 3  # two files and the new folder
    assert events[swap + 1:] == ["fsync"]  # the parent folder, after the rename
