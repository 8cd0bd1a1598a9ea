"""Data contracts: great-expectations (GX Core) suites over each stage's output, run as gates.

A suite per kind of output:

- **documents** (ingest / rewrite / filter / recycle kept shards): the contract columns exist
  with their types (DESIGN.md), ``id``, ``text`` and ``source`` are never null, ``id`` is unique
  across the stage's shards, the text length is within bounds, ``lang`` is a language code
  (ISO 639 with optional BCP-47 subtags: ``en``, ``pt-BR``, ``zh-cn``), ``lang_score`` and the
  filters' ``*_frac`` scores are in [0, 1] and every other numeric score is >= 0;
- **tokens** (the tokenize stage's packed ``train/*.npy`` shards): every token id is below the
  vocabulary size (checked on each row's largest id, so the offending count is in rows), and
  the row counts match ``meta.json``.

A check's *offending count* is GX's ``unexpected_count``; for a missing column or a wrong type,
every row of the batch. Shards are read one at a time and validated in batches of consecutive
shards of one schema, up to ``BATCH_ROWS`` rows (memory stays bounded; GX's cost is mostly per
call), and counts summed; uniqueness is checked on the ids of all shards together (in the one
call when one batch holds them all). GX answers in its BASIC result format: counts and a few
offending values, without its default's index list of offending rows (which filters the whole
frame again per expectation). GX is imported lazily (~3-4 s).
No Prefect here: the flow turns a failed report into a failed run (flows/contracts.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.schema import DOC_COLUMNS

LANG_REGEX = r"^[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$"
# the contract's types as GX names a pandas column's type (pandas 3 reads Arrow strings as
# `str`; timestamp[us, tz=UTC] as Timestamp; float32 stays float32)
TYPES: dict[str, str] = {
    "id": "str", "text": "str", "source": "str", "url": "str", "lang": "str", "meta": "str",
    "fetched_at": "Timestamp", "lang_score": "float32",
}
NOT_NULL = ["id", "text", "source"]
BATCH_ROWS = 250_000  # rows per GX validation call (see _batches)
BATCH_BYTES = 256 << 20
CONTRACT_SKIP = set(DOC_COLUMNS) | {"reject_stage", "reject_reason"}


class ContractError(ValueError):
    """A stage output broke its data contract; the message names expectations and counts."""

    def __init__(self, report: ContractReport):
        self.report = report
        super().__init__(report.message())


@dataclass
class Check:
    expectation: str  # GX expectation type, e.g. expect_column_values_to_be_unique
    column: str | None
    success: bool
    offending: int  # rows that break it (0 when it holds)
    observed: str | None = None  # GX's observed value or a sample of offending values


@dataclass
class ContractReport:
    stage: str
    suite: str
    rows: int = 0
    files: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.success for c in self.checks)

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if not c.success]

    def message(self) -> str:
        if self.ok:
            return f"{self.stage}: contract {self.suite!r} holds ({len(self.checks)} checks, " \
                   f"{self.rows} rows)"
        parts = [f"{c.expectation}({c.column or ''}): {c.offending} offending"
                 + (f" (e.g. {c.observed})" if c.observed else "") for c in self.violations]
        return f"{self.stage}: contract {self.suite!r} broken: " + "; ".join(parts)

    def rows_for_table(self) -> list[dict[str, Any]]:
        return [asdict(c) for c in self.checks]


@dataclass(frozen=True)
class Limits:
    min_text_chars: int = 1
    max_text_chars: int | None = None
    lang_regex: str = LANG_REGEX


class _GX:
    """One ephemeral GX context and a whole-dataframe batch definition, made once."""

    _inst: _GX | None = None

    def __init__(self) -> None:
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine as pee

        # GX fingerprints each in-memory batch under this size by hashing every cell (texts
        # too: 0.6 of 1.15 s validating 75 MB of ingested text); the fingerprint is a result
        # marker nothing here reads, and GX already skips it above the threshold
        pee.HASH_THRESHOLD = 0
        self.gx, self.gxe = gx, gxe
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.batch_def = (ctx.data_sources.add_pandas("datamill")
                          .add_dataframe_asset("frame")
                          .add_batch_definition_whole_dataframe("whole"))

    _lock = threading.Lock()

    @classmethod
    def get(cls) -> _GX:
        with cls._lock:
            if cls._inst is None:
                cls._inst = _GX()
            return cls._inst

    def validate(self, name: str, frame: Any, expectations: list[Any]) -> list[Check]:
        suite = self.gx.ExpectationSuite(name=name, expectations=expectations)
        res = self.batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
            suite, result_format="BASIC")
        out = []
        for r in res.results:
            cfg = r.expectation_config
            if r.exception_info and r.exception_info.get("raised_exception"):
                raise RuntimeError(f"GX {cfg.type}: {r.exception_info['exception_message']}")
            n = r.result.get("unexpected_count")
            obs = r.result.get("observed_value")
            if obs is None and r.result.get("partial_unexpected_list"):
                obs = r.result["partial_unexpected_list"][:3]
            if n is None:  # an aggregate expectation (type, row count): all rows or none
                n = 0 if r.success else len(frame)
            out.append(Check(cfg.type, cfg.kwargs.get("column"), bool(r.success), int(n),
                             None if obs is None else str(obs)[:200]))
        return out


def _merge(checks: list[Check]) -> list[Check]:
    """Sum one expectation's results over shards."""
    merged: dict[tuple[str, str | None], Check] = {}
    for c in checks:
        key = (c.expectation, c.column)
        if key not in merged:
            merged[key] = Check(c.expectation, c.column, c.success, c.offending, c.observed)
        else:
            m = merged[key]
            m.success = m.success and c.success
            m.offending += c.offending
            if not c.success and m.observed is None:
                m.observed = c.observed
    return list(merged.values())


