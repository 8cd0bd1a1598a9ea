"""The document table contract (DESIGN.md "Data contracts").

Every stage reads and writes Arrow tables with at least these columns; stages add columns
and never rename or drop these. Rejected documents additionally carry `reject_stage` and
`reject_reason` (the name of the first rule that dropped them).
"""

from __future__ import annotations

import pyarrow as pa

DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC")),
        pa.field("lang", pa.string()),
        pa.field("lang_score", pa.float32()),
        pa.field("meta", pa.string()),  # JSON object of the input record's other fields
    ]
)
DOC_COLUMNS = DOC_SCHEMA.names

REJECT_FIELDS = [pa.field("reject_stage", pa.string()), pa.field("reject_reason", pa.string())]

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("position", pa.int64()),  # line number (JSONL) or row/record index
        pa.field("offset", pa.int64()),  # byte offset in the (decompressed) stream, if known
        pa.field("error", pa.string(), nullable=False),
        pa.field("raw", pa.large_string()),  # first bytes of the bad record, for a person
    ]
)


def empty_documents() -> pa.Table:
    return DOC_SCHEMA.empty_table()


def check_documents(table: pa.Table, where: str = "table") -> None:
    """Raise ValueError naming the column if `table` breaks the document contract."""
    for field in DOC_SCHEMA:
        if field.name not in table.column_names:
            raise ValueError(f"{where}: missing contract column {field.name!r}")
        got = table.schema.field(field.name).type
        if got != field.type:
            raise ValueError(f"{where}: column {field.name!r} is {got}, expected {field.type}")


def with_reject(table: pa.Table, stage: str, reasons: pa.Array) -> pa.Table:
    """Append reject_stage/reject_reason columns to rejected documents."""
    stage_col = pa.array([stage] * len(table), pa.string())
    return table.append_column(REJECT_FIELDS[0], stage_col).append_column(
        REJECT_FIELDS[1], reasons.cast(pa.string())
    )
