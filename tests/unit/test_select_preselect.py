"""PreSelect (tasks/select/preselect.py): the predictive-strength formula against hand
computations, the labelling, the downstream scores read from a real catalog, and the stage on
a pool built so that one group of documents predicts the models' ranking: proxies trained
0, 10 and 40 steps on English text (scored 0, 1, 2), whose losses on held-out English text
fall with training while their losses on random character strings do not. The English
documents must become the positives and rank top by preselect_score."""

from __future__ import annotations

import json
import random
import shutil
import string
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_select_loss import (
    execute,
    make_checkpoint,
    read_kept,
    sample_texts,
    setup_run,
    write_pool,
)

from tasks.select import loss
from tasks.select.preselect import COLUMN, Config, PreSelect, downstream, label, strength

SMALL = {"bucket": 50_000, "epoch": 25, "lr": 0.1, "threads": 1}  # few lines: a gentle rate


def test_strength_is_the_share_of_pairs_in_the_right_order() -> None:
    scores = np.array([3.0, 2.0, 1.0])  # model 0 is the best
    losses = np.array([[1.0, 2.0, 3.0],   # best model lowest loss: every pair agrees
                       [3.0, 2.0, 1.0],   # reversed: none
                       [1.0, 3.0, 2.0],   # (0,1) and (0,2) agree, (1,2) not
                       [1.0, 1.0, 2.0],   # a tie disagrees: (0,2), (1,2)
                       [1.0, np.nan, 2.0]])
    s = strength(losses, scores)
    assert s[:4] == pytest.approx([1.0, 0.0, 2 / 3, 2 / 3])
    assert np.isnan(s[4])
    # pairs with equal scores do not count: Z = 2
    assert strength(np.array([[1.0, 5.0, 2.0]]), np.array([2.0, 2.0, 1.0]))[0] == 0.5
    with pytest.raises(ValueError, match="all equal"):
        strength(losses, np.array([1.0, 1.0, 1.0]))


def test_labels_take_the_fraction_from_each_end() -> None:
    s = np.array([1.0, 0.0, 0.5, np.nan, 1.0, 0.25, 0.75, 0.0, 1.0])
    ids = pa.array([f"d{i}" for i in range(len(s))])
    lab = label(s, ids, 0.25, seed=0)  # 8 with strength -> 2 positives, 2 negatives
    assert sorted(np.flatnonzero(lab == 0)) == [1, 7]
    pos = np.flatnonzero(lab == 1)
    assert len(pos) == 2 and set(pos) <= {0, 4, 8}  # the ties at 1.0, broken by the draws
    assert lab[3] == -1
    assert (label(s, ids, 0.25, seed=0) == lab).all()


def test_downstream_scores_come_from_the_catalog(tmp_path: Path) -> None:
    from tasks.catalog import Catalog

    src = make_checkpoint(tmp_path / "m", [d["text"] for d in sample_texts(40)], seed=0)
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.start_run("run-1", "r", "r.yaml", {})
    for seed, v in ((0, "aaaa"), (1, "bbbb")):
        folder = tmp_path / "stages" / "train" / v
        shutil.copytree(src, folder / "checkpoint")
        (folder / "manifest.json").write_text(json.dumps({"config": {"seed": seed}}))
        cat.record_stage("run-1", {"stage": "train", "version": v, "docs_in": 1,
                                   "docs_kept": 1, "docs_rejected": 0}, 1.0, str(folder),
                         False)
        ckpt = str(folder / "checkpoint")
        cat.record_evals("run-1", ckpt, [("next_sentence", "acc_norm", 0.3 + seed),
                                         ("final_word", "acc_norm", 0.5 + seed),
                                         ("final_word", "acc", 0.9)], seed=seed)
        cat.record_evals("run-1", str(folder / "checkpoints" / "step-4"),  # noise: not read
                         [("final_word", "acc_norm", 0.0)], seed=seed)
    tasks = ["next_sentence", "final_word"]
    for seed in (0, 1):
        ref = loss.ModelRef(run="run-1", seed=seed)
        got = loss.resolve(ref, tmp_path)
        assert got["label"] == f"run_1_seed{seed}"
        assert got["sha256"] == loss.checkpoint_digest(src)
        assert downstream(ref, got, tasks, "acc_norm") == pytest.approx(0.4 + seed)
    assert downstream(loss.ModelRef(run="run-1", score=7.0), got, tasks, "acc_norm") == 7.0
    with pytest.raises(ValueError, match="no acc_norm for"):
        downstream(ref, got, ["hellaswag"], "acc_norm")
    with pytest.raises(ValueError, match="no model with seed 5"):
        loss.resolve(loss.ModelRef(run="run-1", seed=5), tmp_path)


