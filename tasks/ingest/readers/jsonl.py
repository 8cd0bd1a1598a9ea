"""JSON Lines (``.jsonl``/``.json``/``.ndjson``), plain, gzip or zstd. Lines are read with a
size cap (``max_line_bytes``): a longer line is skipped in blocks, never held.

The input is read in blocks and cut into lines in C; each line is parsed by orjson, and by
the standard library's ``json`` when orjson refuses it (so a bad record is quarantined with
the same error as ever) or when its value holds a float of 2**63 or more (orjson turns an
integer past 64 bits into a float; ``json`` keeps it an integer). Where both parse a line they
give the same value (a test compares them on random JSON).

A reader can be given a byte range of the input (``ReadContext.part``, ``tasks/ingest/
ranges.py``): it reads the lines that start inside the range, numbered and placed as in a
read of the whole input, so a document keeps its id and quarantine position.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from tasks.ingest.config import RAW_SNIPPET, opt
from tasks.ingest.readers.streams import STREAM_ERRORS, open_part, open_stream
from tasks.ingest.records import Batch, ReadContext, qrow, snip

BLOCK = 2**20  # bytes read at once
_INT64 = float(2**63)


def _exact(value: Any) -> bool:
    """No float in `value` that orjson may have made of an integer past 64 bits (it does that;
    ``json`` keeps such an integer): every float is inside (-2**63, 2**63)."""
    for v in value.values() if type(value) is dict else value:
        t = type(v)
        if t is float:
            if not -_INT64 < v < _INT64:
                return False
        elif (t is dict or t is list) and not _exact(v):
            return False
    return True


def parse_line(line: bytes) -> Any:
    """The JSON value of `line`, as ``json.loads(line.decode("utf-8"))`` gives it (and with its
    errors: UnicodeDecodeError, ValueError, RecursionError)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    else:
        t = type(value)
        if (t is dict or t is list) and _exact(value) or t is float and -_INT64 < value < _INT64 \
                or t not in (dict, list, float):
            return value
    return json.loads(line.decode("utf-8"))


def _read_block(fh: BinaryIO, size: int) -> tuple[bytes, BaseException | None]:
    """Up to `size` bytes, in the stream's own reads, so that what was read before a broken
    stream fails is kept: (data, the error that ended it, if any)."""
    got: list[bytes] = []
    n = 0
    try:
        while n < size:
            chunk = fh.read1(size - n) if hasattr(fh, "read1") else fh.read(size - n)
            if not chunk:
                break
            got.append(chunk)
            n += len(chunk)
    except STREAM_ERRORS as e:
        return b"".join(got), e
    return b"".join(got), None


def _add(line: bytes, nl: bool, lineno: int, start: int, ctx: ReadContext, batch: Batch
         ) -> None:
    """Parse one line (without its newline; `nl`: it had one) into `batch`, or quarantine it
    (its first bytes, newline included, kept for a person)."""
    if lineno == 1 and line.startswith(codecs.BOM_UTF8):
        line = line[len(codecs.BOM_UTF8):]
    if not line or line.isspace():  # bytes.isspace: the JSON whitespace and \x0b \x0c
        return
    try:
        rec = parse_line(line)
    except UnicodeDecodeError as e:
        batch.quarantine.append(qrow(ctx.label, lineno, start, f"invalid UTF-8: {e}",
                                     snip(line + b"\n" if nl else line)))
        return
    except (ValueError, RecursionError) as e:
        # bad JSON; an integer past int()'s digit limit (ValueError); nesting past the
        # parser's recursion limit (RecursionError)
        what = "invalid JSON" if isinstance(e, json.JSONDecodeError) else \
            f"unreadable JSON: {type(e).__name__}"
        batch.quarantine.append(qrow(ctx.label, lineno, start, f"{what}: {str(e)[:300]}",
                                     snip(line + b"\n" if nl else line)))
        return
    if not isinstance(rec, dict):
        batch.quarantine.append(qrow(ctx.label, lineno, start, "JSON line is not an object",
                                     snip(line + b"\n" if nl else line)))
        return
    ctx.add_record(rec, lineno, batch, start)



def _too_long(ctx: ReadContext, lineno: int, start: int, total: int, head: str,
              max_line: int) -> dict[str, Any]:
    return qrow(ctx.label, lineno, start, f"line of {total} bytes is longer than "
                f"max_line_bytes={max_line}: not parsed (document too long)", head)


