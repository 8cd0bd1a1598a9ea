"""End to end, ingest included: datamill's real flow vs datatrove's pipelines, both on 2 workers.

Both sides start from the same raw JSONL files on disk (``FILES`` files, so each side has one
file per worker) and both pay for reading and parsing them:

1. **Filters.** datatrove 0.10.1: ``JsonlReader -> GopherRepetitionFilter ->
   GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter -> JsonlWriter`` under
   ``LocalPipelineExecutor(tasks=FILES, workers=2)``. datamill: ``run_recipe(recipe,
   until="filter")`` (ingest, score, filter: the real stage code on Dask) with
   ``DATAMILL_DASK_WORKERS=2`` and a filter of exactly those four rules (no dedup).
2. **MinHash dedup.** datatrove's four MinHash stages (signatures and filter with one task per
   file, buckets with one task per bucket, all on 2 workers; cluster is one task) at its
   defaults, vs datamill's ingest + filter with only ``minhash_dedup`` (its defaults).

datatrove's time is the executors' wall time inside its subprocess (interpreter start and
imports are printed apart). datamill runs three times per half, each on a fresh data root: its
first run in this process (which pays the flow process's lazy imports) and a second one, each on
a fresh Dask cluster, then a third on the second's cluster, which ``run_recipe`` keeps for the
process's next run. Each is printed as the wall time of ``run_recipe`` under
``prefect_test_harness`` (Prefect flow and task runs, Dask ``LocalCluster`` start, contract
gates, catalog, report) and the sum of the stage seconds the catalog records; per stage, the
Dask cluster's start (inside the first stage that uses Dask) and the shards' CPU and wall
seconds (their profiles in the manifests), and the run's time outside the stages (the contract
gates, the report, the rest). Both sides' CPU seconds are printed too, since wall time on a
shared machine says as much about the other jobs: datatrove's subprocess with its worker
processes, datamill's flow process (the test process) with its Dask workers (the harness's
Prefect API server is not counted; a worker's CPU seconds since it started, read from the
worker). The test harness's start-up is not timed.

Corpus: the filter benchmark's (``load_corpus``: ``make corpus``'s JSONL, else the sample x
``DATAMILL_BENCH_SCALE``) for the filters; the MinHash benchmark's planted near-duplicates
(``DATAMILL_BENCH_SCALE`` x 1,000 base documents) for the dedup. The two halves are two tests
(``-k filters``, ``-k minhash`` runs one). A third (``-k stage_code``) runs the filters half's
stages alone: their ``run`` through the runner's ``Engines`` on a fresh cluster, no Prefect,
contracts or report, ``REPEATS`` times, with the workers' CPU seconds per stage, then MB/s
per stage against the physical limit (``e2ekit.physical_limit``). Targets
(>= 5x filters, >= 10x MinHash) are printed PASS/MISS, never asserted; the tests assert only
that both sides accounted for every document.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from e2ekit import FILES, WORKERS, machine, physical_limit, run_datatrove, write_jsonl
from test_bench_filters import load_corpus
from test_bench_minhash import planted_corpus

FILTER_TARGET = 5.0
MINHASH_TARGET = 10.0
REPEATS = 3  # fresh clusters in the stage-code test
RULES = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]


def timed_parts(mp: pytest.MonkeyPatch) -> dict[str, float]:
    """Wall seconds the run spends in the Dask cluster's start (inside the first stage that
    uses Dask), the contract gates and the report: those functions wrapped (never changed)."""
    import flows.pipeline as pipeline
    from infra import dask as dask_engine

    spent = {k: 0.0 for k in ("cluster start", "contracts", "contracts cpu", "report",
                              "report cpu")}

    def wrap(owner: Any, name: str, key: str, when: Callable[[], bool] = lambda: True) -> None:
        fn = getattr(owner, name)

        def call(*a: Any, **k: Any) -> Any:
            t0, c0, counted = time.perf_counter(), time.process_time(), when()
            try:
                return fn(*a, **k)
            finally:
                if counted:
                    spent[key] += time.perf_counter() - t0
                    if f"{key} cpu" in spent:  # the flow process's, all its threads
                        spent[f"{key} cpu"] += time.process_time() - c0
        mp.setattr(owner, name, call)

    wrap(dask_engine, "get_client", "cluster start", lambda: dask_engine._client is None)
    wrap(pipeline, "contract_gate", "contracts")
    wrap(pipeline, "_publish", "report")
    return spent


def workers_cpu() -> dict[str, float]:
    """CPU seconds of each Dask worker process of this process's cluster since it started
    (none without a cluster)."""
    from infra import dask as dask_engine

    return {} if dask_engine._client is None else dask_engine._client.run(time.process_time)


def run_datamill(inp: Path, work: Path, filter_cfg: dict[str, Any], keep_cluster: bool = False
                 ) -> dict[str, Any]:
    """The real flow up to the filter on a fresh data root, on a fresh 2-worker LocalCluster
    or (``keep_cluster``) on the one this process has from its last run, as run_recipe does."""
    from flows.pipeline import run_recipe
    from infra import dask as dask_engine
    from tasks.profile import profile_rows

    recipe = {"name": f"e2e-{work.name}", "data_root": str(work / "root"),
              "input": {"paths": [str(inp / "*.jsonl")]},
              "stages": {"rewrite": None, "filter": filter_cfg}}
    path = work / "recipe.yaml"
    work.mkdir(parents=True, exist_ok=True)
    # in the recipe's order (datatrove's pipeline order): filters apply in it
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    if not keep_cluster:
        dask_engine.shutdown()  # cluster start-up is part of this run's wall time
    with pytest.MonkeyPatch.context() as mp:
        timed = timed_parts(mp)
        t0, c0, k0 = time.perf_counter(), time.process_time(), workers_cpu()
        summary = run_recipe(str(path), until="filter")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        k1 = workers_cpu()  # a worker started in this run counts from its start
        spent = sum(k1[w] - k0.get(w, 0.0) for w in k1)
    assert summary["status"] == "completed", summary
    stages = {s["stage"]: s for s in summary["stages"]}
    shards: dict[str, dict[str, float]] = {}  # a stage's shard steps summed (ingest: + ids)
    for r in profile_rows(summary["stages"]):
        acc = shards.setdefault(r["stage"], {"cpu_s": 0.0, "wall_s": 0.0})
        acc["cpu_s"] += r["cpu_s"]
        acc["wall_s"] += r["wall_s"]
    return {"wall_s": wall, "stage_s": sum(float(s["seconds"] or 0) for s in stages.values()),
            "stages": stages, "shards": shards, "flow_cpu_s": cpu, "workers_cpu_s": spent,
            "timed": timed}


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATAMILL_DASK_WORKERS", str(WORKERS))
        mp.setenv("DATAMILL_DASK_DASHBOARD", "127.0.0.1:0")  # 8787 may be taken
        with prefect_test_harness(server_startup_timeout=120):
            yield


def row(name: str, n: int, mb: float, seconds: float) -> list[str]:
    return [name, f"{seconds:.1f}", f"{n / seconds:,.0f}", f"{mb / seconds:.2f}"]


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.1f}x ({'PASS' if ratio >= target else 'MISS'})"


def report(title: str, n: int, mb: float, dt: dict[str, Any], runs: list[dict[str, Any]],
           target: float, table: Callable[..., str], extra: str) -> None:
    """Both sides, datamill three times: its first run in this process (as `datamill run` and a
    served deployment's runs, each a new process), a second one (fresh data root and cluster)
    once the flow process's lazy imports (great-expectations, matplotlib) are done, and a third
    on the second's cluster (as a Python session's or the ablation flow's next run)."""
    dt_s = sum(dt["seconds"])
    print(f"\n--- {title}: {n:,} docs, {mb:.1f} MB of JSONL in {FILES} files ---")
    rows = [row("datatrove, executors' wall", n, mb, dt_s),
            row("datatrove, CPU s (subprocess + its workers)", n, mb, dt["cpu_s"])]
    for dm in runs:
        rows += [row(f"datamill {dm['label']}: run_recipe wall", n, mb, dm["wall_s"]),
                 row(f"datamill {dm['label']}: sum of stage seconds", n, mb, dm["stage_s"]),
                 row(f"datamill {dm['label']}: CPU s (flow process + Dask workers)", n, mb,
                     dm["flow_cpu_s"] + dm["workers_cpu_s"])]
    print(table(["side", "seconds", "docs/s", "MB/s"], rows))
    for dm in runs:
        cluster = dm["timed"]["cluster start"]
        per_stage = []
        for k, s in dm["stages"].items():
            parts = [f"Dask cluster start {cluster:.1f}s"] if k == "ingest" and cluster else []
            if sh := dm["shards"].get(k):
                parts.append(f"shards: CPU {sh['cpu_s']:.1f}s, wall {sh['wall_s']:.1f}s")
            per_stage.append(f"{k} {float(s['seconds'] or 0):.1f}s"
                             + (f" ({'; '.join(parts)})" if parts else ""))
        t = dm["timed"]
        rest = dm["wall_s"] - dm["stage_s"] - t["contracts"] - t["report"]
        dm_cpu = dm["flow_cpu_s"] + dm["workers_cpu_s"]
        print(f"datamill {dm['label']}: stages {', '.join(per_stage)}")
        print(f"  outside the stages: contract gates {t['contracts']:.1f}s (CPU "
              f"{t['contracts cpu']:.1f}s), report {t['report']:.1f}s "
              f"(CPU {t['report cpu']:.1f}s), "
              f"the rest (Prefect flow and task runs, catalog) {rest:.1f}s; CPU: flow process "
              f"{dm['flow_cpu_s']:.1f}s, Dask workers {dm['workers_cpu_s']:.1f}s (the test "
              f"harness's Prefect API server not counted)")
        print(f"  ratio datamill/datatrove: {verdict(dt_s / dm['wall_s'], target)} on run_recipe "
              f"wall, {verdict(dt_s / dm['stage_s'], target)} on stage seconds "
              f"({dt_s / (dm['stage_s'] - cluster):.1f}x less the cluster start), "
              f"{dt['cpu_s'] / dm_cpu:.1f}x on CPU seconds; target >= {target:g}x")
    print(f"datatrove: {', '.join(f'{s:.1f}s' for s in dt['seconds'])} (+ imports "
          f"{dt['import_s']:.1f}s, whole subprocess {dt['process_s']:.1f}s)")
    print(extra)


def run_datamill_thrice(inp: Path, work: Path, filter_cfg: dict[str, Any]
                        ) -> list[dict[str, Any]]:
    """``run_datamill`` three times, each on a fresh data root: the first run in this process
    (labelled as such only if great-expectations was not imported yet) and a second on fresh
    clusters, then a third on the second's cluster (a session's next ``run_recipe``)."""
    import sys

    from infra import dask as dask_engine

    cold = "great_expectations" not in sys.modules
    first = run_datamill(inp, work / "first", filter_cfg)
    first["label"] = "first run in the process" if cold else "first run (imports done earlier)"
    again = run_datamill(inp, work / "again", filter_cfg)
    again["label"] = "second run (imports done)"
    warm = run_datamill(inp, work / "warm", filter_cfg, keep_cluster=True)
    warm["label"] = "third run (imports done, the cluster kept)"
    dask_engine.shutdown()
    return [first, again, warm]


def accounted(dm: dict[str, Any], n: int) -> dict[str, Any]:
    ingest, flt = dm["stages"]["ingest"], dm["stages"]["filter"]
    assert ingest["docs_in"] == n, ingest
    assert flt["docs_in"] == flt["docs_kept"] + flt["docs_rejected"], flt
    return flt


def header(what: str, versus: str = "datamill vs datatrove 0.10.1") -> None:
    load = os.getloadavg()
    print(f"\n\n=== end to end, ingest included ({what}): {versus}, {WORKERS} workers each ===\n"
          f"machine: {machine()}; load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def footer() -> None:
    load = os.getloadavg()
    print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def test_end_to_end_filters_vs_datatrove(tmp_path: Path, bench_scale: int, harness: None,
                                         table: Callable[..., str]) -> None:
    header("the four rule sets")
    docs, label = load_corpus(bench_scale)
    n = len(docs)
    mb = write_jsonl(docs, tmp_path / "filters_in")
    dt = run_datatrove("filters", tmp_path / "filters_in", tmp_path / "dt_filters")
    runs = run_datamill_thrice(tmp_path / "filters_in", tmp_path / "dm_filters",
                              {"filters": {r: {} for r in RULES}, "exact_dedup": None,
                               "minhash_dedup": None})
    flt = [accounted(dm, n) for dm in runs][0]
    report(f"filters ({label})", n, mb, dt, runs, FILTER_TARGET, table,
           f"kept: datamill {flt['docs_kept']:,}, datatrove {len(dt['kept']):,} "
           f"(datamill's ingest drops {n - runs[0]['stages']['ingest']['docs_kept']:,} first)")
    footer()


def test_end_to_end_minhash_vs_datatrove(tmp_path: Path, bench_scale: int, harness: None,
                                         table: Callable[..., str]) -> None:
    header("MinHash dedup")
    mdocs, pairs = planted_corpus(1000 * bench_scale)
    mn = len(mdocs)
    mmb = write_jsonl(mdocs, tmp_path / "minhash_in")
    mdt = run_datatrove("minhash", tmp_path / "minhash_in", tmp_path / "dt_minhash")
    runs = run_datamill_thrice(tmp_path / "minhash_in", tmp_path / "dm_minhash",
                              {"filters": {}, "exact_dedup": None, "minhash_dedup": {}})
    mflt = [accounted(dm, mn) for dm in runs][0]
    assert len(mdt["kept"]) + len(mdt["removed"]) == mn
    report(f"MinHash dedup (planted: {mn - len(pairs):,} base + {len(pairs):,} variants)",
           mn, mmb, mdt, runs, MINHASH_TARGET, table,
           f"removed: datamill {mflt['docs_rejected']:,}, datatrove {len(mdt['removed']):,}")
    footer()


def run_stage_code(inp: Path, root: Path) -> list[list[str]]:
    """ingest, score and filter (the four rule sets) through the stages' own ``run`` and the
    runner's ``Engines`` on a fresh LocalCluster, without Prefect, contracts or report: per
    stage, its wall seconds, the workers' CPU seconds (imports and first use included) and
    the CPU seconds inside its shards."""
    from flows.runner import Engines
    from infra import dask as dask_engine
    from tasks.recipe import parse_recipe
    from tasks.stage import Manifest, RunInfo, Upstream
    from tasks.stages.filter import Filter, Score
    from tasks.stages.ingest import Ingest
    from tasks.store import StageDir

    recipe = parse_recipe({"name": "stages", "input": {"paths": [str(inp / "*.jsonl")]},
                           "stages": {"rewrite": None, "filter": {
                               "filters": {r: {} for r in RULES}, "exact_dedup": None,
                               "minhash_dedup": None}}})
    run, up = RunInfo("bench", recipe, root, None), Upstream()
    dask_engine.shutdown()
    t0 = time.perf_counter()
    client = dask_engine.get_client()
    rows = [["Dask cluster start", f"{time.perf_counter() - t0:.2f}", "", ""]]
    before = client.run(time.process_time)
    for stage in (Ingest(), Score(), Filter()):
        out, ex = StageDir(root, stage.name, "bench"), Engines(stage.resources)
        out.path.mkdir(parents=True)
        t0 = time.perf_counter()
        m = Manifest.from_dict({"stage": stage.name, "version": "bench",
                                **stage.run(run, up, out, ex)})
        wall = time.perf_counter() - t0
        now = client.run(time.process_time)
        assert m.docs_in == m.docs_kept + m.docs_rejected, m
        up.add(m, True)
        rows.append([stage.name, f"{wall:.2f}", f"{sum(now[w] - before[w] for w in now):.2f}",
                     f"{sum(p.get('cpu_s', 0) for p in ex.profiles):.2f}"])
        before = now
    dask_engine.shutdown()
    return rows


def test_end_to_end_stage_code_on_a_fresh_cluster(tmp_path: Path, bench_scale: int,
                                                  table: Callable[..., str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage code alone, ``REPEATS`` times, each on a fresh cluster and data root: what
    the filters half's stages cost without the flow around them (``-k stage_code``)."""
    header("the stage code alone", "datamill without Prefect")
    monkeypatch.setenv("DATAMILL_DASK_WORKERS", str(WORKERS))
    monkeypatch.setenv("DATAMILL_DASK_DASHBOARD", "127.0.0.1:0")
    docs, label = load_corpus(bench_scale)
    mb = write_jsonl(docs, tmp_path / "in")
    print(f"{label}: {len(docs):,} docs, {mb:.1f} MB of JSONL in {FILES} files")
    reps = []
    for rep in range(REPEATS):
        rows = run_stage_code(tmp_path / "in", tmp_path / f"root{rep}")
        reps.append(rows)
        print(table(["step", "wall s", "workers' CPU s", "CPU s in shards"], rows))
        wall = sum(float(r[1]) for r in rows[1:])
        print(f"ingest + score + filter: {wall:.2f} s wall, {len(docs) / wall:,.0f} docs/s, "
              f"{mb / wall:.2f} MB/s")
    limit = physical_limit(sorted((tmp_path / "in").glob("*.jsonl")), tmp_path)
    print(f"\nMB/s of JSONL per stage (median of {REPEATS}) against the physical limit: "
          f"pyarrow's JSON reader + a zstd Parquet write of the same {mb:.1f} MB, one process, "
          f"best of 3: {limit:.2f} CPU s, {mb / limit:.1f} MB per CPU second")
    out = []
    for i, name in enumerate(r[0] for r in reps[0][1:]):
        wall = float(np.median([float(r[i + 1][1]) for r in reps]))
        cpu = float(np.median([float(r[i + 1][2]) for r in reps]))
        out.append([name, f"{mb / wall:.1f}", f"{mb / cpu:.1f}", f"{limit / cpu:.2f}"])
    print(table(["stage", f"MB/s wall ({WORKERS} workers)", "MB per workers' CPU s",
                 "limit's CPU s / stage's"], out))
    footer()
