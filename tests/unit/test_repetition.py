"""Repetition: the epochs each source is seen, computed before training, equal what the run
draws; max_epochs caps down-weight a source or stop the run; the plan is recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.train import TrainConfig, prepare, train
from tasks.train.continual import InitSource
from tasks.train.data import Allocator
from tasks.train.mixing import keep_under_caps
from tasks.train.repetition import describe, epochs_table, repeat_warning
from tasks.train.sampling import Sampling

SEQ = 16
EOS = "<|endoftext|>"
SIZES = {"a": 10, "b": 40, "c": 25}  # rows per source


def synthetic(root: Path, sizes: dict[str, int], seq_len: int = SEQ, shards: int = 2,
              scores: dict[str, np.ndarray] | None = None, vocab: int = 64) -> Path:
    """A data dir in tokenize's format: per shard each source's rows, with a row index; a
    source's row r holds a pattern of its own (learnable), offset by r. With scores, each
    shard has a per-row score file (as tokenize writes for a curriculum)."""
    from tokenizers import Tokenizer, models

    root.mkdir(parents=True, exist_ok=True)
    (root / "train").mkdir(exist_ok=True)
    words = {EOS: 0, **{f"w{i}": i for i in range(1, vocab)}}
    Tokenizer(models.WordLevel(words, unk_token=EOS)).save(str(root / "tokenizer.json"))
    meta: dict[str, Any] = {"vocab_size": vocab, "eos_id": 0, "eos_token": EOS,
                            "seq_len": seq_len, "dtype": "uint16", "train_shards": []}
    for i in range(shards):
        blocks, ranges, row_scores, at = [], {}, [], 0
        for k, (src, n) in enumerate(sizes.items()):
            part = np.array_split(np.arange(n), shards)[i]
            step, base = 1 + 2 * k, 1 + 20 * k  # source k: stride 2k+1 in its own 16 ids
            rows = [base + (r + step * np.arange(seq_len)) % 16 for r in part]
            blocks += rows
            ranges[src] = [at, at + len(part)]
            at += len(part)
            if scores is not None:
                row_scores += list(scores[src][part])
        rel = f"train/part-{i:05d}.npy"
        np.save(root / rel, np.array(blocks, dtype=np.uint16), allow_pickle=False)
        shard = {"path": rel, "n_seq": at, "sources": ranges}
        if scores is not None:
            shard["score"] = f"train/part-{i:05d}.score.npy"
            np.save(root / shard["score"], np.array(row_scores, dtype=np.float32))
        meta["train_shards"].append(shard)
    if scores is not None:
        meta["row_score"] = "quality"
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def cfg(steps: int, **kw: Any) -> TrainConfig:
    kw.setdefault("batch_size", 8)
    kw.setdefault("grad_accum", 2)
    return TrainConfig(max_tokens=steps * kw["batch_size"] * kw["grad_accum"] * SEQ, **kw)


def setup(data_dir: Path, config: TrainConfig, init: InitSource | None = None) -> Sampling:
    return prepare(config, data_dir, json.loads((data_dir / "meta.json").read_text()), init)


def run_sampling(s: Sampling, config: TrainConfig) -> tuple[dict[str, int], Any]:
    """The run's sampling order without a model: rows drawn per source, counted one by one."""
    mixture = s.mixture()
    names, ids = s.data.source_ids()
    counts = np.zeros(len(names), dtype=np.int64)
    for step in range(s.steps):
        p = s.mix.probs(step, mixture.drawn())
        assert p is not None and p.sum() == pytest.approx(1.0)
        for micro in range(config.grad_accum):
            rows = mixture.take(config.batch_size, p, step, micro)
            assert len(rows) == config.batch_size
            np.add.at(counts, ids[rows], 1)
    out: dict[str, int] = {}
    for name, c in zip(names, counts, strict=True):
        key = "replay" if name.startswith("replay:") else name
        out[key] = out.get(key, 0) + int(c)
    return out, mixture


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory.mktemp("rep") / "data", SIZES)


