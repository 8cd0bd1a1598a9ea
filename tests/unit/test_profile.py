"""Where the time goes: a shard's profile measures what it did."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.profile import io_counters, measured, summarize


def _write_then_read(path: Path, n: int) -> int:
    path.write_bytes(os.urandom(n))
    return len(path.read_bytes())


@pytest.mark.skipif(io_counters() is None, reason="no /proc/self/io")
def test_bytes_read_and_written_cover_the_files(tmp_path: Path) -> None:
    n = 3_000_000
    out, prof = measured(_write_then_read, tmp_path / "x.bin", n)
    assert out == n
    assert n <= prof["write_bytes"] < n + 1_000_000
    assert n <= prof["read_bytes"] < n + 1_000_000
    assert prof["wall_s"] >= prof["cpu_s"] * 0.5 > 0  # one thread: CPU about wall


def test_cpu_time_tracks_busy_work() -> None:
    _, prof = measured(lambda: sum(i * i for i in range(2_000_000)))
    assert prof["cpu_s"] > 0.01 and prof["wall_s"] > 0.01


def test_summarize_sums_and_keeps_unknown_bytes_unknown() -> None:
    a = {"wall_s": 1.0, "cpu_s": 0.5, "read_bytes": 10, "write_bytes": 4}
    b = {"wall_s": 2.0, "cpu_s": 1.5, "read_bytes": 5, "write_bytes": 1}
    assert summarize([a, b, None]) == {"shards": 2, "wall_s": 3.0, "cpu_s": 2.0,
                                       "read_bytes": 15, "write_bytes": 5}
    assert summarize([a, dict(b, read_bytes=None)])["read_bytes"] is None
    assert summarize([]) == {"shards": 0, "wall_s": 0, "cpu_s": 0, "read_bytes": None,
                             "write_bytes": None}
