"""Record mapping: raw records (dicts, pages) -> candidate rows of the document contract.

A reader fills `Batch`es through a `ReadContext`, which applies ``input.fields`` (contract
column -> the record's field name), gives records without an id a stable one, and keeps every
unmapped field in ``meta``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import xxhash

from tasks import extract as html_extract
from tasks.ingest.config import BATCH_CHARS, BATCH_DOCS, RAW_SNIPPET, SIDE_ROWS, opt
from tasks.schema import DOC_SCHEMA


@dataclass
class Batch:
    """Candidate documents (column lists + their positions), plus what was already rejected or
    quarantined while reading."""

    cols: dict[str, list[Any]] = field(default_factory=lambda: {n: [] for n in DOC_SCHEMA.names})
    pos: list[int | None] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    chars: int = 0

    def __len__(self) -> int:
        return len(self.cols["id"])

    def add(self, row: dict[str, Any], position: int | None) -> None:
        for k, v in row.items():
            self.cols[k].append(v)
        self.pos.append(position)
        self.chars += len(row["text"])

    def full(self) -> bool:
        return len(self) >= BATCH_DOCS or self.chars >= BATCH_CHARS or \
            len(self.quarantine) + len(self.rejected) >= SIDE_ROWS


def parse_time(v: Any) -> datetime | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None


def qrow(file: str, position: int | None, offset: int | None, error: str,
         raw: str | None) -> dict:
    """A quarantine row (QUARANTINE_SCHEMA)."""
    return {"file": file, "position": position, "offset": offset, "error": error, "raw": raw}


def snip(data: bytes) -> str:
    return data[:RAW_SNIPPET].decode("utf-8", errors="replace")


def meta_json(d: dict[str, Any]) -> str | None:
    if not d:
        return None
    d = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes | bytearray) else v)
         for k, v in d.items()}
    return json.dumps(d, ensure_ascii=False, default=str)


def doc_table(cols: dict[str, list[Any]]) -> pa.Table:
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in DOC_SCHEMA}, schema=DOC_SCHEMA)


class ReadContext:
    """What a reader needs: labels, the field mapping, the config and the skip counter."""

    def __init__(self, path: Path, fields: dict[str, str], cfg: Any, source: str):
        self.f = {c: fields.get(c, c) for c in DOC_SCHEMA.names if c != "meta"}
        self.label = str(path)
        self.source = source
        self.cfg = cfg
        self.skipped: Counter[str] = Counter()
        # ids kept so far from this input: a repeated id is rejected, so ids stay unique (the
        # documents contract); 8-byte hashes keep the set small
        self.kept_ids: set[int] = set()

    def pos_id(self, position: Any) -> str:
        return f"{self.source}-{xxhash.xxh64_hexdigest(f'{self.label}:{position}'.encode())}"

    def add_record(self, rec: dict[str, Any], position: int, batch: Batch) -> None:
        """Map an input record (dict) to a contract row; everything unmapped goes to `meta`."""
        f = self.f
        text = rec.get(f["text"])
        if not isinstance(text, str):
            batch.quarantine.append(
                qrow(self.label, position, None, f"record has no string field {f['text']!r}",
                     json.dumps(rec, default=str)[:RAW_SNIPPET]))
            return
        rid = rec.get(f["id"])
        # stable id: the record's own, else a hash of where it came from
        rid = str(rid) if rid not in (None, "") else self.pos_id(position)
        used = set(f.values())
        meta = {k: v for k, v in rec.items() if k not in used}
        fetched = rec.get(f["fetched_at"])
        if fetched is not None and parse_time(fetched) is None:
            meta["fetched_at_unparsed"] = fetched
        lang_score = rec.get(f["lang_score"])
        batch.add({
            "id": rid,
            "text": text,
            "source": str(rec.get(f["source"]) or self.source),
            "url": None if rec.get(f["url"]) is None else str(rec.get(f["url"])),
            "fetched_at": parse_time(fetched),
            "lang": None if rec.get(f["lang"]) in (None, "") else str(rec.get(f["lang"])),
            "lang_score": float(lang_score) if isinstance(lang_score, int | float) else None,
            "meta": meta_json(meta),
        }, position)

    def add_html(self, html: str | bytes, content_type: str | None, row: dict[str, Any],
                 position: int, batch: Batch) -> None:
        """Extract a page's text into `row` and add it, or reject it with the guard's reason."""
        cfg = self.cfg
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        if isinstance(html, bytes):
            cap = opt(cfg, "max_html_bytes")
            meta["html_bytes"] = len(html) if len(html) <= cap else f">{cap}"  # read capped
            if len(html) > cap:
                html_str = None
            else:
                html_str = html_extract.decode_html(html, content_type)
        else:
            html_str = html
        if html_str is None:
            res = html_extract.Result(None, "ingest.html_too_large")
        else:
            res = html_extract.extract_checked(
                html_str, opt(cfg, "extractor"), opt(cfg, "max_html_bytes"),
                opt(cfg, "max_html_depth"))
        if res.error:
            meta["extract_error"] = res.error
        row = {**row, "text": res.text or "", "meta": meta_json(meta)}
        if res.reason and res.reason != "ingest.empty_text":
            batch.rejected.append((row, res.reason))
        else:  # empty text is rejected after normalisation, with every other empty document
            batch.add(row, position)
