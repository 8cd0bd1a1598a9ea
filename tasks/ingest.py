"""Ingest: raw files -> the document table, sharded to Parquet.

One input (a file, or a folder of pages, or a Hugging Face dataset directory) is one unit of
work (a Dask task). Records stream in batches, so memory is bounded by the batch, the line cap
and the shard size, never by the file.

Formats (``input.format``, or ``auto``: by extension / folder contents):

- ``jsonl``: ``.jsonl``/``.json``/``.ndjson``, plain, gzip or zstd (by magic bytes). Lines are
  read with a size cap (``max_line_bytes``): a longer line is skipped in chunks, never held.
- ``parquet``: read by row batches.
- ``warc``: ``.warc``/``.warc.gz``; HTTP ``response`` records (2xx, HTML) -> extracted text,
  ``WARC-Target-URI`` -> url, ``WARC-Date`` -> fetched_at. Other records are skipped and
  counted in ``stats["skipped"]`` (they are not documents).
- ``wet``: ``.warc.wet.gz``/``.wet``; ``conversion`` records, text as is.
- ``html`` / ``text``: a folder of ``.html``/``.htm`` (extracted) and/or ``.txt`` files (as
  is), one document per file; id is a hash of the relative path, source the folder's name.
- ``hf``: a ``datasets`` ``save_to_disk`` directory (``.arrow`` IPC stream files listed in
  ``state.json``, or Parquet files; a ``dataset_dict.json`` directory reads every split).

Then, per batch: documents longer than ``max_doc_chars`` are rejected; the rest are normalised
(``tasks/normalize.py``), checked for emptiness, language-identified (``tasks/langid.py``) and
checked against ``min_lang_score`` and ``languages``. Unreadable records (bad JSON, bad UTF-8,
a truncated gzip/zstd stream, a broken WARC record, a Parquet/Arrow file without the text
column, an over-long line) go to ``quarantine/`` with the file, position and error, and are
counted: nothing is dropped silently, and ``docs_in == docs_kept + docs_rejected``.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import io
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
import zstandard

from tasks import extract as html_extract
from tasks import langid
from tasks.normalize import normalize_texts
from tasks.schema import DOC_SCHEMA, QUARANTINE_SCHEMA, with_reject
from tasks.store import file_sha256, write_parquet

BATCH_DOCS = 2_000
BATCH_CHARS = 2 * 2**20  # a batch also ends at this many characters: the batch, not the
# corpus, sets the memory (32 MB batches of long pages peaked at 1.8x the 4 MB input's RSS)
RAW_SNIPPET = 500  # bytes of a bad record kept in quarantine for a person to look at
SIDE_ROWS = 50_000  # rejected / quarantine rows held before a part is written
READ_CHUNK = 1 * 2**20

FORMATS = ("auto", "jsonl", "parquet", "warc", "wet", "html", "text", "hf")
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
HTML_EXTS = (".html", ".htm")
TEXT_EXTS = (".txt",)

# defaults of the recipe's ingest parameters (read with getattr so an IngestConfig without
# them still works)
DEFAULTS: dict[str, Any] = {
    "normalize": True,
    "lang_id": "missing",  # off | missing (records without a lang) | always
    "min_lang_score": 0.0,
    "languages": None,
    "extractor": "trafilatura",
    "max_html_bytes": html_extract.MAX_HTML_BYTES,
    "max_html_depth": html_extract.MAX_HTML_DEPTH,
    "max_line_bytes": 16 * 2**20,
}


def _opt(cfg: Any, name: str) -> Any:
    return getattr(cfg, name, DEFAULTS[name])


class InputError(ValueError):
    """The input names nothing readable (missing path, empty glob)."""


# ----------------------------------------------------------------------------- inputs
def _is_hf_dir(d: Path) -> bool:
    return any((d / m).is_file() for m in HF_MARKERS)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Expand globs in order; each pattern must match at least one input.

    An input is a file, or a directory that is a dataset: a Hugging Face ``save_to_disk``
    directory (matched by any pattern), or a folder of pages that a pattern names without
    wildcards. Files inside an input directory are not inputs of their own.
    """
    found: list[Path] = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        literal = not glob.has_magic(expanded)
        matches = sorted(glob.glob(expanded, recursive=True))
        picked = [Path(m) for m in matches if os.path.isfile(m) or (
            os.path.isdir(m) and (literal or _is_hf_dir(Path(m))))]
        if not picked:
            raise InputError(f"input glob matched no files: {pattern!r}")
        found.extend(picked)
    dirs = [f.resolve() for f in found if f.is_dir()]
    seen: set[Path] = set()
    out = []
    for f in found:
        r = f.resolve()
        if r in seen or any(d != r and d in r.parents for d in dirs):
            continue
        seen.add(r)
        out.append(f)
    return out


