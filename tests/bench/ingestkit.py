"""Inputs and a timed child for the ingest benchmarks (``test_bench_ingest.py``,
``test_bench_ingest_scale.py``): the JSONL lines and HTML pages they read, ``ingest_file`` with
its accounting checked, and one ingest timed in a fresh interpreter."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.ingest import ingest_file
from tasks.recipe import IngestConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "sample.jsonl"
BENCH_JSONL = ROOT / "data" / "bench" / "jsonl"
BENCH_HTML = ROOT / "data" / "bench" / "html"
RUNS = 5  # throughput: the fastest of RUNS (other processes share the cores)


def records(scale: int) -> tuple[list[bytes], str]:
    """JSONL lines (with newline) for the throughput input, and a label of where from."""
    files = sorted(BENCH_JSONL.glob("*.jsonl.gz")) if BENCH_JSONL.is_dir() else []
    if files:
        budget = float(os.environ.get("DATAMILL_BENCH_MB", 3 * scale)) * 2**20
        per = budget / len(files)
        lines: list[bytes] = []
        for f in files:
            got = 0
            with gzip.open(f, "rb") as fh:
                for line in fh:
                    if got >= per:
                        break
                    lines.append(line)
                    got += len(line)
        return lines, f"data/bench/jsonl ({len(files)} sources, {budget / 2**20:.0f} MB)"
    lines = [ln if ln.endswith(b"\n") else ln + b"\n"
             for ln in SAMPLE.read_bytes().splitlines(keepends=True) if ln.strip()]
    return lines * scale, f"data/sample/sample.jsonl x{scale}"


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def pages(scale: int, tmp: Path) -> tuple[Path, list[Path], str]:
    """A folder of .html pages, and its files in order."""
    if BENCH_HTML.is_dir():
        by_source = [sorted(d.rglob("*.html")) for d in sorted(BENCH_HTML.iterdir())
                     if d.is_dir()]
        by_source = [s for s in by_source if s]
        if by_source:
            want = 60 * scale
            per = max(1, want // len(by_source))
            picked = [p for s in by_source for p in s[::max(1, len(s) // per)][:per]]
            folder = tmp / "pages"
            folder.mkdir()
            for j, p in enumerate(picked[:want]):
                (folder / f"{j:05d}.html").write_bytes(p.read_bytes())
            files = sorted(folder.glob("*.html"))
            return folder, files, f"data/bench/html ({len(files)} pages, {len(by_source)} sources)"
    folder = tmp / "pages"
    folder.mkdir()
    n = 0
    with open(SAMPLE, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if isinstance(rec.get("html"), str):
                (folder / f"{n:05d}.html").write_text(rec["html"], encoding="utf-8")
                n += 1
    return folder, sorted(folder.glob("*.html")), f"data/sample/sample.jsonl html fields ({n})"


def ingest(path: Path, key: str, out: Path, fmt: str, cfg: IngestConfig) -> dict[str, Any]:
    stats = ingest_file(str(path), key, str(out), fmt, {}, cfg)
    assert stats["docs_in"] == stats["docs_kept"] + stats["docs_rejected"]
    return stats


_TIMED_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from tasks.ingest import ingest_file
from tasks.recipe import IngestConfig
src, warm, out, reps = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ingest_file(warm, "warm", out + "-warm", "jsonl", {}, IngestConfig())
best = None
for rep in range(reps):
    t0, c0 = time.perf_counter(), time.process_time()
    st = ingest_file(src, f"r{rep}", f"{out}-{rep}", "jsonl", {}, IngestConfig())
    got = {"s": time.perf_counter() - t0, "cpu": time.process_time() - c0,
           "docs": st["docs_in"], "kept": st["docs_kept"]}
    best = got if best is None or got["cpu"] < best["cpu"] else best
print(json.dumps(best))
"""


def timed(tree: Path, src: Path, tmp: Path, tag: str) -> dict[str, Any]:
    """ingest_file from the `tasks/` of `tree`, in a fresh interpreter (one thread for Arrow,
    as a single-threaded Dask worker would run it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _TIMED_CHILD, str(tree), str(src),
                           str(tmp / "warm.jsonl"), str(tmp / f"out-{tag}"), str(RUNS)],
                          cwd=tree, capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])
