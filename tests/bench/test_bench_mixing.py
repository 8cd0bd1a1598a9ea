"""Proofs of the training-data mixing features, on three sources of the sample (mixkit.py):
every arm trains ``SEEDS`` tiny models on the same token budget through the real flow, every
model is scored on one per-source held-out set, and ``compare`` decides per source and for the
mean over sources, with 95 % intervals.

- ``test_aioli_and_static_search``: Aioli (online mixing) vs the uniform mixture vs the best
  point of a static grid that ``datamill mixsearch`` trains; then the mixture the search's
  fitted law predicts to be best, trained and compared with that best grid point. Aioli's extra
  compute (probe forward passes, steps on perturbed proportions) is counted and printed.
- ``test_upsample_vs_upweight``: one source made rare (RARE_KEEP of its documents); the
  natural mixture vs that source upsampled (``source_weights``) vs upweighted
  (``source_loss_weights``) by the same factor.

Only structure is asserted (every arm ran every seed, one token budget, intervals present);
never a winner or a speed.
"""

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
import yaml

AIOLI_ROUNDS = 5  # the paper's 20 rounds would leave 5-step rounds in a 100-step run
POINTS = 6  # the coarsest simplex lattice of three sources with one point to spare for the law
FACTOR = 10.0  # the rare source's sampling or loss weight


def _arm(root: Path, pool: Path, name: str, train: dict[str, Any] | None = None,
         seeds: list[int] | None = None) -> dict[str, Any]:
    return mk.run(mk.write_recipe(root / f"{name}.yaml",
                                  mk.base_recipe(f"mix-{name}", root, pool, train, seeds)))


def _search(root: Path, pool: Path) -> dict[str, Any]:
    """``datamill mixsearch`` over the three sources: POINTS grid points, one seed each; its
    result.json."""
    from flows.cli import main

    recipe = mk.write_recipe(root / "search.yaml",
                             mk.base_recipe("mix-search", root, pool, seeds=[0]))
    before = set(root.glob("mixsearch/*/result.json"))
    rc = main(["mixsearch", str(recipe), "--points", str(POINTS), "--data-root", str(root)])
    assert rc == 0
    (new,) = set(root.glob("mixsearch/*/result.json")) - before
    return json.loads(new.read_text())


def _from_point(root: Path, point: dict[str, Any], name: str) -> dict[str, Any]:
    """A grid point's recipe again, with every seed: its seed 0 is the search's run (cached)."""
    raw = yaml.safe_load(Path(point["recipe"]).read_text())
    raw["name"] = f"mix-{name}"
    raw["stages"]["train"]["seeds"] = mk.SEEDS
    return mk.run(mk.write_recipe(root / f"{name}.yaml", raw))


def _aioli_cost(root: Path, run: dict[str, Any], rows: dict[str, int]) -> dict[str, Any]:
    """Aioli's extra work per seed: the probe forward passes (every mixed source's probe rows,
    at each round's start and after each estimation segment), counted from the run's own
    schedule; the steps spent on perturbed proportions (its manifest)."""
    from tasks.train.aioli import AioliMix
    from tasks.train.options import MixingConfig

    cfg = MixingConfig(method="aioli", rounds=AIOLI_ROUNDS)
    k = len(mk.SOURCES)
    out = []
    for s in mk.train_summaries(root, run["run_id"]):
        mix = AioliMix(cfg, list(mk.SOURCES), list(range(k)), np.ones(k), np.full(k, np.inf),
                       0.0, mk.BATCH, s["steps"], s["seed"])
        assert mix.estimation_steps() == s["mixing"]["estimation_steps"]
        probe_rows = len(mix.probes) * sum(min(cfg.probe_rows, rows[x]) for x in mk.SOURCES)
        out.append({"probes": len(mix.probes), "probe_rows": probe_rows,
                    "estimation_steps": s["mixing"]["estimation_steps"], "steps": s["steps"],
                    "rounds": len(s["mixing"]["rounds"]), "seconds": s["seconds"],
                    "final": s["mixing"]["rounds"][-1]["proportions"]})
    return {"seeds": out}