def fingerprint(path: Path) -> dict[str, Any]:
    """Path, size and mtime; for a directory, the total size of its files and the newest mtime
    of any entry (a renamed, added or removed file changes its directory's mtime)."""
    st = path.stat()
    if not path.is_dir():
        return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    size, mtime, n = 0, st.st_mtime_ns, 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for d in dirnames:
            mtime = max(mtime, os.stat(os.path.join(dirpath, d)).st_mtime_ns)
        for name in filenames:
            fst = os.stat(os.path.join(dirpath, name))
            size, mtime, n = size + fst.st_size, max(mtime, fst.st_mtime_ns), n + 1
    return {"path": str(path.resolve()), "size": size, "mtime_ns": mtime, "n_files": n}


def content_sha256(path: Path) -> str:
    """Content hash of an input: the file's SHA-256; for a directory, a SHA-256 over its files'
    relative paths and SHA-256s (hidden entries skipped, as the readers skip them)."""
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in _walk_files(path):
        h.update(f"{f.relative_to(path).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def detect_format(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; known: {list(FORMATS)}")
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf" if _is_hf_dir(path) else "files"
    name = path.name.lower()
    for comp in ("", ".gz", ".zst", ".zstd"):
        if name.endswith(tuple(e + comp for e in (".jsonl", ".json", ".ndjson"))):
            return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".wet", ".wet.gz")):
        return "wet"
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if name.endswith(".arrow"):
        return "hf"
    if name.endswith(HTML_EXTS):
        return "html"
    if name.endswith(TEXT_EXTS):
        return "text"
    raise InputError(f"cannot tell the format of {path} (set input.format)")


# ----------------------------------------------------------------------------- batches
@dataclass
class _Batch:
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


def _parse_time(v: Any) -> datetime | None:
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None


def _q(file: str, position: int | None, offset: int | None, error: str, raw: str | None) -> dict:
    return {"file": file, "position": position, "offset": offset, "error": error, "raw": raw}


def _snip(data: bytes) -> str:
    return data[:RAW_SNIPPET].decode("utf-8", errors="replace")


def _meta(d: dict[str, Any]) -> str | None:
    if not d:
        return None
    d = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes | bytearray) else v)
         for k, v in d.items()}
    return json.dumps(d, ensure_ascii=False, default=str)


class _Ctx:
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

    def add_record(self, rec: dict[str, Any], position: int, batch: _Batch) -> None:
        """Map an input record (dict) to a contract row; everything unmapped goes to `meta`."""
        f = self.f
        text = rec.get(f["text"])
        if not isinstance(text, str):
            batch.quarantine.append(
                _q(self.label, position, None, f"record has no string field {f['text']!r}",
                   json.dumps(rec, default=str)[:RAW_SNIPPET]))
            return
        rid = rec.get(f["id"])
        # stable id: the record's own, else a hash of where it came from
        rid = str(rid) if rid not in (None, "") else self.pos_id(position)
        used = set(f.values())
        meta = {k: v for k, v in rec.items() if k not in used}
        fetched = rec.get(f["fetched_at"])
        if fetched is not None and _parse_time(fetched) is None:
            meta["fetched_at_unparsed"] = fetched
        lang_score = rec.get(f["lang_score"])
        batch.add({
            "id": rid,
            "text": text,
            "source": str(rec.get(f["source"]) or self.source),
            "url": None if rec.get(f["url"]) is None else str(rec.get(f["url"])),
            "fetched_at": _parse_time(fetched),
            "lang": None if rec.get(f["lang"]) in (None, "") else str(rec.get(f["lang"])),
            "lang_score": float(lang_score) if isinstance(lang_score, int | float) else None,
            "meta": _meta(meta),
        }, position)

    def add_html(self, html: str | bytes, content_type: str | None, row: dict[str, Any],
                 position: int, batch: _Batch) -> None:
        """Extract a page's text into `row` and add it, or reject it with the guard's reason."""
        cfg = self.cfg
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        if isinstance(html, bytes):
            cap = _opt(cfg, "max_html_bytes")
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
                html_str, _opt(cfg, "extractor"), _opt(cfg, "max_html_bytes"),
                _opt(cfg, "max_html_depth"))
        if res.error:
            meta["extract_error"] = res.error
        row = {**row, "text": res.text or "", "meta": _meta(meta)}
        if res.reason and res.reason != "ingest.empty_text":
            batch.rejected.append((row, res.reason))
        else:  # empty text is rejected after normalisation, with every other empty document
            batch.add(row, position)