def _score_columns(schema: pa.Schema) -> list[tuple[str, float, float | None]]:
    """(column, min, max) for the filters' numeric score columns: counts and ratios, never
    negative. A selector's ``*_score`` column (a log-ratio, a loss difference) may be any
    number, so it is not bounded here."""
    out = []
    for f in schema:
        if f.name in CONTRACT_SKIP or f.name.endswith("_score") or not (
                pa.types.is_integer(f.type) or pa.types.is_floating(f.type)):
            continue
        out.append((f.name, 0.0, 1.0 if f.name.endswith("_frac") else None))
    return out


def document_expectations(schema: pa.Schema, limits: Limits) -> list[Any]:
    gxe = _GX.get().gxe
    ex: list[Any] = [gxe.ExpectColumnToExist(column=c) for c in DOC_COLUMNS]
    present = set(schema.names)
    for col, type_ in TYPES.items():
        if col in present:
            ex.append(gxe.ExpectColumnValuesToBeOfType(column=col, type_=type_))
    ex += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in NOT_NULL if c in present]
    if "text" in present:
        ex.append(gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=limits.min_text_chars, max_value=limits.max_text_chars))
    if "lang" in present:
        ex.append(gxe.ExpectColumnValuesToMatchRegex(column="lang", regex=limits.lang_regex))
    if "lang_score" in present:
        ex.append(gxe.ExpectColumnValuesToBeBetween(column="lang_score", min_value=0,
                                                    max_value=1))
    for col, lo, hi in _score_columns(schema):
        ex.append(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi))
    return ex


def _frame(table: pa.Table) -> Any:
    # binary columns (hashes, MinHash signatures) are no contract's business and slow to convert
    keep = [f.name for f in table.schema if not (pa.types.is_binary(f.type)
            or pa.types.is_fixed_size_binary(f.type) or pa.types.is_large_binary(f.type)
            or pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type))]
    table = table.select(keep)
    # GX checks a range with vectorised numpy only on int64 / float64 columns, else one Python
    # call per value: widen the score columns (no type expectation; the values stay exact)
    return table.cast(pa.schema([_wide(f) for f in table.schema])).to_pandas()


