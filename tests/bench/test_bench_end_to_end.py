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
imports are printed apart). datamill's is printed twice: the wall time of ``run_recipe`` under
``prefect_test_harness`` (Prefect flow and task runs, Dask ``LocalCluster`` start, catalog,
report), and the sum of the stage seconds the catalog records. Each run gets a fresh cluster
and a fresh data root (no cache). The test harness's start-up is not timed.

Corpus: the filter benchmark's (``load_corpus``: ``make corpus``'s JSONL, else the sample x
``DATAMILL_BENCH_SCALE``) for the filters; the MinHash benchmark's planted near-duplicates
(``DATAMILL_BENCH_SCALE`` x 1,000 base documents) for the dedup. Targets (>= 5x filters,
>= 10x MinHash) are printed PASS/MISS, never asserted; the test asserts only that both sides
accounted for every document.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_bench_filters import datatrove_python, load_corpus
from test_bench_minhash import planted_corpus

FILES = 2
WORKERS = 2
FILTER_TARGET = 5.0
MINHASH_TARGET = 10.0
RULES = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]

DATATROVE_SCRIPT = r'''
import json, sys, time
t_import = time.perf_counter()
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter)
from datatrove.pipeline.filters import (
    C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter
t_import = time.perf_counter() - t_import

WORKERS = int(sys.argv[6]) if len(sys.argv) > 6 else 1


def run(pipe, tasks, i):
    t0 = time.perf_counter()
    LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=min(WORKERS, tasks),
                          logging_dir=f"{sys.argv[3]}/logs{i}").run()
    return time.perf_counter() - t0


def ids(folder):
    import glob
    got = []
    for f in sorted(glob.glob(f"{folder}/*.jsonl")):
        with open(f) as fh:
            got += [json.loads(line)["id"] for line in fh]
    return got


def main(mode, inp, work, out, files, workers):  # datatrove's workers are spawned:
    # everything runs under the __main__ guard
    if mode == "filters":
        pipe = [JsonlReader(inp), GopherRepetitionFilter(), GopherQualityFilter(),
                C4QualityFilter(), FineWebQualityFilter(),
                JsonlWriter(f"{work}/kept", compression=None)]
        seconds = [run(pipe, files, 0)]
        result = {"kept": ids(f"{work}/kept")}
    else:
        cfg = MinhashConfig()
        stages = [
            ([JsonlReader(inp), MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg)],
             files),
            ([MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets",
                                  config=cfg)], cfg.num_buckets),
            ([MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove",
                                  config=cfg)], 1),
            ([JsonlReader(inp), MinhashDedupFilter(
                input_folder=f"{work}/remove",
                exclusion_writer=JsonlWriter(f"{work}/removed", compression=None)),
              JsonlWriter(f"{work}/kept", compression=None)], files),
        ]
        seconds = [run(p, n, i) for i, (p, n) in enumerate(stages)]
        result = {"kept": ids(f"{work}/kept"), "removed": ids(f"{work}/removed")}
    json.dump({"seconds": seconds, "import_s": t_import, **result}, open(out, "w"))


if __name__ == "__main__":
    a = sys.argv[1:7]
    main(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]))
'''


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, {model}, {platform.system()}"


def write_jsonl(docs: list[dict[str, Any]], folder: Path, files: int = FILES) -> float:
    """The docs as `files` JSONL files (round-robin); returns the MB of JSONL text written."""
    folder.mkdir(parents=True)
    handles = [(folder / f"part-{i:02d}.jsonl").open("w", encoding="utf-8")
               for i in range(files)]
    size = 0
    try:
        for i, d in enumerate(docs):
            line = json.dumps({"id": str(d["id"]), "text": d["text"]}, ensure_ascii=False) + "\n"
            handles[i % files].write(line)
            size += len(line.encode("utf-8"))
    finally:
        for h in handles:
            h.close()
    return size / 1e6


def run_datatrove(mode: str, inp: Path, work: Path) -> dict[str, Any]:
    script = work / "dt_e2e.py"
    work.mkdir(parents=True, exist_ok=True)
    script.write_text(DATATROVE_SCRIPT, encoding="utf-8")
    env = {**os.environ, "LOGURU_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([str(datatrove_python()), str(script), mode, str(inp), str(work),
                           str(work / "dt.json"), str(FILES), str(WORKERS)],
                          capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads((work / "dt.json").read_text(encoding="utf-8"))
    out["process_s"] = wall
    return out


