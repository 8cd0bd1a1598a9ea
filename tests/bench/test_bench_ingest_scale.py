"""Ingest at scale: one large JSONL file on 1 and 2 workers, and peak memory as the input grows.

All through the stage's own functions with a default ``IngestConfig`` (normalisation and
language id on); the input is ``ingestkit.records`` (``test_bench_ingest.py`` says where from):

4. One large JSONL file (the input, ids made unique, repeated to ~``16 * scale`` MB and
   shuffled) cut into ``RANGES`` ranges (``shard_max_bytes`` = its size / ``RANGES``) and
   ingested by the stage's own functions (``tasks.ingest.plan``: ranges, shards, the id step)
   on a Dask ``LocalCluster`` of 1 and of 2 single-threaded worker processes, in turn
   (``REPEATS`` pairs, each run on a fresh cluster, warmed first): the fastest run's seconds
   (planning, shards, id step), MB/s and the speed-up, and each pair's speed-up with their median
   (target >= 1.8x; 2 cores are the ceiling, and the scheduler and this process share them).
   Then the cores' own ceiling: the same input (``test_bench_ingest.py``'s) ingested by one
   process, and by two side by side.
5. Peak RSS of a fresh interpreter ingesting one JSONL file of 1x, 10x and 20x the size (the
   child reports its own peak): growth (target <= 1.2x at 10x), with ``shard_max_bytes`` =
   ``DATAMILL_BENCH_SHARD_MB`` (default 1) MB against a ~4 MB 1x input, so that the input
   spans several shards.


Prints tables; asserts only that every input document was accounted for.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from ingestkit import ROOT, RUNS, records, timed, write

from tasks.ingest import ingest_file
from tasks.recipe import IngestConfig

REPEATS = 5  # pairs of runs, 1 then 2 workers
DASK_TARGET = 1.8
RSS_TARGET = 1.2
RANGES = 8  # the large file's ranges (shard_max_bytes = its size / RANGES)


def test_bench_ingest_scale(bench_scale: int, tmp_path: Path, table: Callable[..., str]) -> None:
    lines, _ = records(bench_scale)
    write(tmp_path / "input.jsonl", lines)
    write(tmp_path / "warm.jsonl", lines[:50])
    if os.environ.get("DATAMILL_BENCH_DASK", "1") != "0":
        _bench_one_file(lines, bench_scale, tmp_path, table)
    _bench_rss(lines, tmp_path, table)


# ----------------------------------------------------------------------------- 4. one file
class _DaskExecutor:
    """The stage executor over a Dask client (what the runner does, without Prefect)."""

    def __init__(self, client: Any):
        self.client = client

    def shards(self, out: Any, fn: Any, jobs: Any, desc: str, resources: Any = None) -> list:
        from tasks.store import run_marked

        done = {k: out.shard_done(k) for k, _ in jobs}
        futs = {k: self.client.submit(run_marked, str(out.shard_marker(k)), fn, *a,
                                      pure=False) for k, a in jobs if done[k] is None}
        got = dict(zip(futs, self.client.gather(list(futs.values())), strict=True))
        return [done[k] or got[k] for k, _ in jobs]

    def map(self, fn: Any, jobs: Any, desc: str) -> list:
        return self.client.gather([self.client.submit(fn, *a, pure=False) for a in jobs])

    def task(self, fn: Any, *args: Any, desc: str = "task") -> Any:
        return self.client.submit(fn, *args, pure=False).result()


def _warm_worker(path: str, out: str) -> int:
    return ingest_file(path, f"warm-{os.getpid()}", out, "jsonl", {}, IngestConfig())["docs_in"]


def _big_file(lines: list[bytes], mb: float, path: Path) -> tuple[Path, int]:
    """The input repeated to `mb` MB, every id suffixed with its line (unique), shuffled (so
    that every range holds the same mix of sources)."""
    recs = [json.loads(ln) for ln in lines if ln.strip()]
    out: list[bytes] = []
    size = 0
    while size < mb * 2**20:
        for r in recs:
            out.append(json.dumps({**r, "id": f"{r.get('id')}~{len(out)}"}).encode() + b"\n")
            size += len(out[-1])
    random.Random(0).shuffle(out)
    path.write_bytes(b"".join(out))
    return path, len(out)


def _bench_one_file(lines: list[bytes], scale: int, tmp: Path,
                    table: Callable[..., str]) -> None:
    distributed = pytest.importorskip("distributed")
    from tasks.ingest.ids import forget, input_key, unique_ids
    from tasks.ingest.plan import account, shard_jobs
    from tasks.store import StageDir

    src, n = _big_file(lines, 16 * scale, tmp / "big.jsonl")
    mb = src.stat().st_size / 2**20
    cfg = IngestConfig(shard_max_bytes=src.stat().st_size // RANGES + 1)
    warm = write(tmp / "warm-dask.jsonl", lines[:50])
    rows: list[list[object]] = []
    times: dict[int, list[list[float]]] = {1: [], 2: []}
    # 1 and 2 workers in turn, REPEATS pairs, each run on its own fresh, warmed cluster (one
    # at a time: an idle cluster's processes share the cores): the machine's speed drifts
    # within a minute, and a pair's ratio sees the same drift on both sides
    for rep, workers in itertools.product(range(REPEATS), (1, 2)):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.run(_warm_worker, str(warm), str(tmp / f"warm-{workers}-{rep}"))
            ex = _DaskExecutor(client)
            out = StageDir(tmp / f"root-{workers}-{rep}", "ingest", "v")
            t = [time.perf_counter()]  # what tasks.ingest.plan.run_shards does, timed
            jobs = shard_jobs([src], str(out.path), "jsonl", {}, cfg, ex)
            t.append(time.perf_counter())
            forget(out, [k for k, _ in jobs])
            stats = ex.shards(out, ingest_file, jobs, "ingest")
            t.append(time.perf_counter())
            groups: dict[str, list[str]] = {}
            for (k, _), s in zip(jobs, stats, strict=True):
                groups.setdefault(input_key(k), []).extend(s["kept"])
            unique_ids(out, ex, list(groups.items()), True)
            stats = account(out, jobs, stats)
            t.append(time.perf_counter())
        times[workers].append([t[3] - t[0], t[1] - t[0], t[2] - t[1], t[3] - t[2]])
        assert sum(s["docs_in"] for s in stats) == n
    pairs = sorted(a[0] / b[0] for a, b in zip(times[1], times[2], strict=True))
    for workers in (1, 2):
        best = min(times[workers])  # the fastest run: other processes share the cores
        rows.append([f"{workers} worker(s)", len(jobs), n, *(f"{x:.2f}" for x in best),
                     f"{mb / best[0]:.1f}", f"{min(times[1])[0] / best[0]:.2f}x"])
    # the cores' ceiling: the 8.4 MB input ingested by one process, then by two side by side
    solo = timed(ROOT, tmp / "input.jsonl", tmp, "solo")["s"]
    with ThreadPoolExecutor(2) as pool:
        pair = [r["s"] for r in pool.map(lambda tag: timed(ROOT, tmp / "input.jsonl", tmp, tag),
                                         ["pair-a", "pair-b"])]
    print(f"\nOne JSONL file of {mb:.0f} MB, cut into ranges (shard_max_bytes "
          f"{cfg.shard_max_bytes / 2**20:.0f} MB), Dask LocalCluster (processes, 1 thread "
          f"each); target speed-up >= {DASK_TARGET}x; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} (other processes share them)")
    print(table(["cluster", "ranges", "docs", "s", "plan s", "shards s", "ids s", "MB/s",
                 "speed-up"], rows))
    print(f"speed-up of each pair (1 then 2 workers, in turn), sorted: "
          f"{', '.join(f'{r:.2f}x' for r in pairs)}; median {statistics.median(pairs):.2f}x")
    print(f"the cores' ceiling: one ingest process {solo:.2f} s; two side by side "
          f"{pair[0]:.2f} s and {pair[1]:.2f} s (the input above, fastest of {RUNS} each)")


RSS_CHILD = r"""
import json, resource, sys, time
from tasks.ingest import ingest_file
from tasks.recipe import IngestConfig
from tasks import langid, normalize

