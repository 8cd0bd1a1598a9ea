"""Ingest: raw files -> the document table, sharded to Parquet.

One input file is one unit of work (a Dask task). Records stream in batches, so memory is
bounded by the batch and shard size, never by the file. Unreadable records (bad JSON, bad UTF-8,
a truncated gzip stream, a Parquet file without the text column) go to ``quarantine/`` with the
file, position and error, and are counted: nothing is dropped silently.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from tasks.schema import DOC_SCHEMA, QUARANTINE_SCHEMA, with_reject
from tasks.store import write_parquet

BATCH_DOCS = 2_000
RAW_SNIPPET = 500  # bytes of a bad record kept in quarantine for a person to look at


class InputError(ValueError):
    """The input names nothing readable (missing path, empty glob)."""


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Expand globs in order; each pattern must match at least one file."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise InputError(f"input glob matched no files: {pattern!r}")
        files.extend(Path(m) for m in matches)
    seen: set[Path] = set()
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


def fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    raise InputError(f"cannot tell the format of {path} (set input.format)")


@dataclass
class _Batch:
    """Column lists for one batch of documents, plus what was quarantined or rejected."""

    cols: dict[str, list[Any]] = field(default_factory=lambda: {n: [] for n in DOC_SCHEMA.names})
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cols["id"])


def _parse_time(v: Any) -> datetime | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None


class _Mapper:
    """Maps an input record (dict) to a contract row; everything unmapped goes to `meta`."""

    def __init__(self, fields: dict[str, str], file_label: str, default_source: str, cfg: Any):
        self.f = {c: fields.get(c, c) for c in DOC_SCHEMA.names if c != "meta"}
        self.file_label = file_label
        self.default_source = default_source
        self.cfg = cfg

    def add(self, rec: dict[str, Any], position: int, batch: _Batch) -> None:
        f = self.f
        text = rec.get(f["text"])
        if not isinstance(text, str):
            batch.quarantine.append(
                _q(self.file_label, position, None, f"record has no string field {f['text']!r}",
                   json.dumps(rec, default=str)[:RAW_SNIPPET])
            )
            return
        rid = rec.get(f["id"])
        # stable id: the record's own, else a hash of where it came from
        rid = str(rid) if rid not in (None, "") else (
            f"{self.default_source}-{xxhash.xxh64_hexdigest(f'{self.file_label}:{position}'.encode())}"
        )
        used = {v for v in f.values()}
        meta = {k: v for k, v in rec.items() if k not in used}
        fetched = rec.get(f["fetched_at"])
        if fetched is not None and _parse_time(fetched) is None:
            meta["fetched_at_unparsed"] = fetched
        lang_score = rec.get(f["lang_score"])
        row = {
            "id": rid,
            "text": text,
            "source": str(rec.get(f["source"]) or self.default_source),
            "url": None if rec.get(f["url"]) is None else str(rec.get(f["url"])),
            "fetched_at": _parse_time(fetched),
            "lang": None if rec.get(f["lang"]) is None else str(rec.get(f["lang"])),
            "lang_score": float(lang_score) if isinstance(lang_score, int | float) else None,
            "meta": json.dumps(meta, ensure_ascii=False, default=str) if meta else None,
        }
        if len(text) > self.cfg.max_doc_chars:
            batch.rejected.append((row, "ingest.too_long"))
        elif len(text.strip()) < self.cfg.min_doc_chars:
            batch.rejected.append((row, "ingest.empty_text"))
        else:
            for k, v in row.items():
                batch.cols[k].append(v)


def _q(file: str, position: int | None, offset: int | None, error: str, raw: str | None) -> dict:
    return {"file": file, "position": position, "offset": offset, "error": error, "raw": raw}


def _read_jsonl(path: Path, mapper: _Mapper) -> Iterator[_Batch]:
    opener = gzip.open if path.name.endswith(".gz") else open
    batch = _Batch()
    offset = 0
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for line in fh:
                lineno += 1
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as e:
                    batch.quarantine.append(_q(mapper.file_label, lineno, start,
                                               f"invalid UTF-8: {e}", _snip(line)))
                    continue
                except json.JSONDecodeError as e:
                    batch.quarantine.append(_q(mapper.file_label, lineno, start,
                                               f"invalid JSON: {e}", _snip(line)))
                    continue
                if not isinstance(rec, dict):
                    batch.quarantine.append(_q(mapper.file_label, lineno, start,
                                               "JSON line is not an object", _snip(line)))
                    continue
                mapper.add(rec, lineno, batch)
                if len(batch) >= BATCH_DOCS:
                    yield batch
                    batch = _Batch()
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        # a truncated or corrupt stream: keep what was read, quarantine the rest of the file
        batch.quarantine.append(_q(mapper.file_label, lineno + 1, offset,
                                   f"unreadable stream after this offset: {type(e).__name__}: {e}",
                                   None))
    yield batch


def _snip(line: bytes) -> str:
    return line[:RAW_SNIPPET].decode("utf-8", errors="replace")


def _read_parquet(path: Path, mapper: _Mapper) -> Iterator[_Batch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        yield _Batch(quarantine=[_q(mapper.file_label, None, None,
                                    f"not a readable Parquet file: {e}", None)])
        return
    if mapper.f["text"] not in pf.schema_arrow.names:
        n = pf.metadata.num_rows
        err = (f"Parquet file has no text column {mapper.f['text']!r} "
               f"(columns: {pf.schema_arrow.names}); {n} rows quarantined")
        # one quarantine row per input row keeps docs_in == kept + rejected exact
        yield _Batch(quarantine=[_q(mapper.file_label, i, None, err, None) for i in range(n)])
        return
    position = 0
    for rb in pf.iter_batches(batch_size=BATCH_DOCS):
        batch = _Batch()
        for rec in rb.to_pylist():
            mapper.add(rec, position, batch)
            position += 1
        yield batch


def _doc_table(cols: dict[str, list[Any]]) -> pa.Table:
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in DOC_SCHEMA}, schema=DOC_SCHEMA)


def ingest_file(
    path: str,
    file_key: str,
    out_dir: str,
    fmt: str,
    fields: dict[str, str],
    cfg: Any,
) -> dict[str, Any]:
    """Read one input file into ``out_dir/{kept,rejected,quarantine}/part-<file_key>-*.parquet``.

    Returns the shard stats (counts, files written). Runs on a Dask worker or anywhere else.
    """
    p, out = Path(path), Path(out_dir)
    for sub in ("kept", "rejected", "quarantine"):  # a crashed earlier attempt: start clean
        for old in (out / sub).glob(f"part-{file_key}-*.parquet"):
            old.unlink()
    source = p.name.split(".")[0]
    mapper = _Mapper(fields, str(p), source, cfg)
    reader = _read_parquet if detect_format(p, fmt) == "parquet" else _read_jsonl

    kept_files: list[str] = []
    pending: list[pa.Table] = []
    pending_bytes = 0
    rejected_rows: list[tuple[dict[str, Any], str]] = []
    quarantine: list[dict[str, Any]] = []
    n_kept = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        t = pa.concat_tables(pending)
        avg = max(1, pending_bytes // max(len(t), 1))
        target = out / "kept" / f"part-{file_key}-{len(kept_files):04d}.parquet"
        write_parquet(t, target, row_group_rows=max(1, cfg.row_group_bytes // avg))
        kept_files.append(target.name)
        pending, pending_bytes = [], 0

    for batch in reader(p, mapper):
        quarantine.extend(batch.quarantine)
        rejected_rows.extend(batch.rejected)
        if not len(batch):
            continue
        t = _doc_table(batch.cols)
        n_kept += len(t)
        sizes = pc.binary_length(t.column("text").cast(pa.large_binary())).to_numpy()
        start = 0
        while start < len(t):  # cut the batch where the shard fills up
            room = cfg.shard_max_bytes - pending_bytes
            fill = np.cumsum(sizes[start:])
            take = max(1, int(np.searchsorted(fill, room, side="left")) + 1)
            take = min(take, len(t) - start)
            pending.append(t.slice(start, take))
            pending_bytes += int(fill[take - 1])
            start += take
            if pending_bytes >= cfg.shard_max_bytes:
                flush()
    flush()

    rejections: dict[str, dict[str, int]] = {}
    if rejected_rows:
        rows = {f.name: [r[f.name] for r, _ in rejected_rows] for f in DOC_SCHEMA}
        reasons = pa.array([why for _, why in rejected_rows], pa.string())
        write_parquet(with_reject(_doc_table(rows), "ingest", reasons),
                      out / "rejected" / f"part-{file_key}-0000.parquet")
        for _, why in rejected_rows:
            rejections.setdefault(why, {"first": 0, "alone": 0})
            rejections[why]["first"] += 1
            rejections[why]["alone"] += 1
    if quarantine:
        write_parquet(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA),
                      out / "quarantine" / f"part-{file_key}-0000.parquet")
        rejections["ingest.quarantine"] = {"first": len(quarantine), "alone": len(quarantine)}
    n_rej = len(rejected_rows) + len(quarantine)
    return {
        "file": str(p),
        "docs_in": n_kept + n_rej,
        "docs_kept": n_kept,
        "docs_rejected": n_rej,
        "quarantined": len(quarantine),
        "rejections": rejections,
        "kept": [f"kept/{f}" for f in kept_files],
    }
