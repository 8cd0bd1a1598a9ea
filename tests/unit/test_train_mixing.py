"""Temperature sampling, per-source loss weights (upweighting instead of upsampling), dropout,
the mixing proportions in the metrics, and the identity of the new train config sections."""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_repetition import SIZES, cfg, setup, synthetic
from transformers import AutoModelForCausalLM

from tasks.identity import identity
from tasks.stages.train import tail_metrics
from tasks.train import MixingConfig, MixTemperature, OrderConfig, TrainConfig, train
from tasks.train.mixing import temperature_at
from tasks.train.model import add_dropout, build_model, row_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory.mktemp("mix") / "data", SIZES)


def test_temperature_schedule_moves_from_balanced_to_natural(data: Path):
    t = MixTemperature(start=1000.0, end=1.0)
    assert temperature_at(0, 100, t) == 1000.0 and temperature_at(99, 100, t) == 1.0
    assert temperature_at(33, 100, t) == pytest.approx(1000 - 999 / 3)  # linear in the step
    half = MixTemperature(start=5.0, until=0.5)
    assert temperature_at(50, 100, half) == temperature_at(90, 100, half) == 1.0
    assert temperature_at(49, 100, half) > 1.0
    step = MixTemperature(start=5.0, shape="step", until=0.3)
    assert [temperature_at(s, 100, step) for s in (0, 29, 30, 99)] == [5.0, 5.0, 1.0, 1.0]

    s = setup(data, cfg(100, mix_temperature={"start": 1000.0}))
    rows = np.array(list(SIZES.values()), dtype=float)
    assert s.mix.base(0) == pytest.approx(np.ones(3) / 3, abs=2e-3)  # ~ balanced
    mid = rows ** (1 / temperature_at(60, 100, t))
    assert s.mix.base(60) == pytest.approx(mid / mid.sum())
    assert s.mix.base(99) == pytest.approx(rows / rows.sum())  # natural on the last step
    # source weights still multiply: p ~ w_s n_s^(1/T)
    w = setup(data, cfg(100, mix_temperature={"start": 2.0, "end": 2.0},
                        source_weights={"c": 3.0})).mix.base(0)
    expect = rows ** 0.5 * np.array([1, 1, 3.0])
    assert w == pytest.approx(expect / expect.sum())
    # the small source is upsampled early: more of its epochs than natural sampling gives
    natural = setup(data, cfg(100, max_epochs={})).plan["sources"]["a"]["epochs"]
    assert s.plan["sources"]["a"]["epochs"] > 1.5 * natural


def test_row_losses_average_to_the_models_loss():
    torch.manual_seed(0)
    model = build_model("tiny", 64, 16, 0).eval()
    ids = torch.randint(1, 64, (4, 16))
    per_row = row_losses(model, ids)
    assert per_row.shape == (4,)
    with torch.no_grad():
        assert float(per_row.mean()) == pytest.approx(
            float(model(input_ids=ids, labels=ids).loss), abs=1e-5)


