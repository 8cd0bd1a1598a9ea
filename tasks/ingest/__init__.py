"""Ingest: raw files -> the document table, sharded to Parquet.

One input (a file, or a folder of pages, or a Hugging Face dataset directory) is one unit of
work (a Dask task); a JSONL file larger than ``shard_max_bytes`` is cut into line-aligned byte
ranges, each a unit of its own (``ranges.py``; ``plan.py`` makes the jobs and runs the id
step). Records stream in batches (capped in documents and bytes; Parquet and Arrow are decoded
in batches of ~8 MB), so memory is bounded by the batch, the line cap and the shard size, plus
8 bytes per kept document for the id hashes that catch a repeated id.

Formats (``input.format``, or ``auto``: by extension / folder contents), one reader each in
``readers/``:

- ``jsonl``: ``.jsonl``/``.json``/``.ndjson``, plain, gzip or zstd (by magic bytes). Read in
  blocks, each line parsed by orjson (``json`` where orjson refuses it, so errors read as
  ever); a line longer than ``max_line_bytes`` is skipped in blocks, never held.
- ``parquet``: read by row batches.
- ``warc``: ``.warc``/``.warc.gz``; HTTP ``response`` records (2xx, HTML) -> extracted text,
  ``WARC-Target-URI`` -> url, ``WARC-Date`` -> fetched_at. Other records are skipped and
  counted in ``stats["skipped"]`` (they are not documents).
- ``wet``: ``.warc.wet.gz``/``.wet``; ``conversion`` records, text as is.
- ``html`` / ``text``: a folder of ``.html``/``.htm`` (extracted) and/or ``.txt`` files (as
  is), one document per file; id is a hash of the relative path, source the folder's name.
- ``hf``: a ``datasets`` ``save_to_disk`` directory (``.arrow`` IPC stream files listed in
  ``state.json``, or Parquet files; a ``dataset_dict.json`` directory reads every split).

Records become contract rows in ``records.py`` (``input.fields``). Then, per batch
(``policy.py``, over the texts as one Arrow array): documents longer than ``max_doc_chars``
are rejected; the rest are normalised (``tasks/normalize.py``: ftfy only on the lines it could
change), checked for emptiness, language-identified (``tasks/langid.py``, from samples of the
text) and checked against ``min_lang_score`` and ``languages`` (a record's own language tag is
first put in the contract's form, or rejected as ``ingest.bad_lang``). Unreadable records (bad
JSON, bad UTF-8, JSON nested too deep, a truncated gzip/zstd stream, a broken WARC record, a
Parquet/Arrow file without the text column or with a corrupt page, an over-long line, a value
Arrow cannot store) go to ``quarantine/`` with the file, position and error, and are counted:
nothing is dropped silently, no record fails its file, and ``docs_in == docs_kept +
docs_rejected``. The shards are written by ``writer.py``; ``shard.py`` ties it together per
input (or range); ``ids.py`` makes ids unique within an input and then across inputs
(docs/outputs.md).
"""

from __future__ import annotations

from tasks.ingest.config import (
    BATCH_CHARS,
    BATCH_DOCS,
    DEFAULTS,
    HTML_EXTS,
    RAW_SNIPPET,
    READ_CHUNK,
    SIDE_ROWS,
    TEXT_EXTS,
)
from tasks.ingest.inputs import (
    FORMATS,
    HF_MARKERS,
    InputError,
    content_sha256,
    detect_format,
    expand_inputs,
    fingerprint,
)
from tasks.ingest.readers import READERS
from tasks.ingest.shard import ingest_file

__all__ = [
    "BATCH_CHARS", "BATCH_DOCS", "DEFAULTS", "FORMATS", "HF_MARKERS", "HTML_EXTS", "READERS",
    "RAW_SNIPPET", "READ_CHUNK", "SIDE_ROWS", "TEXT_EXTS", "InputError", "content_sha256",
    "detect_format", "expand_inputs", "fingerprint", "ingest_file",
]
