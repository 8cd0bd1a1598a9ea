"""JSON Lines (``.jsonl``/``.json``/``.ndjson``), plain, gzip or zstd. Lines are read with a
size cap (``max_line_bytes``): a longer line is skipped in chunks, never held."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path

from tasks.ingest.config import READ_CHUNK, opt
from tasks.ingest.readers.streams import STREAM_ERRORS, open_stream
from tasks.ingest.records import Batch, ReadContext, qrow, snip


def read_jsonl(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    max_line = int(opt(ctx.cfg, "max_line_bytes"))
    batch = Batch()
    offset = 0
    lineno = 0
    try:
        with open_stream(path) as fh:
            while True:
                line = fh.readline(max_line + 1)
                if not line:
                    break
                lineno += 1
                start, offset = offset, offset + len(line)
                if len(line) > max_line and not line.endswith(b"\n"):
                    head, total = snip(line), len(line)
                    del line
                    lineno, offset = lineno - 1, start  # if the stream breaks in this line
                    while True:  # skip the rest of the line in chunks, never holding it
                        chunk = fh.readline(READ_CHUNK)
                        total += len(chunk)
                        if not chunk or chunk.endswith(b"\n"):
                            break
                    lineno, offset = lineno + 1, start + total
                    batch.quarantine.append(qrow(
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
                    batch.quarantine.append(qrow(ctx.label, lineno, start,
                                                 f"invalid UTF-8: {e}", snip(line)))
                    continue
                except (ValueError, RecursionError) as e:
                    # bad JSON; an integer past int()'s digit limit (ValueError); nesting past
                    # the parser's recursion limit (RecursionError)
                    what = "invalid JSON" if isinstance(e, json.JSONDecodeError) else \
                        f"unreadable JSON: {type(e).__name__}"
                    batch.quarantine.append(qrow(ctx.label, lineno, start,
                                                 f"{what}: {str(e)[:300]}", snip(line)))
                    continue
                if not isinstance(rec, dict):
                    batch.quarantine.append(qrow(ctx.label, lineno, start,
                                                 "JSON line is not an object", snip(line)))
                    continue
                ctx.add_record(rec, lineno, batch, start)
                if batch.full():
                    yield batch
                    batch = Batch()
    except STREAM_ERRORS as e:
        # a truncated or corrupt stream: keep what was read, quarantine the rest of the file
        batch.quarantine.append(qrow(ctx.label, lineno + 1, offset,
                                     f"unreadable stream after this offset: "
                                     f"{type(e).__name__}: {e}", None))
    yield batch
