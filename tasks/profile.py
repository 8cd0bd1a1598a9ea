"""Where the time goes: each shard's wall time, CPU time and bytes read and written, measured
where the shard runs (a Dask worker, a Ray actor) and summed per stage.

Bytes are the process's ``rchar``/``wchar`` from ``/proc/self/io``: everything read and written
through system calls while the shard ran — its files, plus the worker's small socket traffic
meanwhile. CPU is the process's CPU time (user + system, all threads: Arrow decodes on its own
threads). Where ``/proc`` is missing the byte counts are null.
"""

from __future__ import annotations

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
