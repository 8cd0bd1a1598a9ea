"""Schedules, domain-weighted sampling, continual pre-training (init_from, replay) and
checkpoint averaging, on data packed by tasks/tokenize.py from the real sample."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from tasks import tokenize
from tasks.catalog import Catalog
from tasks.store import write_parquet
from tasks.train import (
    INIT_INFO,
    Mixture,
    PackedSequences,
    TrainConfig,
    complete_checkpoints,
    lr_at,
    mixture_pools,
    resolve_init,
    train,
)

CORPUS = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
SEQ = 64
# the old data: English Wikipedia summaries; the new slice: other domains (a strong shift)
OLD = {"wikipedia-summaries"}
NEW = {"devils-dictionary", "postgresql-docs", "python-docs", "django-docs"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _docs(sources: set[str], lang: str | None = None) -> list[dict]:
    docs = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    return [d for d in docs if d["source"] in sources and (lang is None or d["lang"] == lang)]


def _pack(root: Path, name: str, docs: list[dict], tok: Path, heldout: float = 0.1) -> Path:
    kept = root / name / "part-00000.parquet"
    write_parquet(pa.table({
        "id": [d["id"] for d in docs],
        "text": pa.array([d["text"] for d in docs], pa.large_string()),
        "source": [d["source"] for d in docs],
        "lang": [d["lang"] for d in docs],
    }), kept)
    out = root / f"{name}-tokens"
    if not tok.exists():
        tokenize.train_tokenizer(tokenize.iter_train_texts([str(kept)], heldout, 10**9), 1024,
                                 2, tok)
    stats = tokenize.pack_shard(str(kept), str(tok), str(out), "00000", SEQ, heldout)
    shutil.copyfile(tok, out / "tokenizer.json")
    tokenize.write_meta(out, tok, SEQ, [stats])
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Old data (en Wikipedia) with the tokenizer trained on it; a new slice of other domains
    tokenized with that same tokenizer, as the flow does for init_from."""
    if not CORPUS.exists():
        pytest.skip(f"corpus sample not found at {CORPUS}")
    root = tmp_path_factory.mktemp("continual")
    tok = root / "tokenizer.json"
    old = _pack(root, "old", _docs(OLD, "en"), tok)
    new = _pack(root, "new", _docs(NEW), tok)
    return {"old": old, "new": new, "root": root}


def heldout_loss(ckpt: Path, data_dir: Path) -> float:
    """Mean next-token loss of a checkpoint on a data dir's held-out documents (packed)."""
    tok = Tokenizer.from_file(str(data_dir / "tokenizer.json"))
    stream: list[int] = []
    for enc in tok.encode_batch(tokenize.read_heldout(data_dir).column("text").to_pylist(),
                                add_special_tokens=False):
        stream += [*enc.ids, tok.token_to_id(tokenize.EOS)]
    n = len(stream) // SEQ
    rows = torch.tensor(stream[: n * SEQ]).view(n, SEQ)
    model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True).eval()
    with torch.no_grad():
        losses = [model(input_ids=b, labels=b).loss.item() * len(b) for b in rows.split(64)]
    return sum(losses) / n


def cfg(steps: int, **kw) -> TrainConfig:
    kw.setdefault("batch_size", 16)
    kw.setdefault("log_every", 10)
    kw.setdefault("warmup_steps", 10)
    return TrainConfig(max_tokens=steps * kw["batch_size"] * SEQ, **kw)


def test_wsd_schedule_warms_holds_then_decays_linearly():
    c = TrainConfig(schedule="wsd", lr=1e-3, min_lr_ratio=0.1, warmup_steps=10,
                    decay_fraction=0.2)
    total = 100  # decay over the last 20 steps: 80..99
    lrs = [lr_at(s, total, c) for s in range(total)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10:80] == [1e-3] * 70  # stable at the peak
    assert lrs[80] < 1e-3 and lrs[-1] == pytest.approx(1e-4)  # decay ends at the floor
    steps = np.diff(lrs[79:])
    assert np.allclose(steps, steps[0]) and steps[0] < 0  # linear
    # a decay longer than what is left after warmup starts right after it
    long = c.model_copy(update={"decay_fraction": 1.0})
    assert lr_at(10, total, long) < 1e-3 and lr_at(99, total, long) == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        TrainConfig(schedule="linear")