def _lines(fh: BinaryIO, ctx: ReadContext, max_line: int, part: dict[str, Any] | None
           ) -> Iterator[tuple[int, int, bytes | dict[str, Any], bool]]:
    """(line number, offset, the line | a quarantine row, whether a newline ended it) for each
    line that starts in the range (the whole stream without one); a broken stream ends it
    with one quarantine row for the rest. Holds a block and at most ``max_line`` bytes of a
    line."""
    offset = part["start"] if part else 0  # where the line in progress starts
    lineno = part["lines_before"] if part else 0  # lines before it
    end = part.get("end") if part else None
    skipping = bool(part) and not part["at_line_start"]  # the previous range's last line
    long_line: list[Any] | None = None  # [start, head, bytes so far] of a line too long
    carry: list[bytes] = []  # the line in progress, unfinished at the end of a block
    held = 0  # its bytes
    while True:
        data, error = _read_block(fh, BLOCK)
        pos = 0
        if skipping or long_line is not None or carry:  # first, the line in progress
            nl = data.find(b"\n")
            used = len(data) if nl < 0 else nl + 1
            if carry and held + (used - 1 if nl >= 0 else used) > max_line:
                head = _head([*carry, data])
                long_line, carry, held = [offset, snip(head[:max_line + 1]), held], [], 0
            if nl < 0:
                if long_line is not None:
                    long_line[2] += used
                elif carry:
                    carry.append(data)
                    held += used
                else:  # skipping the previous range's line
                    offset += used
                if data and error is None:
                    continue
                if error is not None:  # the stream broke inside the line
                    at = long_line[0] if long_line is not None else offset
                    yield lineno + 1, at, _broken(ctx, lineno + 1, at, error), False
                elif long_line is not None:  # the input ends with the long line
                    yield lineno + 1, offset, _too_long(ctx, lineno + 1, offset, long_line[2],
                                                        long_line[1], max_line), False
                elif carry:  # a last line without a newline
                    yield lineno + 1, offset, b"".join(carry), False
                return
            lineno += 1
            if long_line is not None:
                yield lineno, offset, _too_long(ctx, lineno, offset, long_line[2] + used,
                                                long_line[1], max_line), True
                offset += long_line[2] + used
            elif carry:
                line = b"".join([*carry, data[:used - 1]])
                yield lineno, offset, line, True
                offset += len(line) + 1
            else:
                offset += used
            skipping, long_line, carry, held, pos = False, None, [], 0, used
        lines = (data[pos:] if pos else data).split(b"\n")
        tail = lines.pop()  # the line not finished yet (b"" after a newline)
        for line in lines:
            if end is not None and offset >= end:
                return
            lineno += 1
            start, offset = offset, offset + len(line) + 1
            yield lineno, start, (line if len(line) <= max_line else _too_long(
                ctx, lineno, start, len(line) + 1, snip(line[:max_line + 1]), max_line)), True
        if end is not None and offset >= end:
            return
        if error is not None:  # the stream broke: what was read is kept, the rest is one row
            yield lineno + 1, offset, _broken(ctx, lineno + 1, offset, error), False
            return
        if not data:
            return
        if len(tail) > max_line:  # too long already: skip the rest of it unread
            long_line = [offset, snip(tail[:max_line + 1]), len(tail)]
        elif tail:
            carry, held = [tail], len(tail)


def _head(chunks: list[bytes]) -> bytes:
    """The first `RAW_SNIPPET` bytes of the chunks, joined."""
    out = b""
    for c in chunks:
        out += c[:RAW_SNIPPET - len(out)]
        if len(out) >= RAW_SNIPPET:
            break
    return out


def _broken(ctx: ReadContext, lineno: int, offset: int, error: BaseException
            ) -> dict[str, Any]:
    # a truncated or corrupt stream: what was read is kept, the rest of the file is one row
    return qrow(ctx.label, lineno, offset, f"unreadable stream after this offset: "
                f"{type(error).__name__}: {error}", None)


def read_jsonl(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    max_line = int(opt(ctx.cfg, "max_line_bytes"))
    batch = Batch()
    try:
        fh = open_part(path, ctx.part) if ctx.part else open_stream(path)
    except STREAM_ERRORS as e:
        batch.quarantine.append(_broken(ctx, 1, 0, e))
        yield batch
        return
    with fh:
        for lineno, start, line, nl in _lines(fh, ctx, max_line, ctx.part):
            if isinstance(line, dict):
                batch.quarantine.append(line)
            else:
                _add(line, nl, lineno, start, ctx, batch)
            if batch.full():
                yield batch
                batch = Batch()
    yield batch
