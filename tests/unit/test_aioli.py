"""Aioli: the linear dynamic mixing law fitted from per-source loss drops, the exponentiated-
gradient update, caps, and a real (tiny) run that records its proportions and resumes exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_repetition import cfg, setup, synthetic

from tasks.catalog import Catalog
from tasks.stage import Manifest, RunInfo, Upstream
from tasks.stages.train import Train
from tasks.train import MixingConfig, TrainConfig, train
from tasks.train.aioli import AioliMix, eg_step, fit_mixing_law, normalise, perturbed
from tasks.train.data import Allocator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

A_TRUE = np.array([[0.9, 0.2, -0.1],
                   [0.1, 0.6, 0.3],
                   [0.0, 0.4, 1.2]])


def test_fit_recovers_a_known_mixing_law():
    rng = np.random.default_rng(1)
    props = np.array([perturbed(3, j, 0.625) for _ in range(4) for j in rng.permutation(3)])
    drops = props @ A_TRUE.T
    assert np.allclose(fit_mixing_law(props, drops), A_TRUE, atol=1e-10)  # exact without noise
    noisy = drops + rng.normal(0, 1e-3, drops.shape)
    assert np.allclose(fit_mixing_law(props, noisy), A_TRUE, atol=1e-2)
    # one-hot proportions read A's columns directly
    eye = np.eye(3)
    assert np.allclose(fit_mixing_law(eye, eye @ A_TRUE.T), A_TRUE)


def test_normalise_and_update_keep_a_distribution():
    a = normalise(A_TRUE)
    assert a.min() == 0 and a.sum() == pytest.approx(1.0)
    p = eg_step(np.ones(3) / 3, a, 0.2)
    assert p.sum() == pytest.approx(1.0) and (p > 0).all()
    # the source whose training lowers the losses most (largest column sum of A) gains most
    assert np.argmax(p) == np.argmax(a.sum(axis=0))
    huge = eg_step(np.ones(3) / 3, a * 1e6, 10.0)  # no overflow
    assert np.isfinite(huge).all() and huge.sum() == pytest.approx(1.0)


def mixer(total: int = 40, limit: np.ndarray | None = None, **kw) -> AioliMix:
    cfg_ = MixingConfig(method="aioli", rounds=2, estimation_fraction=0.5, sweeps=2, **kw)
    return AioliMix(cfg_, ["a", "b", "c"], [0, 1, 2], np.ones(3),
                    np.full(3, np.inf) if limit is None else limit, 0.0, 16, total, seed=0)


def test_a_round_estimates_the_law_from_probe_losses():
    """Losses that follow the law exactly (each step lowers them by 0.01 A p): the round's
    fitted A is the true one (normalised), and the update follows from it."""
    mix = mixer()
    segs = [s for s in mix.segments if s.round == 0]
    # rounds of 20 steps, half of it estimating: 2 sweeps x 3 sources x 1 step
    assert len(segs) == 6 and mix.estimation_steps() == 12
    assert sorted(s.source for s in segs[:3]) == sorted(s.source for s in segs[3:]) == [0, 1, 2]
    used = run_law(mix)
    r0, r1 = mix.rounds
    assert r0["step"] == segs[-1].stop and r0["round"] == 0 and r1["round"] == 1
    assert np.allclose(r0["A"], normalise(A_TRUE), atol=1e-9)
    expect = eg_step(np.ones(3) / 3, normalise(A_TRUE), 0.2)
    assert list(r0["proportions"].values()) == pytest.approx(list(expect))
    # between estimations the run trains on the new proportions
    assert used[r0["step"]] == pytest.approx(expect)
    assert used[r0["step"] - 1] == pytest.approx(perturbed(3, segs[-1].source, 0.625))
    # with an EMA of A, each round's step starts from the first proportions
    ema = mixer(ema=0.5)
    run_law(ema, drift=True)
    a0, a1 = (np.array(r["A"]) for r in ema.rounds)
    expect = eg_step(np.ones(3) / 3, 0.5 * a1 + 0.5 * a0, 0.2)
    assert list(ema.rounds[1]["proportions"].values()) == pytest.approx(list(expect))


def run_law(mix: AioliMix, drift: bool = False) -> list[np.ndarray]:
    """Losses following the linear dynamic law: each step lowers them by 0.01 A p (with drift,
    A changes between the rounds). Returns the proportions of every step."""
    losses, drawn, used = np.full(3, 5.0), np.zeros(3), []
    for step in range(mix.total_steps):
        if mix.probe_due(step):
            mix.observe(step, losses.copy())
        p = mix.probs(step, drawn)
        assert p.sum() == pytest.approx(1.0)
        used.append(p)
        a = A_TRUE if not drift or step < 20 else A_TRUE.T
        losses = losses - 0.01 * a @ p
    return used


def test_proportions_respect_max_epochs_caps():
    limit = np.array([30.0, np.inf, np.inf])
    mix = mixer(total=40, limit=limit)
    alloc = Allocator(3, limit)
    rng = np.random.default_rng(0)
    losses = np.full(3, 5.0)
    for step in range(40):
        if mix.probe_due(step):
            mix.observe(step, losses.copy())
        p = mix.probs(step, alloc.drawn)
        assert p is not None and p.sum() == pytest.approx(1.0) and (p >= 0).all()
        alloc.allocate(16, p)
        assert alloc.drawn[0] <= 30
        losses = losses - 0.01 * A_TRUE @ p + rng.normal(0, 1e-3, 3)
    assert alloc.drawn.sum() == 40 * 16  # the others filled what a could not


def test_aioli_config_errors():
    with pytest.raises(ValueError, match="at least 2 sources"):
        AioliMix(MixingConfig(method="aioli"), ["a"], [0], np.ones(1), np.full(1, np.inf), 0.0,
                 16, 100, 0)
    with pytest.raises(ValueError, match="one_hot_factor"):
        mixer(one_hot_factor=0.3)
    with pytest.raises(ValueError, match="fewer rounds"):
        mixer(total=5)  # rounds of 2-3 steps: 3 estimation steps leave none to train
    with pytest.raises(ValueError, match="on_max_epochs"):
        TrainConfig(mixing={"method": "aioli"}, max_epochs=2, on_max_epochs="stop")
    with pytest.raises(ValueError, match="mix_temperature"):
        TrainConfig(mixing={"method": "aioli"}, mix_temperature={"start": 3})
    with pytest.raises(ValueError, match="anneal_source_weights"):
        TrainConfig(mixing={"method": "aioli"}, anneal_source_weights={"a": 2})
    # a round too short for every sweep: fewer sweeps, one step per perturbed mixture
    short = mixer(total=10)  # rounds of 5 steps, half of it = 2 steps for 3 sources
    assert [(s.stop - s.start) for s in short.segments if s.round == 0] == [1, 1, 1]


def test_first_proportions_and_left_out_sources(tmp_path: Path):
    data = synthetic(tmp_path / "d", {"a": 10, "b": 30, "c": 20})
    uniform = setup(data, cfg(60, mixing={"method": "aioli", "rounds": 2}))
    assert uniform.mix.init == pytest.approx(np.ones(3) / 3)
    static = setup(data, cfg(60, mixing={"method": "aioli", "rounds": 2, "init": "static"},
                             source_weights={"b": 2.0}))
    assert static.mix.init == pytest.approx(np.array([10, 60, 20]) / 90)
    dropped = setup(data, cfg(60, mixing={"method": "aioli", "rounds": 2},
                              source_weights={"c": 0.0}))
    assert dropped.mix.groups == [0, 1]
    assert dropped.plan["sources"]["c"]["rows_drawn"] == 0
    assert dropped.plan["basis"] == "aioli's first proportions"


def test_aioli_run_records_rounds_and_resumes_exactly(tmp_path: Path):
    data = synthetic(tmp_path / "data", {"a": 30, "b": 30, "c": 30})
    mixing = {"method": "aioli", "rounds": 2, "estimation_fraction": 0.5, "sweeps": 1,
              "probe_rows": 4}
    c = cfg(24, mixing=mixing, log_every=1, warmup_steps=2, checkpoint_every=5,
            keep_checkpoints=10)
    ref = train(c, data, tmp_path / "ref", tmp_path / "ref" / "metrics.jsonl")
    rounds = ref["mixing"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:
        assert sum(r["proportions"].values()) == pytest.approx(1.0)
        assert np.array(r["A"]).min() >= 0 and np.sum(r["A"]) == pytest.approx(1.0)
    assert ref["mixing"]["init"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    lines = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().split("\n")
             if x]
    assert all(set(m["mix"]) == {"a", "b", "c"} for m in lines)
    # after round 0's estimation the logged proportions are the round's
    after = next(m for m in lines if m["step"] == rounds[0]["step"] + 1)
    assert after["mix"] == pytest.approx(rounds[0]["proportions"])
    assert sum(ref["epochs"][s] * 30 for s in "abc") == pytest.approx(24 * 16)

    # cut after step 5 (inside round 0's estimation) and train again: the same run
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "ref", run)
    shutil.rmtree(run / "checkpoint")
    for d in (run / "checkpoints").glob("step-*"):
        if int(d.name.split("-")[1]) > 5:
            shutil.rmtree(d)
    again = train(c, data, run, run / "metrics.jsonl")
    assert again["resumed_from_step"] == 5
    for r, r_ref in zip(again["mixing"]["rounds"], rounds, strict=True):
        assert r["step"] == r_ref["step"]
        assert np.allclose(r["A"], r_ref["A"], atol=1e-5)
        assert r["proportions"] == pytest.approx(r_ref["proportions"], abs=1e-6)
    assert again["epochs"] == ref["epochs"]
    w_ref = load_file(Path(ref["checkpoint"]) / "model.safetensors")
    w = load_file(Path(again["checkpoint"]) / "model.safetensors")
    assert max(float(np.abs(w_ref[k] - w[k]).max()) for k in w_ref) <= 1e-6

    # the train stage puts the proportions, Aioli's rounds and the epochs into the catalog
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.start_run("r1", "t", "t.yaml", {})
    manifest = Manifest("train", "v", 0, 0, 0, {"metrics": "ref/metrics.jsonl"},
                        extra={"summary": ref})
    Train().after(RunInfo("r1", None, tmp_path, catalog), Upstream(), manifest, c)
    rows = catalog.show("r1")["metrics"]
    names = {m["name"] for m in rows}
    assert {"mix.a", "mix.b", "mix.c", "aioli.a", "epochs.a", "loss"} <= names
    aioli_a = [m for m in rows if m["name"] == "aioli.a"]
    assert [m["step"] for m in aioli_a] == [r["step"] for r in rounds]
    assert [m["value"] for m in aioli_a] == pytest.approx([r["proportions"]["a"] for r in rounds])