def status(key):
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None

before = status("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:  # reset the high-water mark, so a transient peak while importing does not hide ingest's
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
t0 = time.perf_counter()
cfg = IngestConfig(shard_max_bytes=int(sys.argv[3]))
st = ingest_file(sys.argv[1], "rss", sys.argv[2], "jsonl", {}, cfg)
dt = time.perf_counter() - t0
peak = (status("VmHWM") if reset else None) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "peak_kb": peak, "docs": st["docs_in"], "s": dt}))
"""


def _bench_rss(lines: list[bytes], tmp: Path, table: Callable[..., str]) -> None:
    base = []
    got = 0
    for ln in lines:  # 1x: up to ~4 MB (the sample's size)
        if got >= 4 * 2**20:
            break
        base.append(ln)
        got += len(ln)
    rows: list[list[object]] = []
    peaks = {}
    shard = int(float(os.environ.get("DATAMILL_BENCH_SHARD_MB", "1")) * 2**20)
    for mult in (1, 10, 20):
        f = write(tmp / f"rss-{mult}.jsonl", base * mult)
        proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(f), str(tmp / f"rss{mult}"),
                               str(shard)], cwd=ROOT, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        assert r["docs"] == len(base) * mult
        peaks[mult] = r["peak_kb"]
        rows.append([f"{mult}x", r["docs"], f"{f.stat().st_size / 2**20:.1f}",
                     f"{r['s']:.1f}", f"{r['before_kb'] / 1024:.0f}",
                     f"{r['peak_kb'] / 1024:.0f}", f"{r['peak_kb'] / peaks[1]:.2f}x"])
    print(f"\nPeak RSS of one ingest_file (fresh interpreter; 'imports' = RSS after importing; "
          f"peak = VmHWM reset after imports, else ru_maxrss; shards of {shard / 2**20:g} MB); "
          f"target growth <= {RSS_TARGET}x at 10x")
    print(table(["input", "docs", "MB", "s", "imports MiB", "peak MiB", "growth"], rows))
