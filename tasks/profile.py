"""Where the time goes: each shard's wall time, CPU time and bytes read and written, measured
where the shard runs (a Dask worker, a Ray actor) and summed per stage.

Bytes are the process's ``rchar``/``wchar`` from ``/proc/self/io``: everything read and written
through system calls while the shard ran — its files, plus the worker's small socket traffic
meanwhile. CPU is the process's CPU time (user + system, all threads: Arrow decodes on its own
threads). Where ``/proc`` is missing the byte counts are null.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_IO = Path("/proc/self/io")


def io_counters() -> tuple[int, int] | None:
    """(bytes read, bytes written) by this process so far, or None without /proc."""
    try:
        fields = dict(line.split(": ") for line in _IO.read_text().splitlines())
        return int(fields["rchar"]), int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None


def measured(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, Any]]:
    """``fn(*args)`` and its profile: wall_s, cpu_s, read_bytes, write_bytes."""
    io0, c0, t0 = io_counters(), time.process_time(), time.perf_counter()
    out = fn(*args)
    wall, cpu, io1 = time.perf_counter() - t0, time.process_time() - c0, io_counters()
    read = write = None
    if io0 is not None and io1 is not None:
        read, write = io1[0] - io0[0], io1[1] - io0[1]
    return out, {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "read_bytes": read,
                 "write_bytes": write}


def summarize(profiles: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """A stage's totals over its shards' profiles (shards without one are not counted)."""
    ps = [p for p in profiles if p]
    out: dict[str, Any] = {"shards": len(ps)}
    for k in ("wall_s", "cpu_s"):
        out[k] = round(sum(p[k] for p in ps), 4)
    for k in ("read_bytes", "write_bytes"):
        vals = [p.get(k) for p in ps]
        out[k] = sum(vals) if vals and None not in vals else None
    return out


def profile_rows(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage step that ran shards, from the catalog's stage rows (their manifests):
    shards, wall seconds summed over shards, CPU seconds, MB read and written, and the input
    rate (MB read per wall second of shard work). Cached stages show the run that made them."""
    rows = []
    for s in stages:
        try:
            m = json.loads((Path(s["output_path"]) / "manifest.json").read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for step, p in ((m.get("profile") or {}).get("steps") or {}).items():
            mb_r = p["read_bytes"] / 1e6 if p.get("read_bytes") is not None else None
            mb_w = p["write_bytes"] / 1e6 if p.get("write_bytes") is not None else None
            rows.append({"stage": s["stage"], "step": step, "shards": p["shards"],
                         "wall_s": round(p["wall_s"], 2), "cpu_s": round(p["cpu_s"], 2),
                         "mb_read": None if mb_r is None else round(mb_r, 2),
                         "mb_written": None if mb_w is None else round(mb_w, 2),
                         "mb_per_s": round(mb_r / p["wall_s"], 2)
                         if mb_r is not None and p["wall_s"] > 0 else None,
                         "cached": bool(s.get("cached"))})
    return rows
