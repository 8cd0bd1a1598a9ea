"""Readers, one module per input format, and the registry: format name -> reader.

A reader takes the input's path and a `ReadContext` and yields `Batch`es of candidate rows
(plus what it rejected or quarantined while reading). To add a format: a module here with its
reader, and one line in `READERS` (and, for ``input.format: auto``, its extension in
``tasks/ingest/inputs.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tasks.ingest.readers import files, hf, jsonl, parquet, warc
from tasks.ingest.records import Batch, ReadContext

Reader = Callable[[Path, ReadContext], Iterator[Batch]]

READERS: dict[str, Reader] = {
    "jsonl": jsonl.read_jsonl,
    "parquet": parquet.read_parquet,
    "warc": warc.read_warc,
    "wet": warc.read_wet,
    "html": files.read_html,
    "text": files.read_text,
    "files": files.read_any_files,
    "hf": hf.read_hf,
}
# formats that only auto-detection picks (a folder with pages of either kind), not a recipe
AUTO_ONLY = ("files",)
