"""Proof of the curriculum ("How Learning Rate Decay Wastes Your Best Data in Curriculum-Based
LLM Pretraining"): training rows in ascending order of Gopher's alphabetic-word fraction (the
highest-scored rows last), with the defaults that come with ``order`` (constant learning rate,
the mean of the last 6 checkpoints), vs the same data shuffled with the default cosine decay.

As in the paper, both read the same data once: the pool is every third document of the mixing
proofs' pool (mixkit.py) and both train for one epoch of it (its training rows // batch steps),
so the curriculum reaches its best rows and both see the same rows. (With a budget under one
epoch an ascending order would only ever read the lowest-scored rows.) The per-source held-out
set and seeds are mixkit's; ``compare`` decides per source and for the mean over sources. Only
structure is asserted."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import mixkit as mk
import numpy as np
import pytest
import selectkit as sk


def _source_scores(root: Path, run_id: str) -> dict[str, float]:
    """The mean row score of each source's training rows (tokenize's row scores): which
    source the ascending order reads first."""
    tok = sk.stage_paths(root, run_id, "tokenize")[0]
    meta = json.loads((tok / "meta.json").read_text())
    parts: dict[str, list[np.ndarray]] = {}
    for shard in meta["train_shards"]:
        score = np.load(tok / shard["score"])
        for src, (lo, hi) in shard["sources"].items():
            parts.setdefault(src, []).append(score[lo:hi])
    return {s: float(np.nanmean(np.concatenate(v))) for s, v in parts.items()}


def test_curriculum_vs_shuffled(prefect_harness: None, bench_out: Path, table: Any,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pipeline import run_recipe

    monkeypatch.setenv("DATAMILL_RAY_CPUS", os.environ.get("DATAMILL_RAY_CPUS", "1"))
    root = bench_out / "mixing"
    sets = mk.mix_sets(root)
    t0 = time.perf_counter()
    order = {"order": {"by": mk.ORDER_BY}}

    def recipe(name: str, train: dict[str, Any]) -> Path:
        return mk.write_recipe(root / f"{name}.yaml",
                               mk.base_recipe(f"mix-{name}", root, sets["third"], train))

    # one epoch: the training rows (the curriculum's tokenize, which adds row scores, packs the
    # same rows as the plain one; checked below) in whole batches
    head = run_recipe(str(recipe("curriculum", {**order, "checkpoint_every": 1})),
                      until="tokenize")
    steps = sum(mk.tokenize_rows(root, head["run_id"]).values()) // mk.BATCH
    every = max(1, steps // 20)  # checkpoints for the average: the last 6 span the last ~25 %
    budget = {"max_tokens": steps * mk.BATCH * mk.SEQ_LEN}
    files = {"shuffled, cosine": ("shuffled", budget),
             "curriculum, constant + average": ("curriculum",
                                                {**order, "checkpoint_every": every, **budget})}
    runs = {n: mk.run(recipe(f, t)) for n, (f, t) in files.items()}
    build_s = time.perf_counter() - t0
    mk.same_budget(root, runs)
    rows = {n: mk.tokenize_rows(root, r["run_id"]) for n, r in runs.items()}
    assert len({tuple(sorted(v.items())) for v in rows.values()}) == 1, rows
    for r in runs.values():  # every row at most once: one epoch, nothing repeated
        assert all(s["steps"] == steps and max(s["epochs"].values()) <= 1.0
                   for s in mk.train_summaries(root, r["run_id"]))
    t1 = time.perf_counter()
    scored = mk.score(root, sets["heldout"], runs)
    verdicts, raw = mk.verdict_rows(scored, "shuffled, cosine",
                                    ["curriculum, constant + average"])
    cur = mk.train_summaries(root, runs["curriculum, constant + average"]["run_id"])
    scores = _source_scores(root, runs["curriculum, constant + average"]["run_id"])
    report = "\n".join([
        mk.held_line(sets),
        f"curriculum pool: every third pool document, {sum(rows['shuffled, cosine'].values())} "
        f"training rows; both arms {steps} steps (one epoch)",
        f"curriculum: order by {mk.ORDER_BY} ascending, schedule constant, averaged steps "
        + ", ".join(str(s) for s in cur[0]["averaged_steps"])
        + f" (checkpoint_every {every}); shuffled: cosine decay to 0.1 x lr, final weights",
        "mean row score per source (rows without a score come first): " + ", ".join(
            f"{s} {v:.3f}" for s, v in sorted(scores.items(), key=lambda kv: kv[1])),
        "", table(mk.LEVEL_HEADERS, mk.level_rows(scored, runs, root)),
        "", table(mk.VERDICT_HEADERS, verdicts),
        mk.load_line(build_s, time.perf_counter() - t1)])
    print("\n" + report)
    (root / "curriculum.txt").write_text(report + "\n")
    assert all(len(s["averaged_steps"]) == 6 for s in cur)
    assert len(raw) == len(mk.SOURCES) + 1
    assert all(math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"]) for r in raw)
    assert np.isfinite([r["diff"] for r in raw]).all()
