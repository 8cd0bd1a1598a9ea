"""Helpers of the end-to-end benchmark (test_bench_end_to_end.py): datatrove's side in its own
venv with every process's CPU time sampled, the shared JSONL input, the physical limit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from test_bench_filters import datatrove_python

FILES = 2  # input files: one per worker on each side
WORKERS = 2
SAMPLE_S = 0.05  # how often datatrove's processes' CPU times are read
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


def run_tree(cmd: list[str], env: dict[str, str], timeout: float = 3600) -> tuple[int, str, float]:
    """Run ``cmd``; (exit code, stderr, CPU seconds of it and every process under it).

    datatrove's workers are children of a forkserver that nobody waits for, so the rusage of
    ended children misses them: every process of the tree is sampled instead (``SAMPLE_S``),
    its last reading kept (each loses at most ``SAMPLE_S`` of CPU)."""
    import psutil

    last: dict[tuple[int, float], float] = {}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        # stderr is read on a thread: a chatty child must not block on a full pipe
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        reader.start()
        top, t0 = psutil.Process(proc.pid), time.monotonic()
        while proc.poll() is None:
            try:
                tree = [top, *top.children(recursive=True)]
            except psutil.Error:
                tree = []
            for p in tree:
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        last[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    pass
            if time.monotonic() - t0 > timeout:
                proc.kill()
            time.sleep(SAMPLE_S)
        reader.join()
    return proc.returncode, "".join(err), sum(last.values())


def run_datatrove(mode: str, inp: Path, work: Path) -> dict[str, Any]:
    script = work / "dt_e2e.py"
    work.mkdir(parents=True, exist_ok=True)
    script.write_text(DATATROVE_SCRIPT, encoding="utf-8")
    env = {**os.environ, "LOGURU_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    code, err, cpu = run_tree([str(datatrove_python()), str(script), mode, str(inp), str(work),
                               str(work / "dt.json"), str(FILES), str(WORKERS)], env)
    wall = time.perf_counter() - t0
    assert code == 0, err[-4000:]
    out = json.loads((work / "dt.json").read_text(encoding="utf-8"))
    out["process_s"] = wall
    out["cpu_s"] = cpu  # the subprocess and its worker processes
    return out


def physical_limit(files: list[Path], tmp: Path) -> float:
    """CPU seconds of pyarrow's JSON reader and a zstd Parquet write of ``files``, in this
    process, best of 3: what reading and storing the bytes costs at the least."""
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    best = float("inf")
    for _ in range(3):
        c0 = time.process_time()
        for f in files:
            pq.write_table(pj.read_json(f), tmp / "limit.parquet", compression="zstd")
        best = min(best, time.process_time() - c0)
    return best