CASES = {
    "shuffled": {},
    "weights+anneal": {"source_weights": {"b": 3.0, "c": 0.0},
                       "anneal_source_weights": {"c": 2.0}, "anneal_fraction": 0.3},
    "temperature": {"mix_temperature": {"start": 5.0, "end": 1.0}},
    "temperature-step": {"mix_temperature": {"start": 100.0, "shape": "step", "until": 0.5}},
    "cap-downweight": {"max_epochs": {"a": 1.5}},
    "cap-stop": {"max_epochs": {"a": 1.5}, "on_max_epochs": "stop"},
    "cap-all": {"max_epochs": 1.0},
}


@pytest.mark.parametrize("case", list(CASES))
def test_epochs_are_exact(case: str, data: Path):
    """Count the rows each source gives over the run's real sampling order: they equal the
    plan computed before the run, and so do the epochs seen."""
    config = cfg(30, **CASES[case])
    s = setup(data, config)
    counted, mixture = run_sampling(s, config)
    plan = s.plan["sources"]
    assert counted == {src: plan[src]["rows_drawn"] for src in SIZES}
    assert sum(counted.values()) == s.steps * 16
    for src, n in SIZES.items():
        assert plan[src]["rows"] == n
        assert plan[src]["epochs"] == pytest.approx(counted[src] / n)
    assert s.epochs_seen(mixture) == pytest.approx({src: plan[src]["epochs"] for src in SIZES})


def test_caps_downweight_the_source_and_renormalise_the_others(data: Path):
    free = setup(data, cfg(30, max_epochs={}, source_weights={"a": 20.0}))
    capped = setup(data, cfg(30, max_epochs={"a": 1.5}, source_weights={"a": 20.0}))
    f, c = free.plan["sources"], capped.plan["sources"]
    assert f["a"]["epochs"] > 5  # upsampled far past its cap without one
    assert capped.steps == 30 and capped.plan["stopped_by"] is None  # the others fill in
    assert c["a"]["rows_drawn"] <= 15 and c["a"]["rows_drawn"] >= 14  # floor(1.5 x 10)
    assert c["a"]["max_epochs"] == 1.5 and c["b"]["max_epochs"] is None
    # the excess went to b and c in their own ratio (40:25 rows)
    assert c["b"]["rows_drawn"] > f["b"]["rows_drawn"]
    assert c["b"]["rows_drawn"] / c["c"]["rows_drawn"] == pytest.approx(40 / 25, rel=0.05)
    # spread over the whole run, not used up first: a's share is level from start to end
    mixture = capped.mixture()
    early = capped.mix.probs(0, mixture.drawn())[0]
    assert early == pytest.approx(15 / (30 * 16), rel=0.01)


def test_stop_ends_the_run_before_a_cap_is_passed(data: Path):
    s = setup(data, cfg(30, max_epochs={"a": 1.5}, on_max_epochs="stop"))
    assert s.plan["stopped_by"] == "max_epochs" and s.steps < 30
    assert s.plan["steps_requested"] == 30
    assert s.plan["sources"]["a"]["rows_drawn"] <= 15
    # one step more would pass the cap: the stop is as late as it can be
    longer = setup(data, cfg(s.steps + 1, max_epochs={"a": 100.0}))
    assert longer.plan["sources"]["a"]["rows_drawn"] > 15
    assert "stopped by max_epochs" in describe(s.plan)


