"""The mixing proofs' shared parts (test_bench_mixing.py, test_bench_curriculum.py): the pools
and the per-source held-out set, proof recipes, and the scoring of every arm's models on that
held-out set with ``compare``'s per-source verdicts and the mean over sources.

Three sources of the sample: English/French/Spanish Wikipedia summaries, the PostgreSQL
documentation and the Devil's Dictionary. A fixed set of documents of each is held out (never
in any pool) and every model is scored on it (``compare --on``'s scoring), so every arm of every
proof is judged on the very same text. Every recipe lives in one data root under
``.datamill/bench/mixing``, so a stage two recipes share (ingest, filter, tokenize, a seed's
training) runs once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import selectkit as sk

SOURCES = ("wikipedia-summaries", "postgresql-docs", "devils-dictionary")
HELD_OUT = {"wikipedia-summaries": 60, "postgresql-docs": 20, "devils-dictionary": 40}
RARE, RARE_KEEP = "devils-dictionary", 0.04  # the upsample-vs-upweight pool keeps 4 % of it
SEEDS = sk.PROOF_SEEDS
STEPS = sk.PROOF_STEPS  # DATAMILL_BENCH_PROOF_STEPS, default 100
BATCH, SEQ_LEN = 8, 128
ORDER_BY = "gopher_quality_alpha_words_frac"
# Gopher's quality scores computed (the curriculum's column) with thresholds that reject nothing,
# so every arm trains on the same documents
SCORE_ONLY = {"min_words": 0, "max_words": 10**9, "min_mean_word_length": 0,
              "max_mean_word_length": 1e9, "max_hash_word_ratio": 1e9,
              "max_ellipsis_word_ratio": 1e9, "max_bullet_lines_frac": 1e9,
              "max_ellipsis_lines_frac": 1e9, "min_alpha_words_frac": 0, "min_stop_words": 0}
VERDICT_HEADERS = ["arm", "vs", "held-out bpb", "baseline", "arm bpb", "diff", "95 % interval",
                   "MDE", "verdict"]


def mix_sets(root: Path) -> dict[str, Path]:
    """The held-out set (HELD_OUT documents of each source, spread over its documents), the full
    pool (every other document of the three sources), the rare pool (RARE cut to RARE_KEEP
    of its pool documents) and the curriculum's pool (every third pool document), as JSONL
    under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    by_src: dict[str, list[dict[str, Any]]] = {s: [] for s in SOURCES}
    for d in sk.sample_docs():
        if d["source"] in by_src:
            by_src[d["source"]].append(d)
    held, pool, rare = [], [], []
    for src, docs in by_src.items():
        step = len(docs) / HELD_OUT[src]
        picked = {int(i * step) for i in range(HELD_OUT[src])}
        held += [d for i, d in enumerate(docs) if i in picked]
        rest = [d for i, d in enumerate(docs) if i not in picked]
        pool += rest
        every = round(1 / RARE_KEEP)
        rare += rest[::every] if src == RARE else rest
    return {"heldout": sk.jsonl(root / "heldout.jsonl", held),
            "pool": sk.jsonl(root / "pool.jsonl", pool),
            "rare": sk.jsonl(root / "pool-rare.jsonl", rare),
            "third": sk.jsonl(root / "pool-third.jsonl", pool[::3])}