def test_packing_is_per_source_and_indexed(corpora: dict[str, Path]):
    meta = json.loads((corpora["new"] / "meta.json").read_text())
    assert meta["dtype"] == "uint16"
    (shard,) = meta["train_shards"]
    ranges = shard["sources"]
    assert set(ranges) == NEW
    spans = sorted(ranges.values())
    assert spans[0][0] == 0 and spans[-1][1] == shard["n_seq"]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # contiguous
    rows = np.load(corpora["new"] / shard["path"])
    tok = Tokenizer.from_file(str(corpora["new"] / "tokenizer.json"))
    # a row of the postgresql range holds postgresql text only
    lo, _ = ranges["postgresql-docs"]
    assert "SQL" in tok.decode(rows[lo].tolist()) or "postgres" in tok.decode(
        rows[lo].tolist()).lower()
    data = PackedSequences(corpora["new"], meta)
    by_source = data.source_rows()
    assert sum(len(r) for r in by_source.values()) == len(data)


def test_source_weights_and_annealing_reweight_batches(corpora: dict[str, Path]):
    meta = json.loads((corpora["new"] / "meta.json").read_text())
    data = PackedSequences(corpora["new"], meta)
    src_of = np.empty(len(data), dtype=object)
    for s, rows in data.source_rows().items():
        src_of[rows] = s
    natural = {s: len(r) / len(data) for s, r in data.source_rows().items()}
    c = TrainConfig(source_weights={"devils-dictionary": 0.0, "python-docs": 4.0},
                    anneal_source_weights={"django-docs": 20.0}, anneal_fraction=0.2)
    pools, probs = mixture_pools(data, c, replay=False)
    order = Mixture(pools, seed=0)
    early = [src_of[i] for step in range(40) for i in order.take(32, probs(step, 100), step, 0)]
    late = [src_of[i] for step in range(80, 100)
            for i in order.take(32, probs(step, 100), step, 0)]
    assert "devils-dictionary" not in early  # weight 0: never drawn
    share = {s: early.count(s) / len(early) for s in NEW}
    expect = natural["python-docs"] * 4 / (natural["python-docs"] * 4 + natural["postgresql-docs"]
                                           + natural["django-docs"])
    assert share["python-docs"] == pytest.approx(expect, abs=0.05)
    assert late.count("django-docs") / len(late) > 2 * share["django-docs"]  # upsampled at the end
    # the state is the pools' positions: a restored order draws what the original draws next
    again = Mixture(pools, seed=0, state=json.loads(json.dumps(order.state())))
    p = probs(100, 100)
    assert again.take(32, p, 100, 0) == order.take(32, p, 100, 0)
    with pytest.raises(ValueError, match="the data's sources"):
        mixture_pools(data, TrainConfig(source_weights={"nope": 1.0}), replay=False)


def test_replay_keeps_old_data_loss_lower(corpora: dict[str, Path], capsys):
    """Continual training on the new slice with 5 % replay forgets less of the old data."""
    root = corpora["root"]
    # 40 steps a run: both effects are wider here than at 100 (forgetting +0.19 vs +0.07 nats,
    # replay's gain -0.12 vs -0.07) at 40 % of the training time
    base = train(cfg(40), corpora["old"], root / "base")
    base_ckpt = Path(base["checkpoint"])
    info = json.loads((base_ckpt / INIT_INFO).read_text())
    assert (base_ckpt / info["data_dir"]).resolve() == corpora["old"].resolve()

    loss_before = heldout_loss(base_ckpt, corpora["old"])
    results = {}
    for replay in (0.0, 0.05):
        c = cfg(40, init_from=str(base_ckpt), replay=replay, schedule="wsd")
        metrics = root / f"cont-{replay}.jsonl"
        s = train(c, corpora["new"], root / f"cont-{replay}", metrics_path=metrics)
        first = json.loads(metrics.read_text().splitlines()[0])
        assert first["loss"] < math.log(1024) - 0.5  # starts from the trained model, not random
        assert s["init_from"] == str(base_ckpt)
        assert s["replay_data"] == (str(corpora["old"].resolve()) if replay else None)
        results[replay] = heldout_loss(Path(s["checkpoint"]), corpora["old"])
    with capsys.disabled():
        print(f"\nold held-out loss: base {loss_before:.4f}, continued without replay "
              f"{results[0.0]:.4f}, with 5% replay {results[0.05]:.4f}")
    assert results[0.0] > loss_before  # training on the new slice forgets the old data
    assert results[0.05] < results[0.0]


def test_init_from_refuses_another_preset_or_tokenizer(corpora: dict[str, Path], tmp_path: Path):
    base = train(cfg(2, log_every=1), corpora["old"], tmp_path / "base")
    with pytest.raises(ValueError, match="not a 'small' model"):
        train(cfg(2, preset="small", init_from=base["checkpoint"]), corpora["new"],
              tmp_path / "a")
    other = tmp_path / "other-tok"
    _pack(tmp_path, "other", _docs(NEW)[:200], other / "tokenizer.json")
    with pytest.raises(ValueError, match="vocabulary|another tokenizer"):
        train(cfg(2, init_from=base["checkpoint"], replay=0), tmp_path / "other-tokens",
              tmp_path / "b")
    # a folder with no record of its data cannot replay it
    bare = tmp_path / "bare"
    shutil.copytree(base["checkpoint"], bare)
    (bare / INIT_INFO).unlink()
    with pytest.raises(ValueError, match="replay_data"):
        train(cfg(2, init_from=str(bare)), corpora["new"], tmp_path / "c")