def test_a_stopped_run_trains_its_planned_steps_and_ends_its_schedule(data: Path,
                                                                      tmp_path: Path):
    pytest.importorskip("torch")
    c = cfg(30, max_epochs={"a": 1.5}, on_max_epochs="stop", log_every=1, warmup_steps=1)
    plan = setup(data, c).plan
    result = train(c, data, tmp_path / "run", tmp_path / "m.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert result["steps"] == plan["steps"] == len(lines) < 30
    assert result["tokens"] == plan["steps"] * 16 * SEQ
    assert lines[-1]["lr"] == pytest.approx(c.lr * c.min_lr_ratio)  # the decay ended on time
    assert result["epochs"]["a"] <= 1.5 and result["data_plan"] == plan


def test_allocator_fills_batches_in_proportion_and_never_passes_a_limit():
    rng = np.random.default_rng(0)
    for _ in range(100):
        k, n = int(rng.integers(1, 33)), int(rng.integers(2, 7))
        p = rng.dirichlet(np.ones(n)) * (rng.random(n) > 0.2)
        p = p / p.sum() if p.sum() else np.eye(n)[0]
        a = Allocator(n)
        for _ in range(50):
            counts = a.allocate(k, p)
            assert counts.sum() == k and (counts[p == 0] == 0).all()
            assert np.abs(a.target - a.drawn).max() < 1.0  # within a row of its share
    limited = Allocator(2, np.array([5.0, np.inf]))
    for _ in range(10):
        limited.allocate(4, np.array([0.9, 0.1]))
    assert limited.drawn.tolist() == [5, 35]  # the full pool's slots went to the other


def test_caps_on_every_source_end_the_run_when_the_rows_run_out(data: Path):
    s = setup(data, cfg(30, max_epochs=1.0))
    total = sum(SIZES.values())
    assert s.steps == total // 16 and s.plan["stopped_by"] == "max_epochs"
    assert all(v["rows_drawn"] <= v["rows"] for v in s.plan["sources"].values())
    assert repeat_warning(s.plan) is None  # nothing repeats


def test_replay_pool_is_counted_and_never_capped(data: Path, tmp_path: Path):
    old = synthetic(tmp_path / "old", {"x": 12})
    init = InitSource(tmp_path / "ckpt", old, "id")
    config = cfg(20, replay=0.25, max_epochs={"b": 1.0})
    s = setup(data, config, init)
    counted, _ = run_sampling(s, config)
    assert counted == {k: v["rows_drawn"] for k, v in s.plan["sources"].items()}
    assert counted["replay"] == pytest.approx(0.25 * s.steps * 16, abs=1)
    assert s.plan["sources"]["replay"]["max_epochs"] is None
    assert counted["b"] <= 40


def test_warning_names_the_repeated_sources_and_the_table_reads_a_summary(data: Path):
    s = setup(data, cfg(30))
    warning = repeat_warning(s.plan)
    assert warning is not None and "data repeats" in warning
    assert all(f"{src} " in warning for src in SIZES)  # every source repeats 6x here
    assert describe(s.plan).startswith("epochs per source over 30 steps: a ")
    rows = epochs_table({"data_plan": s.plan, "epochs": {"a": 1.0}})
    assert [r["source"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["epochs_planned"] == pytest.approx(s.plan["sources"]["a"]["epochs"], abs=1e-4)
    assert rows[0]["epochs_seen"] == 1.0 and np.isnan(rows[1]["epochs_seen"])


def test_keep_under_caps_is_a_distribution_under_its_caps():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(2, 7))
        q = rng.dirichlet(np.ones(k)) * (rng.random(k) > 0.2)
        if q.sum() == 0:
            continue
        caps = np.where(rng.random(k) < 0.5, rng.random(k) * 0.6, np.inf)
        out = keep_under_caps(q, caps)
        assert (out[q == 0] == 0).all()  # a weight of 0 stays 0
        if np.minimum(caps, 1)[q > 0].sum() >= 1:
            assert out.sum() == pytest.approx(1.0)
            assert (out <= caps + 1e-12).all()
            free = (out < caps - 1e-12) & (q > 0)  # the uncapped keep q's ratios
            if free.sum() > 1:
                ratio = out[free] / q[free]
                assert np.allclose(ratio, ratio[0])
        else:  # the caps cannot hold it all: each source gets its cap, scaled
            assert out.sum() == pytest.approx(1.0)
            live = q > 0
            assert np.allclose(out[live] / np.minimum(caps, 1)[live],
                               (out[live] / np.minimum(caps, 1)[live])[0])


def test_max_epochs_validation():
    with pytest.raises(ValueError, match="max_epochs"):
        TrainConfig(max_epochs=0)
    with pytest.raises(ValueError, match="max_epochs"):
        TrainConfig(max_epochs={"a": -1.0})
    assert TrainConfig(max_epochs={"a": 2}).cap("a") == 2 and TrainConfig().cap("a") is None
    assert TrainConfig(max_epochs=3).cap("anything") == 3
