"""``hf``: a ``datasets`` ``save_to_disk`` directory (``.arrow`` IPC stream files listed in
``state.json``, or Parquet files; a ``dataset_dict.json`` directory reads every split), or
one ``.arrow`` file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from tasks.ingest.readers.parquet import (
    Rows,
    missing_text,
    open_parquet,
    parquet_batches,
    table_batches,
)
from tasks.ingest.records import Batch, ReadContext, qrow


def _hf_files(d: Path) -> list[Path]:
    state = d / "state.json"
    if state.is_file():
        try:
            listed = [d / x["filename"] for x in json.loads(state.read_text())["_data_files"]]
            if listed:
                return listed
        except (ValueError, KeyError, TypeError):
            pass
    arrow = sorted(d.glob("*.arrow"))
    return arrow or sorted(p for p in d.rglob("*.parquet") if p.is_file())


def _arrow_reader(p: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Record batches of an Arrow IPC file, stream format (what `datasets` writes) or file
    format, memory-mapped."""
    try:
        r = pa.ipc.open_stream(pa.memory_map(str(p)))
        return r.schema, iter(r)
    except pa.ArrowInvalid:
        f = pa.ipc.open_file(pa.memory_map(str(p)))
        return f.schema, (f.get_batch(i) for i in range(f.num_record_batches))


def read_hf(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    if path.is_file():  # one .arrow file
        splits: list[tuple[str | None, list[Path]]] = [(None, [path])]
    elif (path / "dataset_dict.json").is_file():
        try:
            names = json.loads((path / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError, TypeError):
            names = sorted(p.name for p in path.iterdir() if p.is_dir())
        splits = [(s, _hf_files(path / s)) for s in names]
    else:
        splits = [(None, _hf_files(path))]
    position = 0
    for split, files in splits:
        extra = {"split": split} if split else None
        for p in files:
            if p.suffix == ".parquet":
                try:
                    pf = open_parquet(p)
                except Exception as e:  # noqa: BLE001 - its row count is unknown: one row
                    yield Batch(quarantine=[qrow(ctx.label, position, None,
                                                 f"{p.name}: not a readable Parquet file: "
                                                 f"{type(e).__name__}: {str(e)[:300]}", None)])
                    continue
                yield from parquet_batches(ctx, pf, position, p.name, extra)
                position += pf.metadata.num_rows
                continue
            try:
                schema, batches = _arrow_reader(p)
            except Exception as e:  # noqa: BLE001
                yield Batch(quarantine=[qrow(ctx.label, position, None,
                                             f"{p.name}: not a readable Arrow file: "
                                             f"{type(e).__name__}: {str(e)[:300]}", None)])
                continue
            src = Rows(batches)
            if ctx.f["text"] in schema.names:
                yield from table_batches(ctx, src, position, extra)
            else:
                n = sum(b.num_rows for b in src)
                yield from missing_text(ctx, schema.names, n, p.name, position)
            if src.error is not None:  # an IPC stream has no row count: one row for the rest
                yield Batch(quarantine=[qrow(ctx.label, position + src.rows, None,
                                             src.why(p.name), None)])
            position += src.rows