def count_by_source(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        src = json.loads(line)["source"]
        out[src] = out.get(src, 0) + 1
    return out


def base_recipe(name: str, root: Path, pool: Path, train: dict[str, Any] | None = None,
                seeds: list[int] | None = None) -> dict[str, Any]:
    """A recipe over ``pool`` (as a dict): Gopher's scores with nothing rejected, exact dedup,
    a 2,048-token vocabulary with 10 % of documents held out (the evaluate stage's, which
    ``datamill mixsearch`` fits its law to), ``seeds`` tiny models of STEPS steps of BATCH x
    SEQ_LEN tokens (``train`` adds or overrides keys), evaluation of held-out bpb only."""
    return {
        "name": name, "data_root": str(root),
        "input": {"paths": [str(pool)], "format": "jsonl"},
        "stages": {
            "rewrite": None,
            "filter": {"filters": {"gopher_quality": SCORE_ONLY}, "exact_dedup": {},
                       "corpus": {}},
            "tokenize": {"vocab_size": 2048, "seq_len": SEQ_LEN, "heldout_fraction": 0.1},
            "train": {"preset": "tiny", "batch_size": BATCH, "max_tokens": BATCH * SEQ_LEN * STEPS,
                      "warmup_steps": 10, "log_every": 25,
                      "seeds": SEEDS if seeds is None else seeds, **(train or {})},
            "evaluate": {"batch_size": 32, "tasks": [], "max_docs": None}},
    }


def write_recipe(path: Path, raw: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(path: Path) -> dict[str, Any]:
    from flows.pipeline import run_recipe

    return run_recipe(str(path))


def train_summaries(root: Path, run_id: str) -> list[dict[str, Any]]:
    """The train stage's summary of every seed of a run (tokens, steps, seconds, data plan,
    mixing)."""
    return [json.loads((p / "manifest.json").read_text())["summary"]
            for p in sk.stage_paths(root, run_id, "train")]


def tokenize_rows(root: Path, run_id: str) -> dict[str, int]:
    """Training rows per source of a run's tokenized data."""
    from tasks.train import mixlaw

    tok = sk.stage_paths(root, run_id, "tokenize")[0]
    return mixlaw.source_rows(json.loads((tok / "meta.json").read_text()))


def drawn_share(summary: dict[str, Any]) -> dict[str, float]:
    """The share of the rows a training run drew from each source (its data plan)."""
    src = summary["data_plan"]["sources"]
    total = sum(v["rows_drawn"] for v in src.values()) or 1
    return {s: v["rows_drawn"] / total for s, v in src.items()}


def score(root: Path, heldout: Path, runs: dict[str, dict[str, Any]]) -> dict[str, list[Path]]:
    """Every seed of every run scored on ``heldout`` (cached by content under
    root/compare-on): label -> folders with items.parquet, as compare_many takes them."""
    from tasks.catalog import Catalog
    from tasks.compare import heldout_of_file, heldout_of_run, score_on

    trains = {name: sk.stage_paths(root, r["run_id"], "train") for name, r in runs.items()}
    first = next(iter(runs.values()))["run_id"]
    like = heldout_of_run(Catalog(root / "catalog.duckdb"), first)
    return score_on(trains, heldout_of_file(heldout, like, root / "compare-on"),
                    root / "compare-on")


def _arrays(folders: list[Path], key: tuple[str, str], ids: list[str]
            ) -> tuple[np.ndarray, np.ndarray]:
    from tasks.compare import items_of

    items = [items_of(f)[key] for f in folders]
    return (np.array([[x[i][0] for i in ids] for x in items]),
            np.array([[x[i][1] for i in ids] for x in items]))


def source_mean(scored: dict[str, list[Path]], baseline: str, arm: str) -> dict[str, Any]:
    """The mean over SOURCES of per-source held-out bpb, arm vs baseline, with compare's
    interval for a mean over tasks (tasks.stats.aggregate: items resampled within each source,
    the seeds' spread of the per-seed means)."""
    from tasks.compare import items_of
    from tasks.stats import aggregate

    parts = []
    for src in SOURCES:
        key = (f"heldout/{src}", "bpb")
        folders = scored[baseline] + scored[arm]
        ids = sorted(set.intersection(*(set(items_of(f)[key]) for f in folders)))
        parts.append((*_arrays(scored[baseline], key, ids), *_arrays(scored[arm], key, ids)))
    return aggregate(parts, higher_is_better=False, metric="bpb", n_boot=2000, seed=0).as_dict()


def verdict_rows(scored: dict[str, list[Path]], baseline: str, arms: list[str]
                 ) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Per arm vs ``baseline``: compare_many's per-source held-out bpb rows and the mean over
    sources (source_mean). Returns (table rows, the raw rows)."""
    from tasks.compare import compare_many

    res = compare_many({n: scored[n] for n in [baseline, *arms]}, baseline=baseline,
                       n_boot=2000)
    raw = []
    for arm in arms:
        per = {r["task"]: r for r in res["rows"] if r["model"] == arm and r["metric"] == "bpb"}
        for src in SOURCES:
            raw.append({**per[f"heldout/{src}"], "model": arm, "what": src})
        raw.append({**source_mean(scored, baseline, arm), "model": arm, "what": "mean of 3"})
    rows = [[r["model"], baseline, r["what"], f"{r['a']:.4f}", f"{r['b']:.4f}",
             f"{r['diff']:+.4f}", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
             f"{r['mde']:.4f}", r["verdict"]] for r in raw]
    return rows, raw


def level_rows(scored: dict[str, list[Path]], runs: dict[str, dict[str, Any]], root: Path
               ) -> list[list[str]]:
    """Per arm: seeds, tokens per seed, the share of rows drawn per source (mean over seeds),
    per-source held-out bpb (mean over seeds) and their mean."""
    rows = []
    for name, folders in scored.items():
        sums = train_summaries(root, runs[name]["run_id"])
        shares = [drawn_share(s) for s in sums]
        per, mean = mean_bpb(folders)
        rows.append([name, str(len(sums)), f"{sums[0]['tokens']:,}",
                     " / ".join(f"{np.mean([sh.get(s, 0.0) for sh in shares]):.3f}"
                                for s in SOURCES),
                     *(f"{v:.4f}" for v in per), f"{mean:.4f}"])
    return rows


LEVEL_HEADERS = ["arm", "seeds", "tokens/seed", "drawn wiki / pg / devils",
                 "bpb wiki", "bpb pg", "bpb devils", "mean of 3"]


def same_budget(root: Path, runs: dict[str, dict[str, Any]]) -> int:
    """Every seed of every arm trained the same tokens (asserted); returns them."""
    tokens = {(n, s["seed"]): s["tokens"] for n, r in runs.items()
              for s in train_summaries(root, r["run_id"])}
    assert len(set(tokens.values())) == 1, tokens
    assert all(len(train_summaries(root, r["run_id"])) == len(SEEDS) for r in runs.values())
    return next(iter(tokens.values()))


def held_line(sets: dict[str, Path]) -> str:
    held, pool, rare = (count_by_source(sets[k]) for k in ("heldout", "pool", "rare"))
    return ("held-out documents " + ", ".join(f"{s} {held[s]}" for s in SOURCES)
            + "; pool " + ", ".join(f"{s} {pool[s]}" for s in SOURCES)
            + f"; the rare pool keeps {rare[RARE]} of {pool[RARE]} {RARE}; "
            + f"{len(SEEDS)} seeds of the tiny preset, {STEPS} steps of {BATCH} x {SEQ_LEN} "
            + "tokens")


def load_line(build_s: float, score_s: float) -> str:
    return (f"runs built/cached in {build_s:.0f} s; scoring and compare in {score_s:.0f} s; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def mean_bpb(folders: list[Path]) -> tuple[list[float], float]:
    """Per-source held-out bpb (the mean over seeds) and their mean, over every item scored."""
    from tasks.compare import items_of

    per = []
    for src in SOURCES:
        items = [items_of(f)[(f"heldout/{src}", "bpb")] for f in folders]
        per.append(float(np.mean([sum(n for n, _ in x.values()) / sum(d for _, d in x.values())
                                  for x in items])))
    return per, float(np.mean(per))
