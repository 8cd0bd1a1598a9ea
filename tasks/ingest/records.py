"""Record mapping: raw records (dicts, pages) -> candidate rows of the document contract.

A reader fills `Batch`es through a `ReadContext`, which applies ``input.fields`` (contract
column -> the record's field name), gives records without an id a stable one, reads
``lang_score`` (a percentage -> a fraction; unreadable -> null, kept in ``meta``) and
``fetched_at`` (in UTC), and keeps every unmapped field in ``meta``. A record that cannot be
mapped, for whatever reason, is quarantined: one record never fails its file.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import xxhash

from tasks import extract as html_extract
from tasks.ingest.config import BATCH_CHARS, BATCH_DOCS, RAW_SNIPPET, SIDE_ROWS, opt
from tasks.ingest.ids import IdSet
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
    """A timestamp in UTC (a naive one is taken as UTC), or None when it cannot be read."""
    if v is None or v == "":
        return None
    try:
        t = v if isinstance(v, datetime) else \
            datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, OverflowError, TypeError):
        return None


def lang_score(v: Any) -> float | None:
    """A record's language score in [0, 1]: a number or a numeric string; a percentage
    (1 < x <= 100) is divided by 100; out of range, not finite or not a number (a bool, other
    text) is None (unreadable)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    if not 0.0 <= x <= 100.0:  # NaN too
        return None
    return x if x <= 1.0 else x / 100.0


def safe_text(s: str) -> str:
    """`s` storable as UTF-8: a file name's undecodable bytes (Python keeps them as lone
    surrogates) and other lone surrogates become backslash escapes (``caf\\xe9.jsonl``)."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


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
    out = json.dumps(d, ensure_ascii=False, default=str)
    # a lone surrogate cannot be stored: escaped, the JSON still reads back the same
    return _safe_json(out, d)


def _safe_json(out: str, d: Any) -> str:
    """`out` (``json.dumps(d, ensure_ascii=False)``), or `d` ASCII-escaped if `out` cannot
    be stored as UTF-8."""
    if out.isascii():
        return out
    try:
        out.encode("utf-8")
        return out
    except UnicodeEncodeError:
        return json.dumps(d, default=str)


def raw_record(rec: Any) -> str | None:
    """The first bytes of a bad record as JSON, for a person to look at (None if even that
    fails: a record nested too deep to serialise)."""
    try:
        return json.dumps(rec, default=str)[:RAW_SNIPPET]
    except (ValueError, TypeError, RecursionError):
        return None


def doc_table(cols: dict[str, list[Any]], text: pa.Array | None = None) -> pa.Table:
    """The contract table of column lists (`text`: the text column, already in Arrow)."""
    return pa.table({f.name: text if f.name == "text" and text is not None else
                     pa.array(cols[f.name], f.type) for f in DOC_SCHEMA}, schema=DOC_SCHEMA)


class ReadContext:
    """What a reader needs: labels, the field mapping, the config and the skip counter."""

    def __init__(self, path: Path, fields: dict[str, str], cfg: Any, source: str,
                 part: dict[str, Any] | None = None):
        self.f = {c: fields.get(c, c) for c in DOC_SCHEMA.names if c != "meta"}
        self.part = part  # a byte range of the input to read (tasks/ingest/ranges.py), or all
        # a record with only these fields, all strings (or null), is mapped without `_row`: no
        # meta, nothing to parse
        self.plain_fields = tuple(self.f[c] for c in ("id", "text", "source", "url", "lang"))
        self.plain_keys = frozenset(self.plain_fields)
        if {self.f["fetched_at"], self.f["lang_score"]} & self.plain_keys:  # parsed: never plain
            self.plain_keys = frozenset()
        self.label = safe_text(str(path))  # a file name need not be UTF-8
        self.source = safe_text(source)
        self.cfg = cfg
        self.skipped: Counter[str] = Counter()
        # hashes of the ids kept so far from this input: a repeated id is rejected, so ids
        # stay unique within it (across inputs: tasks/ingest/ids.py)
        self.kept_ids = IdSet()

    def pos_id(self, position: Any) -> str:
        return f"{self.source}-{xxhash.xxh64_hexdigest(f'{self.label}:{position}'.encode())}"

    def add_record(self, rec: dict[str, Any], position: int, batch: Batch,
                   offset: int | None = None) -> None:
        """Map an input record (dict) to a contract row; everything unmapped goes to `meta`.
        A record that cannot be mapped is quarantined, whatever the reason."""
        if rec.keys() <= self.plain_keys:  # the common case: contract fields only, appended
            k_id, k_text, k_source, k_url, k_lang = self.plain_fields
            rid, text, source, url, lang = (rec.get(k_id), rec.get(k_text), rec.get(k_source),
                                            rec.get(k_url), rec.get(k_lang))
            if type(text) is str and (rid is None or type(rid) is str) and \
                    (source is None or type(source) is str) and \
                    (url is None or type(url) is str) and (lang is None or type(lang) is str):
                c = batch.cols
                c["id"].append(rid if rid else self.pos_id(position))  # "" or None: no id
                c["text"].append(text)
                c["source"].append(source or self.source)
                c["url"].append(url)
                c["fetched_at"].append(None)
                c["lang"].append(lang if lang and not lang.isspace() else None)
                c["lang_score"].append(None)
                c["meta"].append(None)
                batch.pos.append(position)
                batch.chars += len(text)
                return
        try:
            row = self._row(rec, position)
        except Exception as e:  # noqa: BLE001 - one record's failure, never the file's
            row = f"record cannot be mapped: {type(e).__name__}: {str(e)[:300]}"
        if isinstance(row, str):
            batch.quarantine.append(qrow(self.label, position, offset, row, raw_record(rec)))
        else:
            batch.add(row, position)

    def _row(self, rec: dict[str, Any], position: int) -> dict[str, Any] | str:
        """The contract row of `rec`, or why there is none."""
        f = self.f
        text = rec.get(f["text"])
        if not isinstance(text, str):
            return f"record has no string field {f['text']!r}"
        rid = rec.get(f["id"])
        # stable id: the record's own, else a hash of where it came from
        rid = str(rid) if rid not in (None, "") else self.pos_id(position)
        used = set(f.values())
        meta = {k: v for k, v in rec.items() if k not in used}
        fetched = rec.get(f["fetched_at"])
        if fetched is not None and parse_time(fetched) is None:
            meta["fetched_at_unparsed"] = fetched
        score = rec.get(f["lang_score"])
        if score is not None and lang_score(score) is None:
            meta["lang_score_unparsed"] = score  # kept for a person; the column is null
        lang = rec.get(f["lang"])
        return {
            "id": rid,
            "text": text,
            "source": str(rec.get(f["source"]) or self.source),
            "url": None if rec.get(f["url"]) is None else str(rec.get(f["url"])),
            "fetched_at": parse_time(fetched),
            # mapped to the contract's form (or rejected) by the policy, which knows lang_id
            "lang": None if lang is None or (isinstance(lang, str) and not lang.strip())
            else str(lang),
            "lang_score": lang_score(score),
            "meta": meta_json(meta),
        }

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
