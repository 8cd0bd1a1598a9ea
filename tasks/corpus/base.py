"""What a corpus rule is: a decision that needs every shard (dedup, top k %, quantiles).

A document rule (``tasks/filters/``) decides one row from that row's scores. A corpus rule
decides a row from values gathered across the whole corpus. It runs in three steps, each a
plain function, none in the flow process, none holding texts:

1. ``keys(scored, shard, rows, config, ctx)`` — on a worker, per shard: the small columns the
   rule needs for the rows still in play (``shard`` int32, ``row`` int64, then the rule's own
   keys: a hash, LSH band keys, a score). The runner writes each shard's keys to Parquet.
2. ``decide(key_files, out_dir, config, ctx)`` — in a Dask task (it may fan out further through
   ``ctx.map``): reads the key files (``read_keys``), writes ``out_dir/part-<shard>.parquet``
   for each shard with decisions — columns ``row`` (int64), ``rule`` (string; null = kept,
   annotated only) and any annotation columns the rule adds to every document it covers —
   and returns small statistics (counts) for the manifest.
3. The filter stage's per-shard decide step reads those decision files and applies them after
   the document rules, in recipe order: a row's reason is the first rule that dropped it.

A rule module declares ``NAME`` (the recipe key and the prefix of its rule names), ``Config``
(a ``CorpusRuleConfig``), ``VERSION`` (bump when its decisions change for the same input),
``COLUMNS`` (the scored columns ``keys`` reads; ``lang`` is always there), optional
``WHEN`` ("after" = only rows that passed the document rules, the default; "before" = every
row) and optional ``ANNOTATIONS`` (column name -> Arrow type added to every output row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

# How a corpus rule fans out: map(fn, [args, ...]) -> [fn(*args), ...], in Dask tasks.
Mapper = Callable[[Callable[..., Any], Sequence[tuple[Any, ...]]], list[Any]]

class CorpusRuleConfig(BaseModel):
    """Base of every corpus rule's Config: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid")

    def score_params(self) -> dict[str, Any]:
        """The fields (``Annotated[T, SCORED]``) that change the columns the rule computes
        once in the score step (a hash's normalisation, MinHash's permutations)."""
        from tasks.identity import identity

        return identity(self, "score")


def serial_map(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [fn(*a) for a in jobs]


@dataclass
class RuleContext:
    """What a corpus rule may know beyond its config: how many shards there are, where
    scratch files go, the persistent dedup index parts it must treat as seen before, and how
    to fan out work (``map``: Dask tasks under the runner, serial in a unit test)."""

    n_shards: int
    work_dir: Path
    index_parts: list[dict[str, Any]] = field(default_factory=list)
    map: Mapper = serial_map


class CorpusRule(Protocol):
    NAME: str
    VERSION: int
    Config: type[CorpusRuleConfig]
    COLUMNS: tuple[str, ...]

    def keys(self, scored: pa.Table, shard: int, rows: np.ndarray, config: Any,
             ctx: RuleContext) -> pa.Table: ...

    def decide(self, key_files: list[str], out_dir: Path, config: Any,
               ctx: RuleContext) -> dict[str, Any]: ...


def when(rule: Any, config: Any = None) -> Literal["before", "after"]:
    """Whether a rule ranks/decides among all rows ("before" the document rules) or only
    those that passed them ("after"): its config's ``when`` if it has one, else its WHEN."""
    return getattr(config, "when", None) or getattr(rule, "WHEN", "after")


def decision_path(out_dir: Path | str, shard: int) -> Path:
    return Path(out_dir) / f"part-{shard:05d}.parquet"


def split_by_shard(out_dir: Path, table: pa.Table, rule: str | None = None) -> dict[str, int]:
    """Write a (shard, row[, rule, annotations...]) table as per-shard decision files; with
    ``rule`` every row gets that rule name. Returns {rule: rows} counts."""
    import pyarrow.compute as pc

    from tasks.store import write_parquet

    if rule is not None:
        table = table.append_column("rule", pa.repeat(pa.scalar(rule, pa.string()), len(table)))
    if len(table) == 0:
        return {}
    shards = table.column("shard").to_numpy()
    for s in np.unique(shards):
        part = table.filter(pa.array(shards == s)).drop_columns(["shard"])
        write_parquet(part.take(pc.sort_indices(part, [("row", "ascending")])),
                      decision_path(out_dir, int(s)))
    counts = pc.value_counts(table.column("rule").combine_chunks()).to_pylist()
    return {c["values"]: int(c["counts"]) for c in counts if c["values"] is not None}


def read_keys(key_files: list[str], columns: list[str] | None = None) -> pa.Table | None:
    """Every shard's key file as one table (only ``columns``, if given); None when they hold
    no row, so a rule returns its empty statistics and writes no decision."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=columns) for f in key_files]
    return pa.concat_tables(tables) if sum(len(t) for t in tables) else None


def worker_map(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Fan out from inside a Dask task (the task secedes while it waits); serial elsewhere."""
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):
        return serial_map(fn, jobs)
    with worker_client() as client:
        return client.gather([client.submit(fn, *a, pure=False) for a in jobs])
