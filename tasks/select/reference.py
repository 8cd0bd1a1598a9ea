"""The reference set a selector learns from: files the user names, or one source of the pool.

``Reference`` is the recipe block (``reference:`` of the fastText stage, ``target:`` of DSIR):
either ``paths`` (JSONL — plain, gzip or zstd — or Parquet files, globs allowed, each with a
text field) or ``source`` (the documents of the pool whose ``source`` column has that value).
The files count by content (``tasks/identity.py``): moving them changes no version, editing
one does. ``iter_texts`` streams the texts in batches; a line that is not JSON, or a record
without a string in the text field, is skipped and counted, never fatal.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.identity import ByContent, file_digest

PARQUET_SUFFIXES = (".parquet", ".pq")


def expand(paths: list[str]) -> list[str]:
    """The files ``paths`` name (globs expanded, sorted, each once); an entry matching
    nothing is an error naming it."""
    out: list[str] = []
    for p in paths:
        hits = sorted(glob.glob(p, recursive=True)) if glob.has_magic(p) else [p]
        files = [h for h in hits if Path(h).is_file()]
        if not files:
            raise ValueError(f"reference: no such file {p!r}")
        out += [f for f in files if f not in out]
    return out


def digest_paths(paths: list[str]) -> str:
    """One hash of the files' contents, in no particular order (a set of files)."""
    digests = sorted(file_digest(f) for f in expand(paths)) if paths else []
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


class Reference(BaseModel):
    """A reference set: ``paths`` (files) or ``source`` (a source of the pool), not both."""

    model_config = ConfigDict(extra="forbid")

    paths: Annotated[list[str], ByContent(digest_paths)] = Field(
        default_factory=list, description="JSONL (plain, .gz, .zst) or Parquet files, globs "
        "allowed; counted by content")
    source: str | None = Field(None, description="or: the pool's documents of this source")
    text_field: str = Field("text", description="the text field of the files' records")
    max_docs: int | None = Field(None, gt=0, description="use at most this many reference "
                                 "documents (the first ones read)")

    @model_validator(mode="after")
    def _one(self) -> Reference:
        if bool(self.paths) == (self.source is not None):
            raise ValueError("a reference set needs exactly one of paths or source")
        if self.paths:
            expand(self.paths)  # a missing file is a recipe error
        return self


@dataclass
class ReadStats:
    docs: int = 0
    skipped: int = 0  # lines that are not JSON objects, records without a string text


def _open_text(path: str) -> IO[str]:
    """Plain, gzip or zstd (told apart by magic bytes), as UTF-8 text."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.open(path, "rt", encoding="utf-8", errors="replace")  # type: ignore
    return open(path, encoding="utf-8", errors="replace")


def _jsonl_texts(path: str, field: str, stats: ReadStats, batch: int) -> Iterator[list[str]]:
    out: list[str] = []
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                stats.skipped += 1
                continue
            text = rec.get(field) if isinstance(rec, dict) else None
            if not isinstance(text, str):
                stats.skipped += 1
                continue
            out.append(text)
            if len(out) >= batch:
                yield out
                out = []
    if out:
        yield out


def _parquet_texts(path: str, field: str, stats: ReadStats, batch: int
                   ) -> Iterator[list[str]]:
    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
        raise ValueError(f"reference: {path} has no column {field!r}")
    for rb in pf.iter_batches(batch_size=batch, columns=[field]):
        texts = rb.column(0).to_pylist()
        stats.skipped += sum(1 for t in texts if not isinstance(t, str))
        yield [t for t in texts if isinstance(t, str)]


def iter_texts(ref: Reference, stats: ReadStats | None = None, batch: int = 2_000
               ) -> Iterator[list[str]]:
    """The reference files' texts in batches, up to ``max_docs`` in all (``paths`` only: a
    ``source`` reference is read from the pool by the selector itself)."""
    stats = stats if stats is not None else ReadStats()
    left = ref.max_docs
    for path in expand(ref.paths):
        read = _parquet_texts if path.endswith(PARQUET_SUFFIXES) else _jsonl_texts
        for texts in read(path, ref.text_field, stats, batch):
            if left is not None:
                texts = texts[:left]
                left -= len(texts)
            stats.docs += len(texts)
            if texts:
                yield texts
            if left == 0:
                return
