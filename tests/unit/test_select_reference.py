"""Reference sets (tasks/select/reference.py): the files a selector learns from, read in every
format the docs name, counted by content."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard
from pydantic import ValidationError

from tasks.identity import identity
from tasks.select.reference import ReadStats, Reference, iter_texts
from tasks.store import write_parquet

LINES = "".join(json.dumps({"body": f"text {i}"}) + "\n" for i in range(4)) + \
    "not json\n" + json.dumps({"body": 3}) + "\n" + json.dumps(["a list"]) + "\n\n"


def _files(d: Path) -> None:
    (d / "a.jsonl").write_text(LINES)
    with gzip.open(d / "b.jsonl.gz", "wt") as fh:
        fh.write(LINES)
    (d / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(LINES.encode()))
    write_parquet(pa.table({"body": ["p0", None, "p2"]}), d / "d.parquet")


def test_every_format_is_read_and_bad_records_are_counted(tmp_path: Path) -> None:
    _files(tmp_path)
    stats = ReadStats()
    ref = Reference(paths=[str(tmp_path / "*.jsonl*"), str(tmp_path / "d.parquet")],
                    text_field="body")
    texts = [t for batch in iter_texts(ref, stats, batch=3) for t in batch]
    assert texts == [f"text {i}" for i in range(4)] * 3 + ["p0", "p2"]
    assert stats.docs == 14 and stats.skipped == 3 * 3 + 1
    capped = [t for b in iter_texts(Reference(paths=ref.paths, text_field="body", max_docs=6))
              for t in b]
    assert capped == [f"text {i}" for i in range(4)] + ["text 0", "text 1"]


def test_a_parquet_file_without_the_field_is_an_error(tmp_path: Path) -> None:
    _files(tmp_path)
    with pytest.raises(ValueError, match="no column 'text'"):
        list(iter_texts(Reference(paths=[str(tmp_path / "d.parquet")])))


def test_files_count_by_content(tmp_path: Path) -> None:
    _files(tmp_path)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "a2.jsonl").write_text(LINES)
    a = identity(Reference(paths=[str(tmp_path / "a.jsonl")]))
    assert a == identity(Reference(paths=[str(tmp_path / "copy" / "a2.jsonl")]))
    assert a != identity(Reference(paths=[str(tmp_path / "d.parquet")]))
    assert a != identity(Reference(paths=[str(tmp_path / "a.jsonl")], text_field="body"))
    # a set of files: order does not matter
    two = [str(tmp_path / "a.jsonl"), str(tmp_path / "d.parquet")]
    assert identity(Reference(paths=two)) == identity(Reference(paths=two[::-1]))


def test_paths_or_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no such file"):
        Reference(paths=[str(tmp_path / "missing-*.jsonl")])
    with pytest.raises(ValidationError, match="exactly one"):
        Reference(paths=[str(tmp_path)], source="wiki")
    assert Reference(source="wiki").paths == []
