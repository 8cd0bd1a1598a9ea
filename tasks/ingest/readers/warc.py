"""WARC and WET.

- ``warc``: ``.warc``/``.warc.gz``; HTTP ``response`` records (2xx, HTML) -> extracted text,
  ``WARC-Target-URI`` -> url, ``WARC-Date`` -> fetched_at. Other records are skipped and
  counted in ``stats["skipped"]`` (they are not documents).
- ``wet``: ``.warc.wet.gz``/``.wet``; ``conversion`` records, text as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tasks.ingest.config import READ_CHUNK, opt
from tasks.ingest.readers.streams import STREAM_ERRORS, open_stream
from tasks.ingest.records import Batch, ReadContext, meta_json, parse_time, qrow, snip


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
        except STREAM_ERRORS as e:
            self.error = e
            return b""

    def readline(self, n: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self.fh.readline(n)
        except STREAM_ERRORS as e:
            self.error = e
            return b""

    def tell(self) -> int:
        return self.fh.tell()

    def close(self) -> None:
        self.fh.close()


def read_warc(path: Path, ctx: ReadContext, wet: bool = False) -> Iterator[Batch]:
    """WARC/WET records. The file is decompressed here (gzip or zstd, by magic bytes) and warcio
    reads plain WARC, so offsets are in the decompressed stream, as for JSONL."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.limitreader import LimitReader

    cfg = ctx.cfg
    want = "conversion" if wet else "response"
    cap = int(opt(cfg, "max_line_bytes") if wet else opt(cfg, "max_html_bytes"))
    batch = Batch()
    idx = -1
    try:
        raw = open_stream(path)
    except OSError as e:
        yield Batch(quarantine=[qrow(ctx.label, None, None, f"unreadable file: {e}", None)])
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
                batch.quarantine.append(qrow(
                    ctx.label, idx + 1, offset,
                    f"unreadable WARC record {idx + 1} at offset {offset}; rest of the file "
                    f"not read: {type(e).__name__}: {str(e)[:300]}", None))
                break
            idx += 1
            offset = getattr(it, "offset", offset)
            if rec.rec_type is None or rec.rec_headers.get_header("Content-Length") is None:
                # warcio reads a mangled header leniently; without a type and a length the
                # record's end (and so every later record) is unknown
                batch.quarantine.append(qrow(
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
                batch.quarantine.append(qrow(ctx.label, idx, offset,
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
                   "fetched_at": parse_time(h.get_header("WARC-Date")),
                   "lang": None, "lang_score": None, "meta": meta_json(meta)}
            if wet:
                if len(data) > cap:
                    batch.rejected.append((row, "ingest.too_long"))
                else:
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError as e:
                        batch.quarantine.append(qrow(ctx.label, idx, offset,
                                                     f"invalid UTF-8: {e}", snip(data)))
                        continue
                    batch.add({**row, "text": text}, idx)
            else:
                ctx.add_html(data, content_type, row, idx, batch)
            if batch.full():
                yield batch
                batch = Batch()
        if fh.error is not None:
            if not broke_inside:  # warcio stopped at the next record's start
                idx, offset = idx + 1, getattr(it, "offset", None)
            batch.quarantine.append(qrow(
                ctx.label, idx, offset,
                f"unreadable stream from WARC record {idx} at offset {offset} on: "
                f"{type(fh.error).__name__}: {fh.error}", None))
    yield batch


def read_wet(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    return read_warc(path, ctx, wet=True)