def _noise(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    chars = string.ascii_letters + string.digits + string.punctuation + " "
    return ["".join(rng.choice(chars) for _ in range(300)) for _ in range(n)]


@pytest.fixture(scope="module")
def selected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("preselect")
    train = [d["text"] for d in sample_texts(300) if d["lang"] == "en"][:150]
    ladder = [make_checkpoint(tmp / "m", train, seed=0, steps=s) for s in (0, 10, 40)]
    english = [d["text"][:300] for d in sample_texts(400, skip=600)
               if d["lang"] == "en" and d["source"] == "wikipedia-summaries"][:30]
    pool: list[str | None] = [*english, *_noise(30, 1)]
    predictive = {f"d{i}" for i in range(len(english))}
    root = tmp / "root"
    rels = write_pool(root, pool, shards=2)
    run, up = setup_run(root, rels, len(pool))
    cfg = Config(models=[{"path": str(p), "label": f"m{i}", "score": float(i)}
                         for i, p in enumerate(ladder)], sample=40, fraction=0.3,
                 max_tokens=128, **SMALL)
    body, ex, out = execute(PreSelect(cfg), run, up)
    return {"root": root, "body": body, "ex": ex, "out": out, "predictive": predictive,
            "pool": pool}


def test_the_predictive_group_becomes_the_positives(selected: dict[str, Any]) -> None:
    body, out = selected["body"], selected["out"]
    assert selected["ex"].actors == ["tasks.select.loss:score_shards"]
    assert selected["ex"].tasks == ["preselect train"]
    sample = body["sample"]
    assert sample["docs"] == sample["with_strength"] == 40
    assert sample["positives"] == sample["negatives"] == 12
    t = pq.read_table(out.path / "strength.parquet")
    ids = t.column("id").to_pylist()
    lab = t.column("label").to_numpy()
    s = t.column("strength").to_numpy()
    pos = {i for i, y in zip(ids, lab, strict=True) if y == 1}
    assert pos <= selected["predictive"]
    eng = np.array([i in selected["predictive"] for i in ids])
    assert s[eng].mean() > 0.9 > 0.2 > s[~eng].mean()  # by construction, up to a few docs
    assert body["training"]["positives"] == body["training"]["negatives"] == 12


def test_the_predictive_documents_rank_top(selected: dict[str, Any]) -> None:
    body = selected["body"]
    assert body["docs_in"] == body["docs_kept"] == len(selected["pool"])
    assert (selected["root"] / body["outputs"]["model"]).is_file()
    t = read_kept(selected["root"], body)
    score = t.column(COLUMN).to_numpy()
    assert ((score >= 0) & (score <= 1)).all()
    n = len(selected["predictive"])
    top = set(np.asarray(t.column("id").to_pylist())[np.argsort(-score, kind="stable")[:n]])
    assert len(top & selected["predictive"]) >= 0.9 * n


def test_config_needs_two_models_and_a_sane_fraction() -> None:
    with pytest.raises(ValueError):
        Config(models=[{"run": "a"}])
    with pytest.raises(ValueError):
        Config(models=[{"run": "a"}, {"run": "b"}], fraction=0.6)
