"""On-demand benchmarks: skipped unless asked for, so ``make test`` (``pytest tests``) stays fast.

They run when ``DATAMILL_BENCH=1`` is set or when this directory (or a file in it) is named on
the command line, as ``make bench`` does (``pytest -q tests/bench -s``).

Knobs (environment variables):

- ``DATAMILL_BENCH_SCALE`` (default 3): corpus repeats for the filter benchmark and a multiplier
  on the training steps. The default keeps each benchmark under ~3 minutes on 2 shared cores.

Benchmarks print tables and ratios against a baseline measured in the same run; they never
assert on timings (only on correctness, e.g. that decisions were produced for every document).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parents[1]


def _named_on_command_line(config: pytest.Config) -> bool:
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == BENCH_DIR or BENCH_DIR in path.parents:
            return True
    return False


def bench_enabled(config: pytest.Config) -> bool:
    return os.environ.get("DATAMILL_BENCH") == "1" or _named_on_command_line(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if bench_enabled(config):
        return
    skip = pytest.mark.skip(reason="benchmark: run `make bench` or set DATAMILL_BENCH=1")
    for item in items:
        if BENCH_DIR in Path(item.path).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bench_scale() -> int:
    return max(1, int(os.environ.get("DATAMILL_BENCH_SCALE", "3")))


@pytest.fixture(scope="session")
def bench_out() -> Path:
    """Where benchmarks leave files for a person to inspect (git-ignored)."""
    out = ROOT / ".datamill" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    return out


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


@pytest.fixture(scope="session")
def table() -> Callable[[Sequence[str], Sequence[Sequence[object]]], str]:
    return format_table
