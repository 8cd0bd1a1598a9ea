"""The stability gap (train.stability): the new data cut to its top rows by a stored score and
seen a set number of epochs, and the old domain's loss measured over the first steps of an
init_from run -- on synthetic token data and a tiny model trained here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from test_curriculum import word_tokenizer
from test_repetition import SEQ, cfg, run_sampling, setup, synthetic

from tasks import recipe as R
from tasks.identity import identity, versioned
from tasks.stage import RunInfo
from tasks.stages.tokenize import Tokenize, row_score_column
from tasks.stages.train import Train
from tasks.store import write_parquet
from tasks.train import PackedSequences, TrainConfig, train
from tasks.train.stability import gap, gap_rows, old_domain_rows, subset_size, top_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[2]
# 22 rows; a has one row without a score and two tied at 0.9
SCORES = {"a": np.array([0.3, 0.1, np.nan, 0.9, 0.0, 0.5, 0.9, 0.15, 0.8, 0.7], np.float32),
          "b": np.linspace(1.0, 0.0, 12, dtype=np.float32)}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """New data with row scores ("quality"), old data, and a model trained 3 steps on it."""
    root = tmp_path_factory.mktemp("stability")
    new = synthetic(root / "new", {"a": 10, "b": 12}, scores=SCORES)
    old = synthetic(root / "old", {"x": 12, "y": 8})
    base = train(cfg(3, warmup_steps=1), old, root / "base")
    return {"new": new, "old": old, "base": Path(base["checkpoint"]), "root": root}


def st(**kw: object) -> dict[str, object]:
    return {"by": "quality", **kw}


def test_top_rows_by_score_without_unscored_ties_to_the_lower_row():
    scores = np.array([0.5, np.nan, 0.9, 0.9, 0.1, 0.7], np.float32)
    rows = np.arange(6)
    assert top_rows(scores, rows, 3).tolist() == [2, 3, 5]
    assert top_rows(scores, rows, 1).tolist() == [2]  # the tie goes to the lower row
    assert top_rows(scores, rows, 6).tolist() == [0, 2, 3, 4, 5]  # never the unscored row
    assert top_rows(scores, np.array([0, 1, 4]), 5).tolist() == [0, 4]  # only the given rows
    # ceil(budget / epochs), capped by the top share, at least one row
    assert subset_size(64, 4, 100, 22) == 16 and subset_size(64, 3, 100, 22) == 22
    assert subset_size(64, 4, 50, 22) == 11 and subset_size(64, 4, 1, 22) == 1


def test_the_pool_is_the_top_rows_and_the_plan_counts_their_epochs_exactly(dirs):
    # 4 steps x 16 rows = 64 rows of budget; epochs 4 -> 16 rows, each seen exactly 4 times
    config = cfg(4, init_from="x", replay=0, stability=st(top_percent=100, epochs=4))
    s = setup(dirs["new"], config)
    scores = s.data.row_scores()
    want = sorted(sorted(np.flatnonzero(~np.isnan(scores)), key=lambda r: (-scores[r], r))[:16])
    assert s.pools["train"].tolist() == want and len(want) == 16
    assert s.plan["stability"] == {
        "by": "quality", "rows": 16, "scored_rows": 21, "all_rows": 22, "budget_rows": 64,
        "epochs_target": 4.0, "top_percent": 100.0,
        "min_score": pytest.approx(float(np.sort(scores[~np.isnan(scores)])[-16]))}
    mixture = s.mixture()
    seen = np.zeros(len(s.data), dtype=np.int64)
    for step in range(s.steps):
        for micro in range(config.grad_accum):
            np.add.at(seen, mixture.take(config.batch_size, s.mix.probs(step, mixture.drawn()),
                                         step, micro), 1)
    assert seen[want].tolist() == [4] * 16 and seen.sum() == 64  # nothing else drawn
    names, ids = s.data.source_ids()
    plan = s.plan["sources"]
    for i, src in enumerate(names):  # per source: its subset rows, and 4 epochs of them
        in_subset = int(np.isin(np.flatnonzero(ids == i), want).sum())
        assert plan[src]["rows"] == in_subset and plan[src]["epochs"] == 4.0
    assert s.epochs_seen(mixture) == {src: 4.0 for src in names}
    # top_percent caps the subset: more epochs of fewer rows
    capped_cfg = cfg(4, init_from="x", replay=0, stability=st(top_percent=50))
    capped = setup(dirs["new"], capped_cfg)
    assert capped.plan["stability"]["rows"] == 10  # floor(50 % of 21 scored rows)
    counted, _ = run_sampling(capped, capped_cfg)
    assert counted == {k: v["rows_drawn"] for k, v in capped.plan["sources"].items()}
    assert sum(counted.values()) == 64  # 6.4 epochs of 10 rows
    assert sum(v["rows"] for v in capped.plan["sources"].values()) == 10


def test_with_replay_the_budget_is_the_new_datas_share(dirs):
    from tasks.train.continual import InitSource

    config = cfg(4, init_from="x", replay=0.25, stability=st(top_percent=100, epochs=4))
    s = setup(dirs["new"], config, InitSource(dirs["base"], dirs["old"], "id"))
    assert s.plan["stability"]["budget_rows"] == 48 and s.plan["stability"]["rows"] == 12
    counted, _ = run_sampling(s, config)
    assert counted == {k: v["rows_drawn"] for k, v in s.plan["sources"].items()}
    assert counted["replay"] == 16 and counted["a"] + counted["b"] == 48
    assert s.plan["sources"]["replay"]["rows"] == 20  # the old data is not cut
    assert s.plan["sources"]["a"]["epochs"] == s.plan["sources"]["b"]["epochs"] == 4.0


def test_with_order_the_subset_comes_in_score_order(dirs):
    config = cfg(2, init_from="x", replay=0, checkpoint_every=1, stability=st(epochs=2,
                 top_percent=100), order={"by": "quality", "ascending": False})
    s = setup(dirs["new"], config)
    mixture = s.mixture()
    rows = mixture.take(16, s.mix.probs(0, mixture.drawn()), 0, 0)  # one epoch of the subset
    assert sorted(rows) == s.pools["train"].tolist() and len(rows) == 16
    scores = s.data.row_scores()[rows]
    assert (np.diff(scores) <= 0).all()


def test_validation():
    with pytest.raises(ValueError, match="needs init_from"):
        TrainConfig(stability={"by": "q"})
    with pytest.raises(ValueError, match="needs init_from"):
        TrainConfig(stability={})
    with pytest.raises(ValueError, match="one row-score column per run"):
        TrainConfig(init_from="x", order={"by": "a"}, checkpoint_every=1, stability={"by": "b"})
    same = TrainConfig(init_from="x", order={"by": "a"}, checkpoint_every=1,
                       stability={"by": "a"})
    assert same.stability is not None and same.stability.by == "a"
    with pytest.raises(ValueError, match="one pool"):
        TrainConfig(init_from="x", stability={"by": "q"}, source_weights={"a": 2.0})
    with pytest.raises(ValueError, match="top_percent"):
        TrainConfig(init_from="x", stability={"by": "q", "top_percent": 0})
    raw = {"name": "t", "input": {"paths": ["x.jsonl"]},
           "stages": {"train": {"stability": {"by": "q"}}}}
    with pytest.raises(R.RecipeError, match="needs init_from"):
        R.parse_recipe(raw)


def test_data_without_its_row_scores_is_refused(dirs):
    with pytest.raises(ValueError, match="without row scores"):
        setup(dirs["old"], cfg(2, init_from="x", replay=0, stability=st()))
    with pytest.raises(ValueError, match="with row scores of 'quality'"):
        setup(dirs["new"], cfg(2, init_from="x", replay=0, stability={"by": "other"}))


def test_versions_without_stability_are_as_before(tmp_path: Path):
    """tokenize carries row scores only for order or stability.by; the train stage versions
    stability only when it selects a subset (the probes only measure)."""
    raw = {"name": "t", "input": {"paths": ["data/sample/sample.jsonl"]}}
    plain = RunInfo("r", R.parse_recipe(raw), tmp_path, None)
    assert set(Tokenize().config(plain, None)) == {"tokenize", "given_tokenizer"}
    assert row_score_column(plain) is None

    def recipe(**train: object) -> RunInfo:
        return RunInfo("r", R.parse_recipe({**raw, "stages": {"train": train}}), tmp_path, None)

    assert row_score_column(recipe(init_from="x", stability={"by": "q"})) == "q"
    assert row_score_column(recipe(init_from="x", stability={})) is None

    def train_version(run: RunInfo) -> object:
        variant = Train().variants(run, None)[0]
        return versioned(Train().config(run, variant))

    base = TrainConfig()
    before = {k: v for k, v in identity(base).items() if k != "stability"}
    assert train_version(plain) == before  # the same dict a recipe had before the key
    cont = train_version(recipe(init_from="x"))
    assert train_version(recipe(init_from="x", stability={"probe_every": 2})) == cont
    chosen = train_version(recipe(init_from="x", stability={"by": "q"}))
    assert chosen != cont and chosen["stability"] == {"by": "q", "top_percent": 10.0,
                                                      "epochs": 4.0}
    assert "stability" not in base.trajectory()
    probes = TrainConfig(init_from="x", stability={"probe_rows": 3})
    assert probes.trajectory() == TrainConfig(init_from="x").trajectory()


def _metrics(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_old_domain_loss_is_measured_at_the_stated_steps(dirs, tmp_path: Path):
    """At step 0 it is the init model's loss on the old data's last rows (no held-out split
    here), computed directly; then every probe_every steps up to probe_steps; training is the
    same with or without the probes."""
    import torch
    from transformers import AutoModelForCausalLM

    base = str(dirs["base"])
    c = cfg(7, init_from=base, replay=0.25, log_every=1, warmup_steps=1,
            stability=st(probe_steps=5, probe_every=2, probe_rows=5))
    s = train(c, dirs["new"], tmp_path / "run", tmp_path / "m.jsonl")
    curve = s["old_domain_loss"]
    assert [p[0] for p in curve] == [0, 2, 4] and s["old_domain_rows"] == "train-tail"

    data = PackedSequences(dirs["old"], json.loads((dirs["old"] / "meta.json").read_text()))
    rows = torch.from_numpy(data.get(list(range(len(data) - 5, len(data)))))
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True).eval()
    with torch.no_grad():
        direct = model(input_ids=rows, labels=rows).loss.item()
    assert curve[0][1] == pytest.approx(direct, abs=1e-5)

    lines = _metrics(tmp_path / "m.jsonl")
    probes = [[m["step"], m["old_domain_loss"]] for m in lines if "old_domain_loss" in m]
    assert probes == curve and lines[0] == {"step": 0, "old_domain_loss": curve[0][1]}
    assert [m["step"] for m in lines] == [0, 1, 2, 2, 3, 4, 4, 5, 6, 7]  # in step order

    # the same run without stability's subset or probes: the same losses; its metrics hold
    # loss records only and its summary no curve
    plain = train(c.model_copy(update={"stability": None}), dirs["new"], tmp_path / "plain",
                  tmp_path / "p.jsonl")
    assert "old_domain_loss" not in plain
    losses = [m for m in lines if "loss" in m]
    plain_lines = _metrics(tmp_path / "p.jsonl")
    assert [m["step"] for m in plain_lines] == list(range(1, 8))
    assert [m["loss"] for m in plain_lines] != [m["loss"] for m in losses]  # a subset differs
    only_probes = c.model_copy(update={"stability": c.stability.model_copy(update={"by": None})})
    again = train(only_probes, dirs["new"], tmp_path / "probes", tmp_path / "q.jsonl")
    assert [m["loss"] for m in _metrics(tmp_path / "q.jsonl") if "loss" in m] == \
        [m["loss"] for m in plain_lines]  # probes do not change training
    assert [p[0] for p in again["old_domain_loss"]] == [0, 2, 4]
    assert again["old_domain_loss"][0] == curve[0]  # the same model, the same rows at step 0


def test_a_resumed_run_keeps_its_curve(dirs, tmp_path: Path):
    c = cfg(6, init_from=str(dirs["base"]), replay=0, log_every=1, warmup_steps=1,
            checkpoint_every=3, stability=st(probe_steps=6, probe_every=2, probe_rows=4))
    ref = train(c, dirs["new"], tmp_path / "ref", tmp_path / "ref" / "m.jsonl")
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "ref", run)  # cut after step 3, then train again
    shutil.rmtree(run / "checkpoint")
    shutil.rmtree(run / "checkpoints" / "step-6")
    again = train(c, dirs["new"], run, run / "m.jsonl")
    assert again["resumed_from_step"] == 3
    assert [p[0] for p in again["old_domain_loss"]] == [0, 2, 4, 6]
    assert np.allclose(np.array(again["old_domain_loss"]), np.array(ref["old_domain_loss"]),
                       atol=1e-6)
    assert [m["step"] for m in _metrics(run / "m.jsonl")] == \
        [m["step"] for m in _metrics(tmp_path / "ref" / "m.jsonl")]


def test_old_domain_rows_are_the_first_heldout_documents_packed(dirs, tmp_path: Path):
    old = tmp_path / "old"
    shutil.copytree(dirs["old"], old)
    word_tokenizer(old / "tokenizer.json", 64)  # the same ids, split at spaces
    docs = [" ".join(f"w{(i * 7 + j) % 60 + 1}" for j in range(n)) for i, n in
            enumerate([9, 20, 5, 30, 12])]
    write_parquet(pa.table({"id": [f"d{i}" for i in range(5)],
                            "text": pa.array(docs, pa.large_string()),
                            "source": ["x"] * 5, "lang": ["en"] * 5}),
                  old / "heldout" / "part-00000.parquet")
    stream = [int(w[1:]) for d in docs for w in [*d.split(), "w0"]]  # w<i> is id i; EOS 0
    rows, origin = old_domain_rows(old, 3)
    assert origin == "heldout"
    assert rows.tolist() == np.array(stream[:3 * SEQ]).reshape(3, SEQ).tolist()
    rows, origin = old_domain_rows(old, 20)  # more rows than the documents fill
    assert origin == "train-tail" and len(rows) == 20


def test_the_gap_and_its_recovery():
    g = gap([(0, 2.0), (5, 2.5), (10, 2.1), (15, 2.01), (20, 1.9)])
    assert g == {"initial": 2.0, "max": 2.5, "max_step": 5, "gap": 0.5, "recovered_step": 15,
                 "last_step": 20}
    assert gap([(0, 2.0), (5, 2.5), (10, 2.3)])["recovered_step"] is None
    assert gap([(0, 2.0), (5, 1.9)])["recovered_step"] == 0  # no gap: the peak is the start
    assert gap([]) is None
    metrics = [{"name": "old_domain_loss", "step": s, "value": v, "seed": 0}
               for s, v in [(0, 2.0), (5, 2.5), (10, 2.3)]] + \
        [{"name": "loss", "step": 5, "value": 9.0, "seed": 0}]
    assert gap_rows(metrics) == [{"seed": 0, "initial": 2.0, "max (gap)": "2.5000 (+0.5000 at "
                                  "step 5)", "recovered": "not recovered in 10 steps"}]
    from tasks.report import more_tables

    html = more_tables({"stages": [], "metrics": metrics})  # the run report's section
    assert "Old-domain loss (stability gap)" in html and "not recovered in 10 steps" in html
    assert "Old-domain" not in more_tables({"stages": [], "metrics": metrics[-1:]})


def test_the_documented_recipe_validates():
    doc = (ROOT / "docs" / "training.md").read_text()
    section = doc.split("### Stability gap", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert snippet, "docs/training.md: no recipe snippet in the stability gap section"
    raw = yaml.safe_load(snippet.group(1))
    raw.update(name="stability-doc", input={"paths": ["x.jsonl"]})
    t = R.parse_recipe(raw).train_config()
    assert t.stability is not None and t.init_from and t.stability.by
    assert t.replay == TrainConfig.model_fields["replay"].default  # replay kept at its default