def _cost_lines(cost: dict[str, Any], uniform_s: list[float]) -> list[str]:
    c = cost["seeds"][0]
    trained = c["steps"] * mk.BATCH
    # a training row costs a forward and a backward pass, about 3 forward passes
    extra = c["probe_rows"] / (3 * trained)
    final = {s: np.mean([x["final"][s] for x in cost["seeds"]]) for s in mk.SOURCES}
    aioli_s = [x["seconds"] for x in cost["seeds"]]
    return [
        f"aioli: {AIOLI_ROUNDS} rounds, {c['estimation_steps']} of {c['steps']} steps on "
        f"perturbed proportions (inside the same token budget); {c['probes']} probe points x "
        f"{c['probe_rows'] // c['probes']} probe rows = {c['probe_rows']:,} forward-only rows "
        f"beside {trained:,} trained rows: about {100 * extra:.0f} % more model compute "
        "(a trained row counted as 3 forward passes)",
        "aioli's final proportions (mean over seeds): " + ", ".join(
            f"{s} {v:.2f}" for s, v in final.items()),
        "training seconds per seed (shared machine, indicative only): aioli "
        + " / ".join(f"{x:.0f}" for x in aioli_s) + ", uniform "
        + " / ".join(f"{x:.0f}" for x in uniform_s)]


def _search_rows(search: dict[str, Any], scored: dict[str, list[Path]],
                 predicted_own: dict[str, float]) -> list[list[str]]:
    """Per grid point: the proportions asked and drawn, the search's own held-out mean bpb (the
    law's data, 1 seed) and the per-source held-out set's (seed 0); then the law's best."""
    rows = []
    at = [search["sources"].index(s) for s in mk.SOURCES]  # the search lists them by name
    for i, pt in enumerate(search["points"]):
        own = np.mean([pt["bpb"][s] for s in mk.SOURCES])
        rows.append([f"point {i}", " / ".join(f"{pt['target'][j]:.2f}" for j in at),
                     " / ".join(f"{pt['proportions'][j]:.2f}" for j in at), f"{own:.4f}", "",
                     f"{mk.mean_bpb(scored[f'point {i}'])[1]:.4f}"])
    fit = search["fit"]
    rows.append(["law's best", " / ".join(f"{fit['best'][s]:.2f}" for s in mk.SOURCES), "",
                 f"{np.mean(list(predicted_own.values())):.4f}",
                 f"{np.mean([fit['best_losses'][s] for s in mk.SOURCES]):.4f}",
                 f"{mk.mean_bpb(scored['predicted'])[1]:.4f}"])
    return rows


def test_aioli_and_static_search(prefect_harness: None, bench_out: Path, table: Any,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.mixsearch import point_result
    from tasks.train import mixlaw

    monkeypatch.setenv("DATAMILL_RAY_CPUS", os.environ.get("DATAMILL_RAY_CPUS", "1"))
    root = bench_out / "mixing"
    sets = mk.mix_sets(root)
    t0 = time.perf_counter()
    natural = _arm(root, sets["pool"], "natural")
    rows = mk.tokenize_rows(root, natural["run_id"])
    assert set(rows) == set(mk.SOURCES), rows
    search = _search(root, sets["pool"])
    assert len(search["points"]) == POINTS and set(search["sources"]) == set(mk.SOURCES)
    assert "error" not in search["fit"], search["fit"]
    # the best grid point by the search's own objective (the mean of the sources' bpb)
    best_i = int(np.argmin([np.mean([pt["bpb"][s] for s in mk.SOURCES])
                            for pt in search["points"]]))
    uniform_w = dict(zip(mk.SOURCES, mixlaw.weights_for([1 / 3] * 3,
                                                        [rows[s] for s in mk.SOURCES]),
                         strict=True))
    runs = {
        "uniform": _arm(root, sets["pool"], "uniform", {"source_weights": uniform_w}),
        "best grid": _from_point(root, search["points"][best_i], "best-grid"),
        "predicted": _arm(root, sets["pool"], "predicted",
                          {"source_weights": search["fit"]["best_source_weights"]}),
        "aioli": _arm(root, sets["pool"], "aioli",
                      {"mixing": {"method": "aioli", "rounds": AIOLI_ROUNDS}}),
        "natural": natural,
    }
    build_s = time.perf_counter() - t0
    tokens = mk.same_budget(root, runs)
    grid = {f"point {i}": {"run_id": pt["run_id"]} for i, pt in enumerate(search["points"])}
    assert {s["tokens"] for g in grid.values()
            for s in mk.train_summaries(root, g["run_id"])} == {tokens}

    t1 = time.perf_counter()
    scored = mk.score(root, sets["heldout"], {**runs, **grid})
    arms = {n: scored[n] for n in runs}
    v_uniform, raw_u = mk.verdict_rows(arms, "uniform", ["aioli", "best grid", "predicted",
                                                         "natural"])
    v_best, raw_b = mk.verdict_rows(arms, "best grid", ["aioli", "predicted"])
    predicted_own = point_result(runs["predicted"], list(mk.SOURCES))["bpb"]
    cost = _aioli_cost(root, runs["aioli"], rows)
    uniform_s = [s["seconds"] for s in mk.train_summaries(root, runs["uniform"]["run_id"])]
    fit = search["fit"]
    report = "\n".join([
        mk.held_line(sets),
        f"grid: datamill mixsearch --points {POINTS} (1 seed each, {POINTS} training runs), "
        f"best grid point = point {best_i} by the search's own held-out split; law R2 "
        + ", ".join(f"{s} {fit['quality']['r2'][s]:.3f}" for s in mk.SOURCES)
        + (", leave-one-out MAE " + ", ".join(f"{s} {fit['quality']['loo_mae'][s]:.4f}"
                                              for s in mk.SOURCES)
           if fit["quality"]["loo_mae"] else ""),
        "", table(mk.LEVEL_HEADERS, mk.level_rows(arms, runs, root)),
        "", table(mk.VERDICT_HEADERS, v_uniform),
        "", table(mk.VERDICT_HEADERS, v_best),
        "", "mixsearch: bpb = the mean over the 3 sources; the search's split = the recipe's "
        "own 10 % held-out split (the law's data; points 1 seed, the law's best 3 seeds); the "
        "held-out set = mixkit's (points seed 0, the law's best 3 seeds)",
        table(["mixsearch", "p wiki / pg / devils", "drawn", "search's split",
               "law's prediction", "held-out set"],
              _search_rows(search, scored, predicted_own)),
        "", *_cost_lines(cost, uniform_s),
        mk.load_line(build_s, time.perf_counter() - t1)])
    print("\n" + report)
    (root / "aioli-and-search.txt").write_text(report + "\n")
    assert len(raw_u) == 4 * (len(mk.SOURCES) + 1) and len(raw_b) == 2 * (len(mk.SOURCES) + 1)
    assert all(math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])
               for r in raw_u + raw_b)


