"""Peak memory of MinHash near-dedup as a corpus rule (tasks/corpus/minhash.py) at 1x, 5x, 10x.

Corpus: ``N`` real documents (``test_bench_minhash.base_docs``: ``make corpus``'s JSONL, else
the sample; 60+ words, near-duplicate-free at Jaccard 0.5), cycled with word-shuffled copies
when there are fewer, plus a planted set of ``N / 10`` one-word variants of them (one word
replaced: true 5-gram Jaccard ~0.9). At scale ``s`` it grows by ``(s - 1) x N`` documents
chosen so that the number of duplicates is controlled:

- **fixed dups**: word-shuffled copies (each copy's words in a random order of its own: real
  words, no shared 5-gram, Jaccard ~0 with everything), so the corpus grows and the
  duplicates stay the ``N / 10`` planted variants;
- **dups x s**: one-word variants of the base documents, so the duplicates grow with it.

Scored once in this process (``minhash.hash_texts``, the score step; shards of
``SHARD_DOCS``), only the score columns stored. Then, per series and scale, in a fresh child
process: a Dask ``LocalCluster`` (2 single-threaded worker processes) runs the rule's ``keys``
per shard and ``decide`` fans out through it. Baselines are taken after a warm-up on 50
documents (cluster up, modules imported, allocator pools primed). Peak RSS of the child (the
driving process) and of each worker is Linux's ``VmHWM``, reset after the warm-up
(``/proc/<pid>/clear_refs``); where it cannot be reset, RSS sampled every 10 ms (psutil). Not
``ru_maxrss``: after fork and exec it keeps the parent's peak. The table shows peaks, their
growth over the baselines, and each peak's ratio to its 1x peak. For contrast, "in-process"
is what the filter flow did before: every candidate's bands and signature gathered into one
process and ``minhash.clusters`` run there (same child set-up, no cluster).

Knobs: ``DATAMILL_BENCH_MINHASH_MEM_DOCS`` (``N``, default 5000),
``DATAMILL_BENCH_MINHASH_MEM_SCALES`` (default ``1,5,10``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from test_bench_minhash import base_docs

ROOT = Path(__file__).resolve().parents[2]
SHARD_DOCS = 1000

CHILD_RULE = r'''
import json, os, sys, threading, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np, psutil, pyarrow.parquet as pq
from distributed import Client, LocalCluster
from tasks.corpus import minhash as rule
from tasks.corpus.base import RuleContext, decision_path
from tasks.filters.minhash import Config

files, work = json.loads(sys.argv[2]), sys.argv[3]
cfg = Config()

def keys_job(path, shard, out):  # as the filter stage's corpus_keys: score columns -> keys
    t = pq.read_table(path, columns=list(rule.COLUMNS))
    k = rule.keys(t, shard, np.arange(len(t)), cfg, None)
    pq.write_table(k, out)
    return len(k)

def reset_peak(pid):  # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS)
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False

def hwm(pid):
    with open(f"/proc/{pid}/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM"))

peak, stop = {}, threading.Event()
def sample(pids):  # sampled peaks: the fallback where VmHWM cannot be reset
    procs = {p: psutil.Process(p) for p in pids}
    while not stop.is_set():
        for p, pr in procs.items():
            try:
                peak[p] = max(peak.get(p, 0), pr.memory_info().rss)
            except psutil.Error:
                pass
        time.sleep(0.01)

with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                  memory_limit="8GiB") as cluster, Client(cluster) as client:
    def dmap(fn, jobs):
        return client.gather([client.submit(fn, *a, pure=False) for a in jobs])
    workers = list(client.run(os.getpid).values())
    me = os.getpid()
    # warm-up on 50 documents: imports and allocator pools in every process, then baselines
    os.makedirs(f"{work}/warm", exist_ok=True)
    pq.write_table(pq.read_table(files[0]).slice(0, 50), f"{work}/warm/scored.parquet")
    client.run(lambda: __import__("tasks.corpus.minhash"))
    for w in range(2):
        dmap(keys_job, [(f"{work}/warm/scored.parquet", w, f"{work}/warm/k{w}.parquet")])
    rule.decide([f"{work}/warm/k{w}.parquet" for w in range(2)], Path(f"{work}/warm/dec"), cfg,
                RuleContext(n_shards=2, work_dir=Path(f"{work}/warm"), map=dmap))
    time.sleep(1)
    base = {p: psutil.Process(p).memory_info().rss for p in [me, *workers]}
    exact = all([reset_peak(p) for p in [me, *workers]])
    th = threading.Thread(target=sample, args=([me, *workers],), daemon=True)
    th.start()
    t0 = time.perf_counter()
    key_files = [f"{work}/keys/part-{i:05d}.parquet" for i in range(len(files))]
    os.makedirs(f"{work}/keys", exist_ok=True)
    docs = sum(dmap(keys_job, [(f, i, k) for i, (f, k) in enumerate(zip(files, key_files))]))
    t1 = time.perf_counter()
    ctx = RuleContext(n_shards=len(files), work_dir=Path(work), map=dmap)
    stats = rule.decide(key_files, Path(f"{work}/dec"), cfg, ctx)
    t2 = time.perf_counter()
    stop.set()
    th.join()
    if exact:
        peak = {p: hwm(p) for p in [me, *workers]}
busiest = max(workers, key=lambda p: peak.get(p, 0))
mib = 2 ** 20
print(json.dumps({
    "docs": docs, "keys_s": t1 - t0, "decide_s": t2 - t1, "stats": stats,
    "driver_base": base[me] / mib, "driver_peak": peak[me] / mib,
    "worker_base": base[busiest] / mib, "worker_peak": peak[busiest] / mib,
    "key_mb": sum(os.path.getsize(k) for k in key_files) / mib, "exact": exact}))
'''

CHILD_INPROC = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, psutil, pyarrow as pa, pyarrow.parquet as pq
from tasks.filters import minhash
files = json.loads(sys.argv[2])

def run(tables):
    keys = pa.concat_tables(minhash.candidates(t, i) for i, t in enumerate(tables))
    cl = minhash.clusters(keys, threshold=minhash.Config().threshold)
    return len(keys), int(np.asarray(cl.column("dropped")).sum())

cols = [minhash.BANDS_COLUMN, minhash.SIG_COLUMN]
run([pq.read_table(files[0], columns=cols).slice(0, 50)])  # warm-up, as the rule's
base = psutil.Process().memory_info().rss
with open("/proc/self/clear_refs", "w") as fh:  # VmHWM (peak RSS) from here on
    fh.write("5")
t0 = time.perf_counter()
docs, dropped = run(pq.read_table(f, columns=cols) for f in files)
with open("/proc/self/status") as fh:  # not ru_maxrss: it keeps the forking parent's peak
    peak = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM"))
print(json.dumps({"docs": docs, "s": time.perf_counter() - t0, "dropped": dropped,
                  "base": base / 2 ** 20, "peak": peak / 2 ** 20}))
'''


def _shuffled(text: str, seed: int) -> str:
    words = text.split()
    np.random.default_rng(seed).shuffle(words)
    return " ".join(words)


def _variant(text: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = text.split(" ")
    words[int(rng.integers(len(words)))] = f"zq{int(rng.integers(10**9))}"
    return " ".join(words)


def blocks(n_base: int, scales: list[int]) -> dict[str, list[str]]:
    """The corpus in blocks: ``base`` (N real documents and N / 10 planted variants), and per
    extra copy c: ``shuf<c>`` (word-shuffled, no duplicates) and ``var<c>`` (one-word variants)."""
    real = base_docs(n_base)
    base = [real[i % len(real)] if i < len(real) else _shuffled(real[i % len(real)], 10**9 + i)
            for i in range(n_base)]
    out = {"base": base + [_variant(base[i], 10**6 + i) for i in range(0, n_base, 10)]}
    for c in range(1, max(scales)):
        out[f"shuf{c}"] = [_shuffled(t, c * 10**7 + i) for i, t in enumerate(base)]
        out[f"var{c}"] = [_variant(t, c * 10**7 + i) for i, t in enumerate(base)]
    return out


def score_blocks(parts: dict[str, list[str]], out: Path) -> dict[str, list[str]]:
    """Each block's shards, scored (only the rule's score columns kept)."""
    from tasks.corpus import minhash as rule
    from tasks.filters.minhash import Config

    cfg = Config()
    files: dict[str, list[str]] = {}
    for name, texts in parts.items():
        files[name] = []
        for s in range(0, len(texts), SHARD_DOCS):
            t = rule.score(pa.table({"text": pa.array(texts[s:s + SHARD_DOCS],
                                                      pa.large_string())}), cfg)
            path = out / f"{name}-{s // SHARD_DOCS:04d}.parquet"
            pq.write_table(t, path)
            files[name].append(str(path))
    return files


def _child(script: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", script, str(ROOT), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_minhash_rule_memory(tmp_path: Path, table: Callable[..., str]) -> None:
    n_base = int(os.environ.get("DATAMILL_BENCH_MINHASH_MEM_DOCS", "5000"))
    scales = [int(x) for x in os.environ.get("DATAMILL_BENCH_MINHASH_MEM_SCALES",
                                             "1,5,10").split(",")]
    t0 = time.perf_counter()
    parts = blocks(n_base, scales)
    (tmp_path / "scored").mkdir()
    files = score_blocks(parts, tmp_path / "scored")
    n_scored = sum(len(v) for v in parts.values())
    print(f"\nscored {n_scored:,} documents in {time.perf_counter() - t0:.0f}s "
          f"({n_base:,} base, {n_base // 10 + (n_base % 10 > 0):,} planted variants)")

    rows, first, exact = [], {}, True
    for series, block in (("fixed dups", "shuf"), ("dups x s", "var")):
        for s in scales:
            if s == 1 and series != "fixed dups":
                continue  # the same corpus as the other series at 1x
            shards = files["base"] + [f for c in range(1, s) for f in files[f"{block}{c}"]]
            work = tmp_path / f"{block}{s}"
            work.mkdir()
            r = _child(CHILD_RULE, json.dumps(shards), str(work))
            old = _child(CHILD_INPROC, json.dumps(shards))
            dropped = sum(r["stats"]["dropped"].values())
            exact &= r["exact"]
            assert dropped == old["dropped"]  # the same decisions as the in-process path
            m = {"driver": r["driver_peak"] - r["driver_base"],
                 "worker": r["worker_peak"] - r["worker_base"],
                 "inproc": old["peak"] - old["base"]}
            peaks = {"driver": r["driver_peak"], "worker": r["worker_peak"],
                     "inproc": old["peak"]}
            first = first or peaks
            rows.append([f"{series} {s}x", f"{r['docs']:,}", f"{dropped:,}",
                         f"{r['key_mb']:.0f}", f"{r['keys_s']:.1f}", f"{r['decide_s']:.1f}",
                         f"{r['driver_peak']:.0f} ({m['driver']:+.0f})",
                         f"{r['worker_peak']:.0f} ({m['worker']:+.0f})",
                         f"{old['peak']:.0f} ({m['inproc']:+.0f})",
                         " / ".join(f"{peaks[k] / first[k]:.2f}x"
                                    for k in ("driver", "worker", "inproc"))])
            print(f"  {series} {s}x: {r['docs']:,} docs, dropped {dropped:,}, driver "
                  f"{m['driver']:+.0f} MiB, worker {m['worker']:+.0f} MiB, in-process "
                  f"{m['inproc']:+.0f} MiB", flush=True)
    print()
    print(table(["corpus", "docs", "dropped", "keys MiB", "keys s", "decide s",
                 "driver peak MiB (over base)", "busiest worker MiB (over base)",
                 "in-process MiB (over base)", "peak vs 1x: driver / worker / in-process"],
                rows))
    print("peak RSS: " + ("VmHWM, reset after the warm-up" if exact else
                          "the rule's side sampled every 10 ms (VmHWM could not be reset)"))