def run_datamill(inp: Path, work: Path, filter_cfg: dict[str, Any]) -> dict[str, Any]:
    """The real flow up to the filter, on a fresh 2-worker LocalCluster and data root."""
    from flows.pipeline import run_recipe
    from infra import dask as dask_engine

    recipe = {"name": f"e2e-{work.name}", "data_root": str(work / "root"),
              "input": {"paths": [str(inp / "*.jsonl")]},
              "stages": {"rewrite": None, "filter": filter_cfg}}
    path = work / "recipe.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    dask_engine.shutdown()  # cluster start-up is part of every run's wall time
    t0 = time.perf_counter()
    summary = run_recipe(str(path), until="filter")
    wall = time.perf_counter() - t0
    dask_engine.shutdown()
    assert summary["status"] == "completed", summary
    stages = {s["stage"]: s for s in summary["stages"]}
    return {"wall_s": wall, "stage_s": sum(float(s["seconds"] or 0) for s in stages.values()),
            "stages": stages}


@pytest.fixture()
def harness(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATAMILL_DASK_WORKERS", str(WORKERS))
    monkeypatch.setenv("DATAMILL_DASK_DASHBOARD", "127.0.0.1:0")  # 8787 may be taken
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def row(name: str, n: int, mb: float, seconds: float) -> list[str]:
    return [name, f"{seconds:.1f}", f"{n / seconds:,.0f}", f"{mb / seconds:.2f}"]


def report(title: str, n: int, mb: float, dt: dict[str, Any], dm: dict[str, Any],
           target: float, table: Callable[..., str], extra: str) -> None:
    dt_s = sum(dt["seconds"])
    ratio_wall, ratio_stage = dt_s / dm["wall_s"], dt_s / dm["stage_s"]
    print(f"\n--- {title}: {n:,} docs, {mb:.1f} MB of JSONL in {FILES} files ---")
    print(table(["side", "seconds", "docs/s", "MB/s"], [
        row("datatrove, executors' wall", n, mb, dt_s),
        row("datamill, run_recipe wall (Prefect + Dask start)", n, mb, dm["wall_s"]),
        row("datamill, sum of stage seconds", n, mb, dm["stage_s"]),
    ]))
    per_stage = ", ".join(f"{k} {float(s['seconds'] or 0):.1f}s" for k, s in dm["stages"].items())
    print(f"datamill stages: {per_stage}; datatrove: "
          f"{', '.join(f'{s:.1f}s' for s in dt['seconds'])} (+ imports {dt['import_s']:.1f}s, "
          f"whole subprocess {dt['process_s']:.1f}s)")
    print(extra)
    print(f"ratio datamill/datatrove: {ratio_wall:.1f}x on run_recipe wall "
          f"({'PASS' if ratio_wall >= target else 'MISS'}), {ratio_stage:.1f}x on stage seconds "
          f"({'PASS' if ratio_stage >= target else 'MISS'}); target >= {target:g}x")


def accounted(dm: dict[str, Any], n: int) -> dict[str, Any]:
    ingest, flt = dm["stages"]["ingest"], dm["stages"]["filter"]
    assert ingest["docs_in"] == n, ingest
    assert flt["docs_in"] == flt["docs_kept"] + flt["docs_rejected"], flt
    return flt


def test_end_to_end_vs_datatrove(tmp_path: Path, bench_scale: int, harness: None,
                                 table: Callable[..., str]) -> None:
    load = os.getloadavg()
    print(f"\n\n=== end to end, ingest included: datamill vs datatrove 0.10.1, "
          f"{WORKERS} workers each ===\nmachine: {machine()}; load average before "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    docs, label = load_corpus(bench_scale)
    n = len(docs)
    mb = write_jsonl(docs, tmp_path / "filters_in")
    dt = run_datatrove("filters", tmp_path / "filters_in", tmp_path / "dt_filters")
    dm = run_datamill(tmp_path / "filters_in", tmp_path / "dm_filters",
                      {"filters": {r: {} for r in RULES}, "exact_dedup": None,
                       "minhash_dedup": None})
    flt = accounted(dm, n)
    report(f"filters ({label})", n, mb, dt, dm, FILTER_TARGET, table,
           f"kept: datamill {flt['docs_kept']:,}, datatrove {len(dt['kept']):,} "
           f"(datamill's ingest drops {n - dm['stages']['ingest']['docs_kept']:,} first)")

    mdocs, pairs = planted_corpus(1000 * bench_scale)
    mn = len(mdocs)
    mmb = write_jsonl(mdocs, tmp_path / "minhash_in")
    mdt = run_datatrove("minhash", tmp_path / "minhash_in", tmp_path / "dt_minhash")
    mdm = run_datamill(tmp_path / "minhash_in", tmp_path / "dm_minhash",
                       {"filters": {}, "exact_dedup": None, "minhash_dedup": {}})
    mflt = accounted(mdm, mn)
    assert len(mdt["kept"]) + len(mdt["removed"]) == mn
    report(f"MinHash dedup (planted: {mn - len(pairs):,} base + {len(pairs):,} variants)",
           mn, mmb, mdt, mdm, MINHASH_TARGET, table,
           f"removed: datamill {mflt['docs_rejected']:,}, datatrove {len(mdt['removed']):,}")
    load = os.getloadavg()
    print(f"load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