def _wide(f: pa.Field) -> pa.Field:
    if f.name in TYPES:
        return f
    if pa.types.is_integer(f.type):
        return f.with_type(pa.int64())
    return f.with_type(pa.float64()) if pa.types.is_floating(f.type) else f


def _batches(files: list[Path]) -> Iterator[pa.Table]:
    """The shards read one at a time and handed on in batches: consecutive shards of one schema
    (so a column one shard lacks is not filled in from another), up to ``BATCH_ROWS`` rows and
    ``BATCH_BYTES`` in memory. GX's cost is mostly per validation call and expectation, not per
    row, so a run of many small shards is checked in a few calls; memory stays bounded."""
    held: list[pa.Table] = []
    rows = size = 0
    for path in files:
        table = pq.read_table(path)
        if held and (table.schema != held[0].schema or rows + table.num_rows > BATCH_ROWS
                     or size + table.nbytes > BATCH_BYTES):
            yield pa.concat_tables(held)
            held, rows, size = [], 0, 0
        held.append(table)
        rows, size = rows + table.num_rows, size + table.nbytes
    if held:
        yield pa.concat_tables(held)


def check_documents(stage: str, files: list[Path], limits: Limits | None = None
                    ) -> ContractReport:
    """Validate a stage's kept document shards (Parquet) against the documents suite."""
    limits = limits or Limits()
    report = ContractReport(stage, "documents", files=len(files))
    if not files:  # nothing kept (e.g. a refresh with no new input): no GX import
        return report
    gx = _GX.get()
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    checks: list[Check] = []
    ids = []
    for table in _batches(files):
        expectations = document_expectations(table.schema, limits)
        whole = table.num_rows == total  # every shard in this batch: uniqueness in one call
        if whole and "id" in table.column_names:
            expectations.append(gx.gxe.ExpectColumnValuesToBeUnique(column="id"))
        elif "id" in table.column_names:
            ids.append(table.column("id").combine_chunks().cast(pa.string()))
        report.rows += table.num_rows
        checks += gx.validate(f"{stage}-documents", _frame(table), expectations)
    if ids:
        import pandas as pd

        frame = pd.DataFrame({"id": pa.chunked_array(ids).to_pandas()})
        checks += gx.validate(f"{stage}-ids", frame,
                              [gx.gxe.ExpectColumnValuesToBeUnique(column="id")])
    report.checks = _merge(checks)
    return report


def check_tokens(data_dir: Path) -> ContractReport:
    """Validate the tokenize stage's packed shards: ids < vocab_size, rows as indexed."""
    import pandas as pd

    gx = _GX.get()
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    vocab = int(meta["vocab_size"])
    report = ContractReport("tokenize", "tokens", files=len(meta["train_shards"]))
    checks: list[Check] = []
    for shard in meta["train_shards"]:
        rows = np.load(Path(data_dir) / shard["path"], mmap_mode="r", allow_pickle=False)
        report.rows += len(rows)
        frame = pd.DataFrame({
            "max_token_id": rows.max(axis=1).astype(np.int64) if len(rows) else
            np.zeros(0, np.int64),
            "seq_len": np.full(len(rows), rows.shape[1] if rows.ndim == 2 else -1, np.int64)})
        checks += gx.validate("tokens", frame, [
            gx.gxe.ExpectColumnValuesToBeBetween(column="max_token_id", min_value=0,
                                                 max_value=vocab - 1),
            gx.gxe.ExpectColumnValuesToBeInSet(column="seq_len", value_set=[meta["seq_len"]]),
            gx.gxe.ExpectTableRowCountToEqual(value=int(shard["n_seq"])),
        ])
    report.checks = _merge(checks)
    return report