# ----------------------------------------------------------------------------- readers
class _ZstdRaw(io.RawIOBase):
    """A zstd stream as a raw file: reads across frames, and raises EOFError when the data
    ends inside a frame (python-zstandard's stream reader just stops there)."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self._dctx = zstandard.ZstdDecompressor()
        self._obj: Any = None
        self._leftover = b""
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _fill(self) -> bytes:
        while True:
            if self._obj is None:
                data, self._leftover = self._leftover or self._fh.read(64 * 1024), b""
                if not data:
                    return b""  # clean end, between frames
                self._obj = self._dctx.decompressobj()
            else:
                data = self._fh.read(64 * 1024)
                if not data:
                    raise EOFError("zstd stream ends inside a frame (truncated file)")
            out = self._obj.decompress(data)
            if self._obj.eof:
                self._leftover, self._obj = self._obj.unused_data, None
            if out:
                return out

    def readinto(self, b: Any) -> int:
        if not len(self._out):
            self._out = memoryview(self._fill())
            if not len(self._out):
                return 0
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open_stream(path: Path) -> BinaryIO:
    """Open plain, gzip or zstd by magic bytes (the extension may lie)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        return io.BufferedReader(_ZstdRaw(open(path, "rb")), buffer_size=READ_CHUNK)
    return open(path, "rb")


_STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError, zstandard.ZstdError)


def _read_jsonl(path: Path, ctx: _Ctx) -> Iterator[_Batch]:
    max_line = int(_opt(ctx.cfg, "max_line_bytes"))
    batch = _Batch()
    offset = 0
    lineno = 0
    try:
        with _open_stream(path) as fh:
            while True:
                line = fh.readline(max_line + 1)
                if not line:
                    break
                lineno += 1
                start, offset = offset, offset + len(line)
                if len(line) > max_line and not line.endswith(b"\n"):
                    head, total = _snip(line), len(line)
                    del line
                    lineno, offset = lineno - 1, start  # if the stream breaks in this line
                    while True:  # skip the rest of the line in chunks, never holding it
                        chunk = fh.readline(READ_CHUNK)
                        total += len(chunk)
                        if not chunk or chunk.endswith(b"\n"):
                            break
                    lineno, offset = lineno + 1, start + total
                    batch.quarantine.append(_q(
                        ctx.label, lineno, start,
                        f"line of {total} bytes is longer than max_line_bytes={max_line}: "
                        "not parsed (document too long)", head))
                    continue
                if lineno == 1 and line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8):]
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as e:
                    batch.quarantine.append(_q(ctx.label, lineno, start,
                                               f"invalid UTF-8: {e}", _snip(line)))
                    continue
                except json.JSONDecodeError as e:
                    batch.quarantine.append(_q(ctx.label, lineno, start,
                                               f"invalid JSON: {e}", _snip(line)))
                    continue
                if not isinstance(rec, dict):
                    batch.quarantine.append(_q(ctx.label, lineno, start,
                                               "JSON line is not an object", _snip(line)))
                    continue
                ctx.add_record(rec, lineno, batch)
                if batch.full():
                    yield batch
                    batch = _Batch()
    except _STREAM_ERRORS as e:
        # a truncated or corrupt stream: keep what was read, quarantine the rest of the file
        batch.quarantine.append(_q(ctx.label, lineno + 1, offset,
                                   f"unreadable stream after this offset: {type(e).__name__}: {e}",
                                   None))
    yield batch


