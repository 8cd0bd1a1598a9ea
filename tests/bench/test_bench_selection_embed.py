"""Does each embedding, LLM-rating and proxy selector help a model on the target? The same
proof as ``test_bench_selection.py::test_selection_beats_random`` (selectkit: the pool with
planted target-like documents, the reference and held-out sets, the random baseline of the
same size, scoring on the target's held-out documents and ``compare``'s verdict), one row per
selector, each keeping 20 % of the pool:

- ``semdedup``, ``density``, ``diversity``: the ``embed`` and ``clusters`` stages, then the
  corpus rule. SemDeDup has no budget, only epsilon: the bench reads the stored
  ``semdedup_sim`` of a first run and sets epsilon so that the rule keeps the budget.
- ``fineweb_edu`` and ``dataman``: a real local OpenAI-compatible server (tests/llmkit.py)
  whose rater is a visible rule, ``rate``: English prose with a definition ("X is a ...") near
  its start rates 5, other English 3, the rest 1. It rates the target's documents higher, as
  an LLM asked for encyclopedic value would, and it is stated, so the rows measure the
  pipeline (sample, head, decision), not an LLM's judgement. Selection: ``top_k`` 20 % of
  ``edu_score`` / ``dataman_score`` (ties by shard and row, as ``top_k`` breaks them).
- ``loss_score``, ``miniplm``, ``preselect``: two proxies trained here first, one on the pool
  and one on the reference set (the "teacher"), ``PROOF_SEEDS[:2]`` seeds each. loss_score
  keeps the lowest bits per byte under the teacher; miniplm the largest pool-minus-teacher
  difference; preselect takes every proxy with its score = minus its bits per byte on the
  target's held-out documents.
- ``quality_buckets``: Nemotron-CC buckets over ``edu_score``, ``dataman_score`` and
  ``preselect_score``. The rule only annotates; the bench keeps the highest buckets (ties by a
  seeded draw) and trains on them as it trains the random subset.

A second table gives each selector's scoring docs/s on this machine (the stages' seconds in
the catalog; the LLM stages against the local fake server). ``DATAMILL_BENCH_PROOF_SKIP``
names selectors to leave out. ``test_kmeans_memory``: the
clusters stage's k-means (scikit-learn) fit at 1x and 10x documents, peak resident memory."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import selectkit as sk
from llmkit import FakeLLM

PCT = sk.PROOF_PERCENT
CLUSTERS = {"k": 30}
EMBED = {"use": "tasks.select.embed_stage:Embed", "after": "rewrite"}
MAX_TOKENS = 512  # loss scoring: each document's first 512 tokens
FT = {"bucket": 200_000}  # as the fastText proof: a small model
ENGLISH = frozenset("the of and to in is was a an that for on with as by it from at his her "
                    "which are were".split())
DEFINITION = re.compile(r"\b(is|was|are|were) (a|an|the)\b")
SCORING = {"semdedup": ["embed", "clusters"], "density": ["embed", "clusters"],
           "diversity": ["embed", "clusters"], "fineweb_edu": ["embed", "fineweb_edu"],
           "dataman": ["dataman"], "loss_score": ["loss_score"], "miniplm": ["miniplm"],
           "preselect": ["preselect"],
           "quality_buckets": ["embed", "fineweb_edu", "preselect", "dataman"]}
# selectors to leave out, comma-separated (e.g. one that fails in the pipeline)
SKIP = {s for s in os.environ.get("DATAMILL_BENCH_PROOF_SKIP", "").split(",") if s}


def rate(text: str) -> int:
    """The fake rater's rule: 5 = English prose (a fifth of its words or more are common
    function words) with a definition ("is a", "was the", ...) in its first 400 characters;
    3 = other English prose; 1 = the rest."""
    words = re.findall(r"[a-z]+", text.lower())
    english = sum(w in ENGLISH for w in words) >= 0.2 * max(len(words), 1)
    return 1 + 2 * english + 2 * (english and bool(DEFINITION.search(text[:400])))


def _between(s: str, start: str, end: str) -> str:
    i = s.index(start) + len(start)
    return s[i:s.rindex(end)]


def fake_rater() -> FakeLLM:
    """A local OpenAI-compatible server answering the FineWeb-Edu prompt (score = rate - 1:
    0, 2 or 4) and the DataMan prompt (every criterion and the overall score = rate)."""
    from tasks.prompts.ratings import DATAMAN_CRITERIA, OVERALL

    llm = FakeLLM()

    def reply(n: int) -> str:
        prompt = llm.calls[n - 1]
        if prompt.startswith("Below is an extract"):
            r = rate(_between(prompt, "The extract: ", "\n\nAfter examining"))
            return f"Rated by rule.\nEducational score: {r - 1}"
        r = rate(_between(prompt, "Text:\n", "\n\nReply with"))
        lines = [f"[{i}] {c}: {r}/5" for i, c in enumerate((*DATAMAN_CRITERIA, OVERALL), 1)]
        return "\n".join([*lines, "Domain Type: O"])

    llm.reply = reply
    return llm


def _proxies(sets: sk.ProofSets) -> dict[str, dict[str, Any]]:
    """The pool proxy and the teacher (trained on the reference set): label -> model spec."""
    from flows.pipeline import run_recipe

    seeds = sk.PROOF_SEEDS[:2]
    out = {}
    for who, data in (("pool", sets.pool_p), ("target", sets.ref_p)):
        rid = run_recipe(str(sk.proof_recipe(sets.root / f"proxy-{who}.yaml",
                                             f"proof-proxy-{who}", sets.root, data, {},
                                             seeds=seeds)))["run_id"]
        for s in seeds:
            out[f"{who}{s}"] = {"run": rid, "seed": s, "label": f"{who}{s}"}
    return out


def _proxy_scores(sets: sk.ProofSets, models: dict[str, dict[str, Any]], random_run: str
                  ) -> dict[str, float]:
    """label -> minus the proxy's bits per byte on the target's held-out documents."""
    from tasks.compare import score_on

    trains = {}
    for label, m in models.items():
        dirs = sk.stage_paths(sets.root, m["run"], "train")
        seeds = [json.loads((d / "manifest.json").read_text())["config"]["seed"]
                 for d in dirs]
        trains[label] = [dirs[seeds.index(m["seed"])]]
    scored = score_on(trains, sk.heldout_set(sets, random_run), sets.root / "compare-on")
    return {label: -sk.heldout_bpb(f[0]) for label, f in scored.items()}


def _recipes(sets: sk.ProofSets, llm: FakeLLM, models: dict[str, dict[str, Any]],
             scores: dict[str, float]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """selector -> (filter.corpus, stages.extra)."""
    clusters = [EMBED, {"use": "tasks.select.cluster_stage:Clusters", "after": "embed",
                        "with": CLUSTERS}]
    rater = {"base_url": llm.url, "model": "fake-rule-rater"}
    edu = [EMBED, {"use": "tasks.select.edu_stage:FinewebEdu", "after": "embed",
                   "with": {"llm": rater, "sample": 500}}]
    dataman = {"use": "tasks.select.dataman_stage:DataMan", "with": {"llm": rater}}
    miniplm = {"use": "tasks.select.miniplm:MiniPLM",
               "with": {"reference": models["pool0"], "teacher": models["target0"],
                        "max_tokens": MAX_TOKENS}}
    preselect = {"use": "tasks.select.preselect:PreSelect",
                 "with": {"models": [{**m, "score": scores[lbl]} for lbl, m in models.items()],
                          "max_tokens": MAX_TOKENS, **FT}}

    def top(column: str, higher: bool = True) -> dict[str, Any]:
        return {"top_k": {"column": column, "percent": PCT, "higher_is_better": higher}}

    return {
        "density": ({"tasks.select.density": {"percent": PCT}}, clusters),
        "diversity": ({"tasks.select.diversity": {"percent": PCT}}, clusters),
        "fineweb_edu": (top("edu_score"), edu),
        "dataman": (top("dataman_score"), [{**dataman, "after": "rewrite"}]),
        "loss_score": (top("loss_target0", higher=False),
                       [{"use": "tasks.select.loss_stage:LossScore", "after": "rewrite",
                         "with": {"models": [models["target0"]], "max_tokens": MAX_TOKENS}}]),
        "miniplm": (top("miniplm_score"), [{**miniplm, "after": "rewrite"}]),
        "preselect": (top("preselect_score"), [{**preselect, "after": "rewrite"}]),
        "quality_buckets": (  # embed and fineweb_edu as above: the same versions
            {"quality_buckets": {"columns": ["edu_score", "dataman_score", "preselect_score"]}},
            [*edu, {**preselect, "after": "fineweb_edu"}, {**dataman, "after": "preselect"}]),
        "semdedup": ({}, clusters),  # its corpus rule once epsilon is known
    }


def _read(paths: list[Path], columns: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in paths])


def _semdedup_epsilon(root: Path, run_id: str, k: int) -> float:
    """The epsilon at which ``semdedup`` keeps ``k`` of the documents a first run ranked:
    the first of each cluster (no similarity) and the least similar others."""
    kept = _read(sk.filter_outputs(root, run_id), ["semdedup_sim"])
    rej = _read(sk.filter_outputs(root, run_id, "rejected"), ["semdedup_sim", "reject_reason"])
    rej = rej.filter(pc.equal(rej.column("reject_reason"), "semdedup.near_duplicate"))
    sims = pa.concat_arrays([kept.column("semdedup_sim").combine_chunks(),
                             rej.column("semdedup_sim").combine_chunks()])
    s = np.sort(sims.drop_null().to_numpy().astype(np.float64))
    m = k - sims.null_count  # the others kept
    assert 0 < m < len(s), (k, sims.null_count, len(s))
    return float(1 - (s[m - 1] + s[m]) / 2)


def _top_buckets(sets: sk.ProofSets, run_id: str, k: int) -> Path:
    """The ``k`` documents with the highest ``quality_bucket`` (ties by a seeded draw)."""
    t = _read(sk.filter_outputs(sets.root, run_id), ["id", "quality_bucket"])
    bucket = t.column("quality_bucket").to_numpy(zero_copy_only=False).astype(float)
    draw = np.random.default_rng(0).random(len(t))
    order = np.lexsort((draw, -np.nan_to_num(bucket, nan=-1.0)))[:k]
    keep = {t.column("id")[int(i)].as_py() for i in order}
    return sk.jsonl(sets.root / "quality-buckets-top.jsonl",
                    [d for d in sets.pool if d["id"] in keep])


def _speeds(root: Path, runs: dict[str, str]) -> list[list[str]]:
    """Per selector: documents / seconds of its scoring stages, each stage version timed by
    the catalog's run that computed it (not a cache hit), in this session or an earlier one."""
    from tasks.catalog import Catalog

    timed: dict[tuple[str, str], tuple[int, float]] = {}
    for run in Catalog(root / "catalog.duckdb").runs():
        for r in sk.stage_rows(root, run["run_id"]):
            if not r["cached"] and r["seconds"]:
                timed[(r["stage"], r["version"])] = (r["docs_in"], r["seconds"])
    out = []
    for name, rid in runs.items():
        stages = [(r["stage"], r["version"]) for r in sk.stage_rows(root, rid)
                  if r["stage"] in SCORING.get(name, [])]
        if not stages:
            continue
        names = " + ".join(s for s, _ in stages)
        if not all(s in timed for s in stages):
            out.append([name, names, "no uncached run in the catalog"])
            continue
        secs = sum(timed[s][1] for s in stages)
        out.append([name, names, f"{timed[stages[0]][0] / secs:,.0f}"])
    return out


