"""The selection proofs' shared parts (test_bench_selection.py, test_bench_selection_embed.py):
the planted pool and the target's sets, proof recipes, the random baseline, and the scoring of
every model on the target's held-out documents with ``compare``'s verdict against random.

The sample's English Wikipedia summaries are the target: a third is the selectors' reference
set, a third is held out for scoring, a third stays in the pool among every other document.
Every recipe of both proofs lives in one data root, so a stage two recipes share (ingest, the
random baseline, an embedding) runs once."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "sample.jsonl"
PROOF_SEEDS = [int(s) for s in os.environ.get("DATAMILL_BENCH_PROOF_SEEDS", "0,1,2").split(",")]
PROOF_STEPS = int(os.environ.get("DATAMILL_BENCH_PROOF_STEPS", "100"))
PROOF_PERCENT = 20
TARGET = ("wikipedia-summaries", "en")
HEADERS = ["selector", "kept", "target-like share", "bpb random", "bpb selection", "diff",
           "95 % interval", "MDE", "verdict"]


def sample_docs() -> list[dict[str, Any]]:
    """The sample's documents, each id once (the sample repeats a few)."""
    seen: set[str] = set()
    docs = []
    for line in SAMPLE.read_text().splitlines():
        d = json.loads(line)
        if d["id"] not in seen:
            seen.add(d["id"])
            docs.append(d)
    return docs


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Writes ``rows`` unless the file already holds exactly them (its mtime stays put)."""
    body = "".join(json.dumps(r) + "\n" for r in rows)
    if not path.is_file() or path.read_text() != body:
        path.write_text(body)
    return path


@dataclass
class ProofSets:
    root: Path
    pool: list[dict[str, Any]]
    ref: list[dict[str, Any]]
    held: list[dict[str, Any]]
    planted: list[dict[str, Any]]
    pool_p: Path
    ref_p: Path
    held_p: Path


def proof_sets(root: Path) -> ProofSets:
    """The pool (every non-target document + a third of the target's), the reference set and
    the held-out set, written as JSONL under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    docs = sample_docs()
    target = [d for d in docs if (d["source"], d["lang"]) == TARGET]
    rest = [d for d in docs if (d["source"], d["lang"]) != TARGET]
    ref, held, planted = target[0::3], target[1::3], target[2::3]
    pool = rest + planted
    return ProofSets(root, pool, ref, held, planted, jsonl(root / "pool.jsonl", pool),
                     jsonl(root / "reference.jsonl", ref),
                     jsonl(root / "target-heldout.jsonl", held))


def proof_recipe(path: Path, name: str, root: Path, pool: Path, corpus: dict[str, Any],
                 extra: list[dict[str, Any]] | None = None,
                 seeds: list[int] | None = None) -> Path:
    """A recipe over ``pool``: exact dedup, the ``corpus`` rules, a 2,048-token vocabulary,
    ``seeds`` (default PROOF_SEEDS) tiny models of PROOF_STEPS steps, the evaluate stage."""
    import yaml

    raw: dict[str, Any] = {
        "name": name, "data_root": str(root),
        "input": {"paths": [str(pool)], "format": "jsonl"},
        "stages": {
            "rewrite": None,
            "filter": {"filters": {}, "exact_dedup": {}, "corpus": corpus},
            "tokenize": {"vocab_size": 2048, "seq_len": 128, "heldout_fraction": 0.05},
            "train": {"preset": "tiny", "batch_size": 8, "max_tokens": 8 * 128 * PROOF_STEPS,
                      "warmup_steps": 10, "log_every": 25,
                      "seeds": PROOF_SEEDS if seeds is None else seeds},
            "evaluate": {"batch_size": 32, "max_items": 50, "max_docs": 50},
            **({"extra": extra} if extra else {})},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def stage_rows(root: Path, run_id: str) -> list[dict[str, Any]]:
    from tasks.catalog import Catalog

    return Catalog(root / "catalog.duckdb").show(run_id)["stages"]


def stage_paths(root: Path, run_id: str, stage: str) -> list[Path]:
    return [Path(s["output_path"]) for s in stage_rows(root, run_id) if s["stage"] == stage]


def filter_outputs(root: Path, run_id: str, which: str = "kept") -> list[Path]:
    folder = stage_paths(root, run_id, "filter")[0]
    m = json.loads((folder / "manifest.json").read_text())
    return [root / rel for rel in m["outputs"][which]]


def kept_sources(root: Path, run_id: str) -> tuple[int, int]:
    """(kept documents, of them the target's source and language), from the filter's output."""
    n = hit = 0
    for path in filter_outputs(root, run_id):
        t = pq.read_table(path, columns=["source", "lang"])
        n += len(t)
        hit += sum(1 for s, lang in zip(t["source"].to_pylist(), t["lang"].to_pylist(),
                                        strict=True) if (s, lang) == TARGET)
    return n, hit


def random_baseline(sets: ProofSets, k: int) -> dict[str, Any]:
    """``k`` documents of the pool drawn uniformly (seed 0), trained like every selection."""
    from flows.pipeline import run_recipe

    rng = np.random.default_rng(0)
    rand_p = jsonl(sets.root / "random.jsonl",
                   [sets.pool[i] for i in sorted(rng.permutation(len(sets.pool))[:k])])
    return run_recipe(str(proof_recipe(sets.root / "random.yaml", "proof-random", sets.root,
                                       rand_p, {})))


def heldout_set(sets: ProofSets, random_run: str) -> Any:
    """The target's held-out documents, scored with the random run's evaluation settings."""
    from tasks.catalog import Catalog
    from tasks.compare import heldout_of_file, heldout_of_run

    like = heldout_of_run(Catalog(sets.root / "catalog.duckdb"), random_run)
    return heldout_of_file(sets.held_p, like, sets.root / "compare-on")


def heldout_bpb(folder: Path) -> float:
    """A model's bits per byte over the held-out set ``score_on`` scored into ``folder``."""
    from tasks.compare import items_of

    items = items_of(folder)[("heldout", "bpb")]
    return sum(n for n, _ in items.values()) / sum(d for _, d in items.values())


def verdicts(sets: ProofSets, runs: dict[str, dict[str, Any]],
             shares: dict[str, tuple[int, int]]) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Every run's models (``runs['random']`` the baseline) scored on the target's held-out
    documents, ``compare``'s held-out bpb row per selection: (table rows, compare rows)."""
    from tasks.compare import compare_many, score_on

    trains = {name: stage_paths(sets.root, r["run_id"], "train") for name, r in runs.items()}
    assert all(len(v) == len(PROOF_SEEDS) for v in trains.values()), trains
    scored = score_on(trains, heldout_set(sets, runs["random"]["run_id"]),
                      sets.root / "compare-on")
    res = compare_many(scored, baseline="random", n_boot=2000)
    rows = []
    for r in res["rows"]:
        if (r["task"], r["metric"]) != ("heldout", "bpb"):
            continue
        n, hit = shares[r["model"]]
        rows.append([r["model"], str(n), f"{hit / n:.2f}", f"{r['a']:.4f}", f"{r['b']:.4f}",
                     f"{r['diff']:+.4f}", f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                     f"{r['mde']:.4f}", r["verdict"]])
    return rows, res["rows"]


def header(sets: ProofSets, k: int, shares: dict[str, tuple[int, int]]) -> str:
    n, hit = shares["random"]
    return (f"pool {len(sets.pool)} documents ({len(sets.planted)} target-like, base rate "
            f"{len(sets.planted) / len(sets.pool):.2f}); reference {len(sets.ref)}; target "
            f"held-out {len(sets.held)}; each selection keeps {k}; random keeps {n} "
            f"({hit / n:.2f} target-like); {len(PROOF_SEEDS)} seeds of the tiny preset, "
            f"{PROOF_STEPS} steps of 8 x 128 tokens")


def load_line(build_s: float, score_s: float) -> str:
    return (f"runs built/cached in {build_s:.0f} s; scoring on the target and compare in "
            f"{score_s:.0f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


Table = Callable[[Sequence[str], Sequence[Sequence[object]]], str]