def test_upsample_vs_upweight(prefect_harness: None, bench_out: Path, table: Any,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAMILL_RAY_CPUS", os.environ.get("DATAMILL_RAY_CPUS", "1"))
    root = bench_out / "mixing"
    sets = mk.mix_sets(root)
    t0 = time.perf_counter()
    runs = {
        "natural (rare)": _arm(root, sets["rare"], "rare-natural"),
        "upsample": _arm(root, sets["rare"], "rare-upsample",
                         {"source_weights": {mk.RARE: FACTOR}}),
        "upweight": _arm(root, sets["rare"], "rare-upweight",
                         {"source_loss_weights": {mk.RARE: FACTOR}}),
    }
    build_s = time.perf_counter() - t0
    mk.same_budget(root, runs)
    t1 = time.perf_counter()
    scored = mk.score(root, sets["heldout"], runs)
    v_nat, raw_n = mk.verdict_rows(scored, "natural (rare)", ["upsample", "upweight"])
    v_up, raw_u = mk.verdict_rows(scored, "upsample", ["upweight"])
    rows = mk.tokenize_rows(root, runs["upsample"]["run_id"])
    epochs = {n: np.mean([s["epochs"][mk.RARE] for s in mk.train_summaries(root, r["run_id"])])
              for n, r in runs.items()}
    report = "\n".join([
        mk.held_line(sets),
        f"{mk.RARE} has {rows[mk.RARE]} of {sum(rows.values())} training rows; factor "
        f"{FACTOR:g}: source_weights (upsample) or source_loss_weights (upweight); epochs of "
        f"{mk.RARE} seen: " + ", ".join(f"{n} {e:.2f}" for n, e in epochs.items()),
        "", table(mk.LEVEL_HEADERS, mk.level_rows(scored, runs, root)),
        "", table(mk.VERDICT_HEADERS, v_nat),
        "", table(mk.VERDICT_HEADERS, v_up),
        mk.load_line(build_s, time.perf_counter() - t1)])
    print("\n" + report)
    (root / "upsample-upweight.txt").write_text(report + "\n")
    assert len(raw_n) == 2 * (len(mk.SOURCES) + 1) and len(raw_u) == len(mk.SOURCES) + 1
    assert all(math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"]) for r in raw_n + raw_u)
    assert epochs["upsample"] > epochs["natural (rare)"]  # the weight changed what was drawn
    assert epochs["upweight"] == pytest.approx(epochs["natural (rare)"])  # ... and this did not