def test_embedding_llm_and_proxy_selectors_vs_random(
        prefect_harness: None, bench_out: Path, table: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pipeline import run_recipe

    monkeypatch.setenv("DATAMILL_RAY_CPUS", os.environ.get("DATAMILL_RAY_CPUS", "1"))
    sets = sk.proof_sets(bench_out / "selection-proof")
    root = sets.root
    t0 = time.perf_counter()
    models = _proxies(sets)
    # no document rule: every corpus rule ranks the whole pool and keeps ceil(20 %)
    k = math.ceil(len(sets.pool) * PCT / 100)
    runs = {"random": sk.random_baseline(sets, k)}
    scores = _proxy_scores(sets, models, runs["random"]["run_id"])
    llm = fake_rater()
    eps = float("nan")
    try:
        recipes = _recipes(sets, llm, models, scores)

        def path(name: str, corpus: dict[str, Any], extra: list[dict[str, Any]]) -> str:
            return str(sk.proof_recipe(root / f"{name}.yaml", f"proof-{name}", root,
                                       sets.pool_p, corpus, extra))

        for name, (corpus, extra) in recipes.items():
            if name in SKIP:
                continue
            if name == "semdedup":  # a first run up to the filter stage finds epsilon
                first = run_recipe(path(name, {"tasks.select.semdedup": {"when": "after"}},
                                        extra), until="filter")["run_id"]
                eps = _semdedup_epsilon(root, first, k)
                corpus = {"tasks.select.semdedup": {"epsilon": eps, "when": "after"}}
            if name == "quality_buckets":
                rid = run_recipe(path(name, corpus, extra), until="filter")["run_id"]
                runs["quality_buckets"] = run_recipe(str(sk.proof_recipe(
                    root / "quality-buckets-top.yaml", "proof-quality-buckets-top", root,
                    _top_buckets(sets, rid, k), {})))
                runs["quality_buckets"]["scored_by"] = rid
                continue
            runs[name] = run_recipe(path(name, corpus, extra))
    finally:
        llm.close()
    build_s = time.perf_counter() - t0
    shares = {name: sk.kept_sources(root, r["run_id"]) for name, r in runs.items()}
    # exact dedup is a corpus rule too: a duplicate among the k is dropped by it (dups: what it
    # drops from the pool). SemDeDup's epsilon can only fall between distinct similarities.
    dups = len(sets.pool) - sk.kept_sources(root, models["pool0"]["run"])[0]
    for name, (n, _) in shares.items():
        assert k - dups <= n <= k or (name == "semdedup" and abs(n - k) <= max(2, k // 100)), \
            (name, n, k)
    t1 = time.perf_counter()
    rows, res = sk.verdicts(sets, runs, shares)
    speeds = _speeds(root, {n: r.get("scored_by", r["run_id"]) for n, r in runs.items()})
    report = (sk.header(sets, k, shares) + f"; semdedup epsilon {eps:.4f}\n"
              + table(sk.HEADERS, rows) + "\n" + sk.load_line(build_s, time.perf_counter() - t1)
              + "\nproxies' held-out target bpb (preselect's scores, negated): "
              + ", ".join(f"{lbl} {-v:.4f}" for lbl, v in scores.items()) + "\n\n"
              + table(["selector", "scoring stages", "docs/s (LLM stages: fake server)"],
                      speeds))
    print("\n" + report)
    (bench_out / "selection-proof-embed.txt").write_text(report + "\n")
    assert {r[0] for r in rows} == set(recipes) - SKIP, res


KMEANS = r"""
import json, sys, time
import numpy as np
from tasks.select import kmeans_bench as kb

def mb(key):  # this process's own figures: ru_maxrss would carry the parent's peak over exec
    with open("/proc/self/status") as fh:
        return round(int(next(x for x in fh if x.startswith(key)).split()[1]) / 1024)

n = int(sys.argv[1])
x = kb.synthetic(n, 384, 100, seed=0)
data = mb("VmRSS:")
c, fit_s, fit_cpu = kb.run("sklearn", x, 100, 20, 0, 1)
c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
print(json.dumps({"n": n, "fit_cpu_s": fit_cpu, "data_rss_mb": data, "peak_rss_mb": mb("VmHWM:"),
                  "mean_cos_dist": float((1 - (x @ c.T).max(axis=1)).mean())}))
"""


def test_kmeans_memory(table: Any) -> None:
    """The clusters stage's k-means (scikit-learn ``KMeans``, as the stage fits it) at 1x and
    10x documents (``DATAMILL_BENCH_KMEANS_N``, default 10,000: 10x is the stage's default
    ``fit_sample``, the most it ever fits), each in a fresh process with
    ``tasks.select.kmeans_bench``'s data and fit: synthetic unit vectors, dim 384, k = 100,
    20 iterations, 1 thread. Memory from /proc (VmRSS with the data, VmHWM at the end)."""
    n = int(os.environ.get("DATAMILL_BENCH_KMEANS_N", "10000"))
    rows = []
    for size in (n, 10 * n):
        out = subprocess.run([sys.executable, "-c", KMEANS, str(size)], cwd=sk.ROOT,
                             check=True, capture_output=True, text=True).stdout
        got = json.loads(out.strip().splitlines()[-1])
        assert got["n"] == size and got["peak_rss_mb"] >= got["data_rss_mb"]
        rows.append([f"{size:,}", f"{got['fit_cpu_s']:.2f}", str(got["data_rss_mb"]),
                     str(got["peak_rss_mb"]), str(got["peak_rss_mb"] - got["data_rss_mb"]),
                     f"{got['mean_cos_dist']:.3f}"])
    print(f"\nk-means, scikit-learn KMeans; load average {os.getloadavg()[0]:.1f}\n"
          + table(["documents", "fit CPU s", "RSS with data MB", "peak RSS MB",
                   "fit adds MB (its imports too)", "mean cosine distance"], rows))