def losses_by_source(result: dict[str, Any], data: Path) -> dict[str, float]:
    model = AutoModelForCausalLM.from_pretrained(result["checkpoint"], local_files_only=True)
    meta = json.loads((data / "meta.json").read_text())
    rows = np.concatenate([np.load(data / s["path"]) for s in meta["train_shards"]])
    out: dict[str, list[float]] = {}
    at = 0
    for s in meta["train_shards"]:
        for src, (lo, hi) in s["sources"].items():
            ids = torch.from_numpy(rows[at + lo:at + hi].astype(np.int64))
            with torch.no_grad():
                out.setdefault(src, []).append(float(row_losses(model.eval(), ids).mean()))
        at += s["n_seq"]
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_source_loss_weights_upweight_a_source(data: Path, tmp_path: Path):
    base = {"warmup_steps": 2, "log_every": 1, "lr": 1e-2}
    plain = train(cfg(16, **base), data, tmp_path / "plain", tmp_path / "plain.jsonl")
    # equal weights change nothing: the weighted loss is divided by the mean weight
    train(cfg(16, source_loss_weights={"a": 3.0, "b": 3.0, "c": 3.0}, **base), data,
          tmp_path / "same", tmp_path / "same.jsonl")
    a = [json.loads(x)["loss"] for x in (tmp_path / "plain.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "same.jsonl").read_text().splitlines()]
    assert b == pytest.approx(a, abs=1e-4)
    # all the weight on source a: a is learnt, b and c barely
    only_a = train(cfg(16, source_loss_weights={"b": 0.0, "c": 0.0}, **base), data,
                   tmp_path / "only_a", tmp_path / "only_a.jsonl")
    lp, la = losses_by_source(plain, data), losses_by_source(only_a, data)
    assert la["a"] < lp["a"]
    assert la["b"] > lp["b"] + 0.5 and la["c"] > lp["c"] + 0.5
    # the logged loss stays the plain mean over all rows (comparable across runs)
    assert only_a["data_plan"]["sources"]["b"]["rows_drawn"] > 0
    with pytest.raises(ValueError, match="'nope'"):
        setup(data, cfg(4, source_loss_weights={"nope": 2.0}))


def test_dropout_trains_and_saves_a_plain_model(data: Path, tmp_path: Path):
    torch.manual_seed(0)
    model = build_model("tiny", 64, 16, 0)
    add_dropout(model, 0.5)
    ids = torch.randint(1, 64, (2, 16))
    model.train()
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    model.eval()
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)

    kw = {"warmup_steps": 2, "log_every": 1}
    plain = train(cfg(6, **kw), data, tmp_path / "plain", tmp_path / "p.jsonl")
    dropped = train(cfg(6, dropout=0.1, **kw), data, tmp_path / "drop", tmp_path / "d.jsonl")
    assert math.isfinite(dropped["final_loss"]) and dropped["final_loss"] != plain["final_loss"]
    saved = AutoModelForCausalLM.from_pretrained(dropped["checkpoint"], local_files_only=True)
    assert saved.config.attention_dropout == 0.0  # the checkpoint has no dropout of its own
    again = train(cfg(6, dropout=0.1, **kw), data, tmp_path / "again")
    assert again["final_loss"] == dropped["final_loss"]  # seeded: the same masks


def test_metrics_carry_the_proportions_of_each_step(data: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture):
    c = cfg(4, mix_temperature={"start": 10.0}, log_every=1, warmup_steps=1)
    train(c, data, tmp_path / "run", tmp_path / "m.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    s = setup(data, c)
    for m in lines:
        assert m["mix"] == pytest.approx(dict(zip("abc", s.mix.base(m["step"] - 1),
                                                  strict=True)))
    # the train stage streams them into the run's log
    log, stop = logging.getLogger("test.mix"), threading.Event()
    stop.set()
    with caplog.at_level(logging.INFO, logger="test.mix"):
        tail_metrics(tmp_path / "m.jsonl", stop, log)
    assert caplog.text.count(" mix a=") == len(lines)


NESTED = {"mix_temperature": (MixTemperature, {}), "order": (OrderConfig, {"by": "q"}),
          "mixing": (MixingConfig, {"method": "aioli"})}
OTHER = {"start": 7.0, "end": 2.0, "shape": "step", "until": 0.5, "by": "r", "ascending": False,
         "rounds": 3, "estimation_fraction": 0.3, "step_size": 0.5, "sweeps": 2,
         "one_hot_factor": 0.9, "ema": 0.1, "init": "static", "probe_rows": 3}


@pytest.mark.parametrize("field", list(NESTED))
def test_every_nested_field_changes_the_train_version(field: str):
    """tests/unit/test_identity.py walks TrainConfig's own fields; this walks the nested
    sections: each of their fields is versioned (none is operational)."""
    model, base = NESTED[field]
    extra = {"checkpoint_every": 5} if field == "order" else {}
    ref = identity(TrainConfig(**{field: base}, **extra))
    assert identity(TrainConfig(**extra)) != ref
    for name in model.model_fields:
        if name == "method":
            continue  # a single choice so far
        changed = TrainConfig(**{field: {**base, name: OTHER[name]}}, **extra)
        assert identity(changed) != ref, f"{field}.{name}"