def test_resolve_init_by_run_id_through_the_catalog(corpora: dict[str, Path], tmp_path: Path):
    root = tmp_path / "root"
    tok_dir = root / "stages" / "tokenize" / "t0k"
    shutil.copytree(corpora["old"], tok_dir)
    cat = Catalog(root / "catalog.duckdb")
    cat.start_run("run-1", "r", "r.yaml", {})
    for seed, version in [(0, "tr0"), (1, "tr1")]:
        stage = root / "stages" / "train" / version
        train(cfg(2, seed=seed), tok_dir, stage)
        (stage / "manifest.json").write_text(json.dumps({"config": {"seed": seed}}))
    for stage, version in [("tokenize", "t0k"), ("train", "tr0"), ("train", "tr1")]:
        cat.record_stage("run-1", {"stage": stage, "version": version, "docs_in": 1,
                                   "docs_kept": 1, "docs_rejected": 0}, 0.1, "x", False)
    init = resolve_init("run-1", root)
    assert init.checkpoint == root / "stages" / "train" / "tr0" / "checkpoint"
    assert init.data_dir == tok_dir and init.identity == "tr0" and init.run_id == "run-1"
    assert init.tokenizer == tok_dir / "tokenizer.json"
    assert resolve_init("run-1", root, seed=1).identity == "tr1"
    # a path: the data dir comes from the checkpoint's own record
    by_path = resolve_init(str(init.checkpoint))
    assert by_path.data_dir == tok_dir.resolve() and len(by_path.identity) == 16
    with pytest.raises(ValueError, match="no such run"):
        resolve_init("run-2", root)
    with pytest.raises(ValueError, match="no data root"):
        resolve_init("run-1")


def test_average_last_checkpoints(corpora: dict[str, Path], tmp_path: Path):
    c = cfg(6, batch_size=8, log_every=1, checkpoint_every=2, keep_checkpoints=2,
            average_last=2)
    s = train(c, corpora["old"], tmp_path / "run")
    assert s["averaged_steps"] == [4, 6]
    kept = dict(complete_checkpoints(tmp_path / "run"))
    a, b = (load_file(kept[k] / "model.safetensors") for k in (4, 6))
    final = load_file(Path(s["checkpoint"]) / "model.safetensors")
    for k in final:
        assert np.allclose(final[k], (a[k].astype(np.float64) + b[k]) / 2, atol=1e-7), k
    assert not np.allclose(final["model.norm.weight"], b["model.norm.weight"])
    with pytest.raises(ValueError, match="average_last"):
        TrainConfig(average_last=3, checkpoint_every=2, keep_checkpoints=2)


def test_continued_run_with_replay_and_weights_resumes_exactly(corpora: dict[str, Path],
                                                              tmp_path: Path):
    base = train(cfg(2, log_every=1), corpora["old"], tmp_path / "base")
    c = cfg(6, batch_size=8, log_every=1, warmup_steps=2, checkpoint_every=3, keep_checkpoints=2,
            init_from=base["checkpoint"], replay=0.25, source_weights={"python-docs": 3.0},
            anneal_source_weights={"django-docs": 5.0}, anneal_fraction=0.5)
    ref = train(c, corpora["new"], tmp_path / "ref", tmp_path / "ref" / "metrics.jsonl")
    # the same run, cut after step 3: drop what it wrote later, then train again
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "ref", run)
    shutil.rmtree(run / "checkpoint")
    shutil.rmtree(run / "checkpoints" / "step-6")
    state = json.loads((run / "checkpoints" / "step-3" / "train_state.json").read_text())
    assert set(state["data_order"]["pools"]) == {"postgresql-docs", "python-docs", "django-docs",
                                                 "devils-dictionary", "replay:"}
    again = train(c, corpora["new"], run, run / "metrics.jsonl")
    assert again["resumed_from_step"] == 3
    rows_ref = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    rows = (run / "metrics.jsonl").read_text().splitlines()
    for a, b in zip(map(json.loads, rows_ref), map(json.loads, rows), strict=True):
        assert a["step"] == b["step"] and abs(a["loss"] - b["loss"]) <= 1e-6
    w_ref = load_file(Path(ref["checkpoint"]) / "model.safetensors")
    w = load_file(Path(again["checkpoint"]) / "model.safetensors")
    assert max(float(np.abs(w_ref[k] - w[k]).max()) for k in w_ref) <= 1e-6