def _missing_text(ctx: _Ctx, names: list[str], n: int, what: str) -> Iterator[_Batch]:
    """A table without the text column: every row is quarantined (one row each keeps
    docs_in == kept + rejected exact), in batches."""
    err = (f"{what} has no text column {ctx.f['text']!r} (columns: {names}); "
           f"{n} rows quarantined")
    for lo in range(0, n, SIDE_ROWS):
        yield _Batch(quarantine=[_q(ctx.label, i, None, err, None)
                                 for i in range(lo, min(n, lo + SIDE_ROWS))])


def _table_batches(ctx: _Ctx, batches: Iterator[pa.RecordBatch], start: int,
                   extra: dict[str, Any] | None = None) -> Iterator[_Batch]:
    position = start
    for rb in batches:
        for lo in range(0, rb.num_rows, BATCH_DOCS):
            batch = _Batch()
            for rec in rb.slice(lo, BATCH_DOCS).to_pylist():
                if extra:
                    rec = {**rec, **extra}
                ctx.add_record(rec, position, batch)
                position += 1
            yield batch


def _read_parquet(path: Path, ctx: _Ctx) -> Iterator[_Batch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        yield _Batch(quarantine=[_q(ctx.label, None, None,
                                    f"not a readable Parquet file: {e}", None)])
        return
    if ctx.f["text"] not in pf.schema_arrow.names:
        yield from _missing_text(ctx, pf.schema_arrow.names, pf.metadata.num_rows,
                                 "Parquet file")
        return
    yield from _table_batches(ctx, pf.iter_batches(batch_size=BATCH_DOCS), 0)


def _read_upto(stream: Any, n: int) -> bytes:
    """Up to n bytes (a stream's read(n) may return fewer before its end)."""
    parts, got = [], 0
    while got < n:
        b = stream.read(min(READ_CHUNK, n - got))
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _looks_html(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


class _Tracked:
    """A decompressed stream handed to warcio, which reads a truncated stream's EOFError as a
    clean end: remember the error (and report end of data) so the reader can say so."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.error: Exception | None = None

    def read(self, n: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:  # read1: what is decompressed before a truncation comes out before the error
            return self.fh.read1(n if n is not None and n > 0 else READ_CHUNK)
        except _STREAM_ERRORS as e:
            self.error = e
            return b""

    def readline(self, n: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self.fh.readline(n)
        except _STREAM_ERRORS as e:
            self.error = e
            return b""

    def tell(self) -> int:
        return self.fh.tell()

    def close(self) -> None:
        self.fh.close()


def _read_warc(path: Path, ctx: _Ctx, wet: bool = False) -> Iterator[_Batch]:
    """WARC/WET records. The file is decompressed here (gzip or zstd, by magic bytes) and warcio
    reads plain WARC, so offsets are in the decompressed stream, as for JSONL."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.limitreader import LimitReader

    cfg = ctx.cfg
    want = "conversion" if wet else "response"
    cap = int(_opt(cfg, "max_line_bytes") if wet else _opt(cfg, "max_html_bytes"))
    batch = _Batch()
    idx = -1
    try:
        raw = _open_stream(path)
    except OSError as e:
        yield _Batch(quarantine=[_q(ctx.label, None, None, f"unreadable file: {e}", None)])
        return
    with raw:
        fh = _Tracked(raw)
        it = ArchiveIterator(fh)
        records = iter(it)
        broke_inside = False
        while True:
            offset = getattr(it, "offset", None)
            try:
                rec = next(records)
            except StopIteration:
                break
            except Exception as e:  # warcio: ArchiveLoadFailed, EOFError, zlib/gzip errors
                offset = getattr(it, "offset", offset)
                batch.quarantine.append(_q(
                    ctx.label, idx + 1, offset,
                    f"unreadable WARC record {idx + 1} at offset {offset}; rest of the file "
                    f"not read: {type(e).__name__}: {str(e)[:300]}", None))
                break
            idx += 1
            offset = getattr(it, "offset", offset)
            if rec.rec_type is None or rec.rec_headers.get_header("Content-Length") is None:
                # warcio reads a mangled header leniently; without a type and a length the
                # record's end (and so every later record) is unknown
                batch.quarantine.append(_q(
                    ctx.label, idx, offset,
                    f"broken WARC record {idx} at offset {offset} (no WARC-Type or "
                    f"Content-Length); rest of the file not read", None))
                break
            if rec.rec_type != want:
                ctx.skipped[f"warc.{rec.rec_type}"] += 1
                continue
            h = rec.rec_headers
            rid = (h.get_header("WARC-Record-ID") or "").strip("<>") or ctx.pos_id(idx)
            meta: dict[str, Any] = {"warc_record_id": h.get_header("WARC-Record-ID")}
            content_type = None
            if wet:
                for k in ("WARC-Refers-To", "WARC-Identified-Content-Language"):
                    if h.get_header(k):
                        meta[k] = h.get_header(k)
            else:
                hh = rec.http_headers
                status = hh.get_statuscode() if hh is not None else None
                content_type = hh.get_header("Content-Type") if hh is not None else None
                if status is not None and not str(status).startswith("2"):
                    ctx.skipped["warc.http_status"] += 1
                    continue
                if content_type and "html" not in content_type.lower():
                    ctx.skipped["warc.non_html"] += 1
                    continue
                meta["http_status"] = status
                meta["content_type"] = content_type
            try:
                data = _read_upto(rec.content_stream(), cap + 1)
            except Exception as e:  # a body that fails to decode (chunking, content-encoding)
                batch.quarantine.append(_q(ctx.label, idx, offset,
                                           f"unreadable WARC record body: "
                                           f"{type(e).__name__}: {str(e)[:300]}", None))
                continue
            if fh.error is not None and isinstance(rec.raw_stream, LimitReader) and \
                    rec.raw_stream.limit > 0 and len(data) <= cap:
                broke_inside = True  # this record is incomplete: it goes with the rest, below
                break
            if not wet and not content_type and not _looks_html(data):
                ctx.skipped["warc.non_html"] += 1
                continue
            row = {"id": rid, "text": "", "source": ctx.source,
                   "url": h.get_header("WARC-Target-URI"),
                   "fetched_at": _parse_time(h.get_header("WARC-Date")),
                   "lang": None, "lang_score": None, "meta": _meta(meta)}
            if wet:
                if len(data) > cap:
                    batch.rejected.append((row, "ingest.too_long"))
                else:
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError as e:
                        batch.quarantine.append(_q(ctx.label, idx, offset,
                                                   f"invalid UTF-8: {e}", _snip(data)))
                        continue
                    batch.add({**row, "text": text}, idx)
            else:
                ctx.add_html(data, content_type, row, idx, batch)
            if batch.full():
                yield batch
                batch = _Batch()
        if fh.error is not None:
            if not broke_inside:  # warcio stopped at the next record's start
                idx, offset = idx + 1, getattr(it, "offset", None)
            batch.quarantine.append(_q(
                ctx.label, idx, offset,
                f"unreadable stream from WARC record {idx} at offset {offset} on: "
                f"{type(fh.error).__name__}: {fh.error}", None))
    yield batch


def _read_wet(path: Path, ctx: _Ctx) -> Iterator[_Batch]:
    return _read_warc(path, ctx, wet=True)


def _walk_files(root: Path) -> Iterator[Path]:
    """Files under root in a stable order (sorted at every level), hidden entries skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _read_files(path: Path, ctx: _Ctx, exts: tuple[str, ...]) -> Iterator[_Batch]:
    """A folder of pages (or one page): each .html/.htm/.txt file is one document."""
    cfg = ctx.cfg
    root = path if path.is_dir() else path.parent
    files = _walk_files(path) if path.is_dir() else iter([path])
    batch = _Batch()
    for i, f in enumerate(files):
        suffix = f.suffix.lower()
        if suffix not in exts:
            ctx.skipped[f"files.{suffix.lstrip('.') or 'no_extension'}"] += 1
            continue
        rel = f.relative_to(root).as_posix()
        row = {"id": f"{ctx.source}-{xxhash.xxh64_hexdigest(rel.encode())}", "text": "",
               "source": ctx.source, "url": None, "fetched_at": None, "lang": None,
               "lang_score": None, "meta": _meta({"path": rel})}
        try:
            size = f.stat().st_size
            cap = int(_opt(cfg, "max_html_bytes") if suffix in HTML_EXTS
                      else _opt(cfg, "max_line_bytes"))
            if size > cap:
                reason = "ingest.html_too_large" if suffix in HTML_EXTS else "ingest.too_long"
                meta = _meta({"path": rel, "bytes": size})
                batch.rejected.append(({**row, "meta": meta}, reason))
                continue
            with open(f, "rb") as fh:
                data = fh.read(cap + 1)
        except OSError as e:
            batch.quarantine.append(_q(ctx.label, i, None, f"{rel}: unreadable: {e}", None))
            continue
        if suffix in HTML_EXTS:
            ctx.add_html(data, None, row, i, batch)
        else:
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                batch.quarantine.append(_q(ctx.label, i, None, f"{rel}: invalid UTF-8: {e}",
                                           _snip(data)))
                continue
            batch.add({**row, "text": text}, i)
        if batch.full():
            yield batch
            batch = _Batch()
    yield batch


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


def _read_hf(path: Path, ctx: _Ctx) -> Iterator[_Batch]:
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
            start = position
            try:
                if p.suffix == ".parquet":
                    pf = pq.ParquetFile(p)
                    schema, n_rows = pf.schema_arrow, pf.metadata.num_rows
                    batches = pf.iter_batches(batch_size=BATCH_DOCS)
                else:
                    schema, batches = _arrow_reader(p)
                    n_rows = None
                if ctx.f["text"] not in schema.names:
                    if n_rows is None:
                        n_rows = sum(b.num_rows for b in batches)
                    for b in _missing_text(ctx, schema.names, n_rows, f"{p.name}"):
                        for q in b.quarantine:
                            q["position"] += start
                        yield b
                    position += n_rows
                    continue
                for b in _table_batches(ctx, batches, start, extra):
                    position += len(b) + len(b.quarantine)
                    yield b
            except (pa.ArrowInvalid, OSError) as e:
                yield _Batch(quarantine=[_q(ctx.label, position, None,
                                            f"{p.name}: unreadable from this row on: {e}",
                                            None)])


def _read_html(path: Path, ctx: _Ctx) -> Iterator[_Batch]:
    return _read_files(path, ctx, HTML_EXTS)


def _read_text(path: Path, ctx: _Ctx) -> Iterator[_Batch]:
    return _read_files(path, ctx, TEXT_EXTS)


def _read_any_files(path: Path, ctx: _Ctx) -> Iterator[_Batch]:
    return _read_files(path, ctx, HTML_EXTS + TEXT_EXTS)


READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "warc": _read_warc,
           "wet": _read_wet, "html": _read_html, "text": _read_text, "files": _read_any_files,
           "hf": _read_hf}


# ----------------------------------------------------------------------------- per batch
def _doc_table(cols: dict[str, list[Any]]) -> pa.Table:
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in DOC_SCHEMA}, schema=DOC_SCHEMA)


def _scrub(v: Any) -> Any:
    return v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v


@dataclass
class _Done:
    kept: pa.Table | None
    rejected: list[tuple[dict[str, Any], str]]
    quarantine: list[dict[str, Any]]


def _finish(batch: _Batch, ctx: _Ctx) -> _Done:
    """Length check, normalisation, emptiness, language: decide each candidate document."""
    cfg = ctx.cfg
    cols, n = batch.cols, len(batch)
    texts = cols["text"]
    why: list[str | None] = [None] * n
    for i, t in enumerate(texts):
        if len(t) > cfg.max_doc_chars:
            why[i] = "ingest.too_long"
    live = [i for i in range(n) if why[i] is None]
    if live and _opt(cfg, "normalize"):
        for i, t in zip(live, normalize_texts([texts[i] for i in live]).to_pylist(),
                        strict=True):
            texts[i] = t
    min_chars = cfg.min_doc_chars
    for i in live:
        if len(texts[i].strip()) < min_chars:
            why[i] = "ingest.empty_text"
    live = [i for i in live if why[i] is None]
    mode = _opt(cfg, "lang_id")
    if mode != "off":
        todo = [i for i in live if mode == "always" or cols["lang"][i] is None]
        if todo:
            langs, scores = langid.identify([texts[i] for i in todo])
            for i, lang, score in zip(todo, langs, scores, strict=True):
                cols["lang"][i], cols["lang_score"][i] = lang, float(score)
    min_score = float(_opt(cfg, "min_lang_score") or 0.0)
    allowed = _opt(cfg, "languages")
    allowed = {langid.primary(x) for x in allowed} if allowed else None
    for i in live:
        score = cols["lang_score"][i]
        if min_score > 0 and score is not None and score < min_score:
            why[i] = "ingest.lang_score"
        elif allowed is not None and langid.primary(cols["lang"][i]) not in allowed:
            why[i] = "ingest.language"
    seen = ctx.kept_ids
    for i in live:
        if why[i] is None:
            key = xxhash.xxh64_intdigest(str(cols["id"][i]).encode())
            if key in seen:
                why[i] = "ingest.duplicate_id"
            else:
                seen.add(key)
    rejected = list(batch.rejected)
    quarantine = list(batch.quarantine)
    keep = []
    for i in range(n):
        if why[i] is None:
            keep.append(i)
        else:
            rejected.append(({k: cols[k][i] for k in DOC_SCHEMA.names}, why[i]))
    if not keep:
        return _Done(None, rejected, quarantine)
    sub = {k: [cols[k][i] for i in keep] for k in DOC_SCHEMA.names} if len(keep) < n else cols
    try:
        table = _doc_table(sub)
    except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError):
        # a lone surrogate ("\ud800" escaped in JSON) cannot be stored: find the rows
        good = []
        for j, i in enumerate(keep):
            try:
                _doc_table({k: [sub[k][j]] for k in DOC_SCHEMA.names})
                good.append(j)
            except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
                row = {k: sub[k][j] for k in DOC_SCHEMA.names}
                quarantine.append(_q(ctx.label, batch.pos[i], None,
                                     f"record is not valid Unicode: {type(e).__name__}: {e}",
                                     json.dumps(row, default=str)[:RAW_SNIPPET]))
        if not good:
            return _Done(None, rejected, quarantine)
        table = _doc_table({k: [sub[k][j] for j in good] for k in DOC_SCHEMA.names})
    return _Done(table, rejected, quarantine)


# ----------------------------------------------------------------------------- output
class _Output:
    """Kept documents cut into shards by text bytes; rejected and quarantined rows written in
    parts as they accumulate, so none of them is held for a whole file."""

    def __init__(self, out: Path, key: str, cfg: Any):
        self.out, self.key, self.cfg = out, key, cfg
        self.kept_files: list[str] = []
        self.pending: list[pa.Table] = []
        self.pending_bytes = 0
        self.rejected: list[tuple[dict[str, Any], str]] = []
        self.rejected_chars = 0
        self.quarantine: list[dict[str, Any]] = []
        self.parts = {"rejected": 0, "quarantine": 0}
        self.n_kept = self.n_rejected = self.n_quarantined = 0
        self.rejections: dict[str, dict[str, int]] = {}
        self.langs: Counter[str] = Counter()

    def add(self, done: _Done) -> None:
        if done.kept is not None and len(done.kept):
            self._add_kept(done.kept)
        for row, reason in done.rejected:
            r = self.rejections.setdefault(reason, {"first": 0, "alone": 0})
            r["first"] += 1
            r["alone"] += 1
            self.rejected.append((row, reason))
            self.rejected_chars += len(row["text"])
        self.n_rejected += len(done.rejected)
        self.quarantine.extend(done.quarantine)
        self.n_quarantined += len(done.quarantine)
        if len(self.rejected) >= SIDE_ROWS or self.rejected_chars >= self.cfg.shard_max_bytes:
            self._flush_rejected()
        if len(self.quarantine) >= SIDE_ROWS:
            self._flush_quarantine()

    def _add_kept(self, t: pa.Table) -> None:
        cfg = self.cfg
        self.n_kept += len(t)
        langs = pc.value_counts(pc.fill_null(t.column("lang"), "und")).to_pylist()
        self.langs.update({d["values"]: d["counts"] for d in langs})
        sizes = pc.binary_length(t.column("text").cast(pa.large_binary())).to_numpy()
        start = 0
        while start < len(t):  # cut the batch where the shard fills up
            room = cfg.shard_max_bytes - self.pending_bytes
            fill = np.cumsum(sizes[start:])
            take = max(1, int(np.searchsorted(fill, room, side="left")) + 1)
            take = min(take, len(t) - start)
            self.pending.append(t.slice(start, take))
            self.pending_bytes += int(fill[take - 1])
            start += take
            if self.pending_bytes >= cfg.shard_max_bytes:
                self._flush_kept()

    def _flush_kept(self) -> None:
        if not self.pending:
            return
        t = pa.concat_tables(self.pending)
        avg = max(1, self.pending_bytes // max(len(t), 1))
        target = self.out / "kept" / f"part-{self.key}-{len(self.kept_files):04d}.parquet"
        write_parquet(t, target, row_group_rows=max(1, self.cfg.row_group_bytes // avg))
        self.kept_files.append(target.name)
        self.pending, self.pending_bytes = [], 0

    def _part(self, sub: str) -> Path:
        n = self.parts[sub]
        self.parts[sub] += 1
        return self.out / sub / f"part-{self.key}-{n:04d}.parquet"

    def _flush_rejected(self) -> None:
        if not self.rejected:
            return
        rows = {f.name: [r[f.name] for r, _ in self.rejected] for f in DOC_SCHEMA}
        try:
            t = _doc_table(rows)
        except (UnicodeEncodeError, pa.ArrowInvalid):
            t = _doc_table({k: [_scrub(v) for v in vs] for k, vs in rows.items()})
        reasons = pa.array([why for _, why in self.rejected], pa.string())
        write_parquet(with_reject(t, "ingest", reasons), self._part("rejected"))
        self.rejected, self.rejected_chars = [], 0

    def _flush_quarantine(self) -> None:
        if not self.quarantine:
            return
        write_parquet(pa.Table.from_pylist(self.quarantine, schema=QUARANTINE_SCHEMA),
                      self._part("quarantine"))
        self.quarantine = []

    def close(self) -> None:
        self._flush_kept()
        self._flush_rejected()
        self._flush_quarantine()


def ingest_file(
    path: str,
    file_key: str,
    out_dir: str,
    fmt: str,
    fields: dict[str, str],
    cfg: Any,
) -> dict[str, Any]:
    """Read one input into ``out_dir/{kept,rejected,quarantine}/part-<file_key>-*.parquet``.

    Returns the shard stats (counts, files written, documents kept per language, records
    skipped as not documents). Runs on a Dask worker or anywhere else.
    """
    p, out = Path(path), Path(out_dir)
    for sub in ("kept", "rejected", "quarantine"):  # a crashed earlier attempt: start clean
        for old in (out / sub).glob(f"part-{file_key}-*.parquet"):
            old.unlink()
    kind = detect_format(p, fmt)
    source = p.name if p.is_dir() else p.name.split(".")[0]
    ctx = _Ctx(p, fields, cfg, source)
    output = _Output(out, file_key, cfg)
    for batch in READERS[kind](p, ctx):
        output.add(_finish(batch, ctx))
    output.close()
    if output.n_quarantined:
        output.rejections["ingest.quarantine"] = {"first": output.n_quarantined,
                                                  "alone": output.n_quarantined}
    n_rej = output.n_rejected + output.n_quarantined
    return {
        "file": str(p),
        "format": kind,
        "docs_in": output.n_kept + n_rej,
        "docs_kept": output.n_kept,
        "docs_rejected": n_rej,
        "quarantined": output.n_quarantined,
        "rejections": output.rejections,
        "kept": [f"kept/{f}" for f in output.kept_files],
        "langs": dict(sorted(output.langs.items())),
        "skipped": dict(sorted(ctx.skipped.items())),
    }
