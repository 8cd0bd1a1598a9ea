"""Helpers the subcommands share. Only the standard library is imported here: every
subcommand module is imported to build the parser, so ``datamill --help`` stays fast."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_USAGE = 2
DATA_ROOT_HELP = "default: $DATAMILL_DATA_ROOT, else .datamill"


def fail(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"datamill: error: {msg}", file=sys.stderr)
    return code


def strict_json(obj: Any) -> Any:
    """``obj`` with every float that JSON cannot hold (NaN, +-inf: an SNR with one seed, the
    bpb of nothing) as None, recursively through dicts, lists and tuples; numpy scalars as
    the Python numbers they hold."""
    if type(obj).__module__ == "numpy" and getattr(obj, "shape", None) == ():
        obj = obj.item()  # a numpy scalar (numpy is not imported here: --help stays fast)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    """What every ``--json`` prints: strict JSON (RFC 8259), which jq and JavaScript read.
    Undefined numbers are null; dates, paths and other objects are their ``str``."""
    print(json.dumps(strict_json(obj), default=str, indent=2, allow_nan=False))


def catalog(data_root: str | None) -> Any:
    """The catalog as the CLI sees it: reads from the published snapshot (never blocking a
    running flow's writes), writes (compare's decisions, eval's scores) to the live file."""
    from infra.env import data_root as resolve
    from tasks.catalog import Catalog
    from tasks.remote import Mirror

    root = resolve(data_root)
    mirror = Mirror.of(root)
    if mirror is not None:  # a bucket-backed root: bring the local copy in step first
        mirror.pull()
    return Catalog(root / "catalog.duckdb", snapshot=True)


@contextmanager
def engines() -> Iterator[None]:
    """Whatever a flow started (a Dask cluster, Ray) is stopped when the command ends, so the
    process exits promptly even when the flow failed."""
    from infra import dask as dask_engine
    from infra import ray as ray_engine

    try:
        yield
    finally:
        dask_engine.shutdown()
        ray_engine.shutdown()


def print_stages(stages: list[dict[str, Any]]) -> None:
    print(f"{'stage':<10} {'version':<17} {'in':>8} {'kept':>8} {'rejected':>9} {'seconds':>8}")
    for s in stages:
        flag = " (cached)" if s.get("cached") else ""
        print(f"{s['stage']:<10} {s['version']:<17} {s['docs_in']:>8} {s['docs_kept']:>8} "
              f"{s['docs_rejected']:>9} {s['seconds']:>8.1f}{flag}")
