"""Property-based: random bytes, random JSON and random Arrow tables into every reader, random
markup into the HTML extractors, random document tables into the filters. Nothing raises, and
every input is accounted for: per file, docs_in = kept + rejected + quarantined, the rows
written match the counts, and what is kept holds the documents contract. A few dozen examples
each (~30 s in all); ``DATAMILL_FUZZ_EXAMPLES=2000`` for a longer hunt."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks import extract as html_extract
from tasks.contracts import LANG_REGEX
from tasks.ingest import ingest_file
from tasks.recipe import IngestConfig
from tasks.schema import DOC_SCHEMA, QUARANTINE_SCHEMA

FUZZ = settings(max_examples=int(os.environ.get("DATAMILL_FUZZ_EXAMPLES", 25)), deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CFG = IngestConfig(lang_id="off")  # language id has its own tests; keep the examples fast
REASONS = re.compile(r"ingest\.[a-z_]+")
# a few bytes that get past each reader's first check
MAGIC = {"jsonl": [b"", b"\x1f\x8b\x08\x00", b"\x28\xb5\x2f\xfd", b"\xef\xbb\xbf{"],
         "parquet": [b"PAR1"], "warc": [b"WARC/1.0\r\n", b"\x1f\x8b\x08\x00"],
         "wet": [b"WARC/1.0\r\nWARC-Type: conversion\r\n"], "hf": [b"\xff\xff\xff\xff"],
         "html": [b"<html><body>"], "text": [b"", b"\xef\xbb\xbf"]}
EXT = {"jsonl": ".jsonl", "parquet": ".parquet", "warc": ".warc", "wet": ".wet",
       "hf": ".arrow", "html": ".html", "text": ".txt"}


@contextmanager
def tmpdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _rows(out: Path, sub: str) -> list[dict[str, Any]]:
    return [r for p in sorted((out / sub).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def ingest(src: Path, fmt: str, cfg: Any = CFG) -> dict[str, Any]:
    """ingest_file, then the accounting and the contract on what it wrote."""
    out = src.parent / "out"
    stats = ingest_file(str(src), "00000", str(out), fmt, {}, cfg)
    kept, rejected, quarantine = (_rows(out, s) for s in ("kept", "rejected", "quarantine"))
    assert stats["docs_in"] == stats["docs_kept"] + stats["docs_rejected"]
    assert stats["docs_kept"] == len(kept)
    assert stats["quarantined"] == len(quarantine)
    assert stats["docs_rejected"] == len(rejected) + len(quarantine)
    for p in (out / "kept").glob("*.parquet"):
        assert pq.read_schema(p).equals(DOC_SCHEMA)
    for p in (out / "quarantine").glob("*.parquet"):
        assert pq.read_schema(p).equals(QUARANTINE_SCHEMA)
    assert len({d["id"] for d in kept}) == len(kept)
    for d in kept:
        assert d["text"].strip() and d["source"]
        assert d["lang"] is None or re.fullmatch(LANG_REGEX, d["lang"]), d["lang"]
        assert d["lang_score"] is None or 0.0 <= d["lang_score"] <= 1.0
    assert all(REASONS.fullmatch(r["reject_reason"]) for r in rejected)
    assert all(q["file"] and q["error"] for q in quarantine)
    return stats


# ------------------------------------------------------------------------------ random bytes
@FUZZ
@given(fmt=st.sampled_from(sorted(EXT)), data=st.data(), body=st.binary(max_size=3000))
def test_random_bytes_never_fail_a_reader(fmt: str, data: Any, body: bytes) -> None:
    head = data.draw(st.sampled_from(MAGIC[fmt]))
    with tmpdir() as d:
        src = d / f"in{EXT[fmt]}"
        src.write_bytes(head + body)
        stats = ingest(src, fmt)
        assert stats["docs_in"] >= (1 if fmt in ("html", "text") else 0)


@FUZZ
@given(body=st.binary(max_size=2000), cut=st.integers(0, 2000), zstd=st.booleans())
def test_cut_compressed_streams_keep_what_was_read(body: bytes, cut: int, zstd: bool) -> None:
    lines = b"".join(json.dumps({"id": str(i), "text": f"doc {i}"}).encode() + b"\n"
                     for i in range(20)) + body
    packed = zstandard.ZstdCompressor().compress(lines) if zstd else gzip.compress(lines)
    with tmpdir() as d:
        src = d / "in.jsonl.gz"
        src.write_bytes(packed[:cut])
        ingest(src, "jsonl")


# ------------------------------------------------------------------------------- random JSON
SURROGATE_TEXT = st.text(max_size=40) | st.sampled_from(["\ud800", "x\udfff", "\ud83d!", "\x00"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | SURROGATE_TEXT)
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(SURROGATE_TEXT, c, max_size=4), max_leaves=12)
FIELD = st.sampled_from(["id", "text", "lang", "lang_score", "url", "fetched_at", "source",
                         "other"])
LANGS = st.sampled_from(["EN", "en_US", "en-us", "eng_Latn", "eng", "fr", "pt-BR", "English",
                         "", " ", "12", "x-y", "zh-Hant-TW"])
RECORD = st.dictionaries(FIELD, JSON | LANGS | st.floats(-10, 200), max_size=8)
HOSTILE_LINES = st.sampled_from([
    "[" * 100_000 + "]" * 100_000,  # past the parser's recursion limit
    '{"id": ' + "9" * 5000 + ', "text": "long int"}',  # past int()'s digit limit
    '{"id": "\\ud800", "text": "lone surrogate id"}',
    '{"id": "s", "text": "lone surrogate text \\udfff", "lang": "\\ud83d"}',
    '{"text": "deep meta", "m": ' + "[" * 900 + "]" * 900 + "}",
    '{"text": "huge score", "lang_score": 1e400}',
    '{"text": "score", "lang_score": ' + "1" * 400 + "}",
    '{"text": "year one", "fetched_at": "0001-01-01T00:00:00+05:00"}',
    "[1, 2]", '"just a string"', "null", '{"text": 5}', "\x00\x00", "{",
])


@FUZZ
@given(lines=st.lists(RECORD.map(json.dumps) | JSON.map(json.dumps) | HOSTILE_LINES,
                      min_size=1, max_size=12))
def test_random_json_lines_are_each_accounted_for(lines: list[str]) -> None:
    with tmpdir() as d:
        src = d / "in.jsonl"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        stats = ingest(src, "jsonl")
        assert stats["docs_in"] == sum(1 for line in lines if line.strip())


# ------------------------------------------------------------------------- random Arrow tables
def _bad_utf8_strings(values: list[bytes | None]) -> pa.Array:
    """A string column holding the given bytes, valid UTF-8 or not (Arrow does not check)."""
    b = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(b), b.buffers(), b.null_count)


def _column(kind: str, draw: Any, n: int) -> pa.Array:
    if kind == "text":
        return pa.array(draw(st.lists(st.text(max_size=60) | st.none(), min_size=n,
                                      max_size=n)), pa.string())
    if kind == "bad_utf8":
        return _bad_utf8_strings(draw(st.lists(st.binary(max_size=20) | st.none(), min_size=n,
                                               max_size=n)))
    if kind == "int":
        return pa.array(draw(st.lists(st.integers(-2**63, 2**63 - 1) | st.none(), min_size=n,
                                      max_size=n)), pa.int64())
    if kind == "float":
        return pa.array(draw(st.lists(st.floats() | st.none(), min_size=n, max_size=n)),
                        pa.float64())
    if kind == "lang":
        return pa.array(draw(st.lists(LANGS | st.none(), min_size=n, max_size=n)), pa.string())
    if kind == "list":
        return pa.array(draw(st.lists(st.lists(st.text(max_size=5), max_size=3) | st.none(),
                                      min_size=n, max_size=n)), pa.list_(pa.string()))
    if kind == "time":
        return pa.array(draw(st.lists(st.integers(-2**62, 2**62) | st.none(), min_size=n,
                                      max_size=n)), pa.timestamp("us"))
    return pa.nulls(n)


KINDS = ["text", "bad_utf8", "int", "float", "lang", "list", "time", "null"]


@st.composite
def tables(draw: Any) -> pa.Table:
    n = draw(st.integers(0, 12))
    names = draw(st.lists(st.sampled_from(["id", "lang", "lang_score", "url", "fetched_at",
                                           "source", "extra"]), unique=True, max_size=6))
    cols = {name: _column(draw(st.sampled_from(KINDS)), draw, n) for name in names}
    if draw(st.integers(0, 9)):  # mostly with a text column (without: all quarantined)
        cols["text"] = _column(draw(st.sampled_from(KINDS[:3])), draw, n)
    return pa.table(cols) if cols else pa.table({"x": pa.nulls(n)})


@FUZZ
@given(table=tables(), fmt=st.sampled_from(["parquet", "hf"]), group=st.integers(1, 5))
def test_random_arrow_tables_are_each_accounted_for(table: pa.Table, fmt: str,
                                                    group: int) -> None:
    with tmpdir() as d:
        src = d / ("in.parquet" if fmt == "parquet" else "in.arrow")
        if fmt == "parquet":
            pq.write_table(table, src, row_group_size=group)
        else:
            with pa.ipc.new_stream(src, table.schema) as w:
                w.write_table(table, max_chunksize=group)
        assert ingest(src, fmt)["docs_in"] == table.num_rows


@FUZZ
@given(table=tables(), at=st.floats(0.05, 0.95), junk=st.binary(min_size=1, max_size=64))
def test_damaged_parquet_is_quarantined_not_fatal(table: pa.Table, at: float,
                                                  junk: bytes) -> None:
    with tmpdir() as d:
        src = d / "in.parquet"
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=3, compression="zstd")
        data = bytearray(buf.getvalue())
        i = int(len(data) * at)
        data[i:i + len(junk)] = junk
        src.write_bytes(bytes(data))
        ingest(src, "parquet")


# ------------------------------------------------------------------------- WARC, pages, HTML
def _warc_record(rtype: str, headers: list[tuple[str, str]], body: bytes,
                 length: int | None) -> bytes:
    head = [f"WARC-Type: {rtype}", *(f"{k}: {v}" for k, v in headers)]
    if length is not None:
        head.append(f"Content-Length: {length}")
    return ("WARC/1.0\r\n" + "\r\n".join(head) + "\r\n\r\n").encode("utf-8", "replace") + \
        body + b"\r\n\r\n"


HTTP = st.builds(lambda status, ctype, body: f"HTTP/1.1 {status}\r\n{ctype}\r\n\r\n".encode()
                 + body, st.sampled_from(["200 OK", "404 Nope", "abc", ""]),
                 st.sampled_from(["Content-Type: text/html", "Content-Type: image/png",
                                  "Content-Encoding: gzip", "Transfer-Encoding: chunked", ""]),
                 st.binary(max_size=300) | st.just(b"<html><body><p>" + b"word " * 50))
WARC_RECORD = st.builds(
    lambda rtype, headers, body, fix: _warc_record(
        rtype, headers, body, len(body) if fix else None if fix is None else len(body) // 2),
    st.sampled_from(["response", "conversion", "request", "warcinfo", "", "respon\x00se"]),
    st.lists(st.tuples(st.sampled_from(["WARC-Target-URI", "WARC-Date", "WARC-Record-ID",
                                        "Content-Type", "WARC-Refers-To"]),
                       st.text(st.characters(max_codepoint=0x2FF, exclude_characters="\r\n"),
                               max_size=30)), max_size=4),
    HTTP | st.binary(max_size=200), st.sampled_from([True, True, False, None]))


@FUZZ
@given(records=st.lists(WARC_RECORD, max_size=6), wet=st.booleans(), gz=st.booleans())
def test_random_warc_records_never_fail(records: list[bytes], wet: bool, gz: bool) -> None:
    data = b"".join(records)
    with tmpdir() as d:
        src = d / ("in.warc.gz" if gz else "in.warc")
        src.write_bytes(gzip.compress(data) if gz else data)
        ingest(src, "wet" if wet else "warc")


MARKUP = st.lists(st.sampled_from([*"<>/=\"' \n&;!-", "a", "div", "p", "b", "script", "html",
                                    "body", "word "]), max_size=200).map("".join)


@FUZZ
@given(pages=st.lists(MARKUP.map(str.encode) | st.binary(max_size=300), min_size=1, max_size=4),
       names=st.lists(st.sampled_from(["a.html", "b.htm", "c.txt", "d.bin", "e.TXT"]),
                      min_size=4, max_size=4, unique=True))
def test_random_page_folders_never_fail(pages: list[bytes], names: list[str]) -> None:
    with tmpdir() as d:
        root = d / "pages"
        root.mkdir()
        for name, page in zip(names, pages, strict=False):
            (root / name).write_bytes(page)
        (root / "sub").mkdir()
        (root / "sub" / b"caf\xe9.txt".decode("utf-8", "surrogateescape")).write_bytes(b"x")
        stats = ingest(root, "auto")
        assert stats["docs_in"] == sum(1 for n in names[:len(pages)]
                                       if n.lower().endswith((".html", ".htm", ".txt"))) + 1


@FUZZ
@given(html=MARKUP | st.text(max_size=300), extractor=st.sampled_from(["trafilatura",
                                                                        "resiliparse"]),
       depth=st.integers(1, 50))
def test_extractors_never_raise(html: str, extractor: str, depth: int) -> None:
    r = html_extract.extract_checked(html, extractor, max_html_bytes=10_000, max_html_depth=depth)
    assert (r.text is None) == (r.reason is not None)
    assert r.reason in (None, "ingest.html_too_large", "ingest.html_too_deep",
                        "ingest.extract_failed", "ingest.empty_text")
    assert html_extract.nesting_depth(html) >= 0


@FUZZ
@given(data=st.binary(max_size=400), ctype=st.none() | st.text(max_size=40))
def test_decode_html_never_raises(data: bytes, ctype: str | None) -> None:
    assert isinstance(html_extract.decode_html(data, ctype), str)


# --------------------------------------------------------------------------------- filters
@st.composite
def documents(draw: Any) -> pa.Table:
    n = draw(st.integers(0, 8))
    texts = draw(st.lists(st.text(max_size=300) | st.sampled_from(["", " \n ", "a" * 2000,
                          "word " * 300, "lorem ipsum\n" * 40]), min_size=n, max_size=n))
    return pa.table({
        "id": pa.array([str(i) for i in range(n)], pa.string()),
        "text": pa.array(texts, pa.large_string()),
        "source": pa.array(["s"] * n, pa.string()),
        "url": pa.array(draw(st.lists(st.none() | st.text(max_size=30)
                                      | st.just("https://example.com/x"), min_size=n,
                                      max_size=n)), pa.string()),
        "fetched_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
        "lang": pa.array(draw(st.lists(st.none() | st.sampled_from(["en", "fr", "zh", "ja",
                                                                    "de", "xx", "en-US"]),
                                       min_size=n, max_size=n)), pa.string()),
        "lang_score": pa.array(draw(st.lists(st.none() | st.floats(0, 1, width=32),
                                             min_size=n, max_size=n)), pa.float32()),
        "meta": pa.nulls(n, pa.string()),
    }, schema=DOC_SCHEMA)


@pytest.fixture(scope="module")
def filter_configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from filterkit import write_blocklists

    from tasks.filters.base import REGISTRY, get_filter

    urls, words = write_blocklists(tmp_path_factory.mktemp("lists"))
    params = {"url_blocklist": {"path": str(urls)}, "word_blocklist": {"path": str(words)}}
    return {name: get_filter(name).Config(**params.get(name, {})) for name in REGISTRY}


@FUZZ
@given(docs=documents())
def test_filters_never_raise_on_random_documents(docs: pa.Table,
                                                 filter_configs: dict[str, Any]) -> None:
    from tasks.filter import first_failure, score_table

    scored = score_table(docs, filter_configs)
    assert scored.num_rows == docs.num_rows
    reasons, counts = first_failure(scored, filter_configs)
    assert len(reasons) == docs.num_rows
    assert all(c["first"] <= c["alone"] <= docs.num_rows for c in counts.values())



# ------------------------------------------------------------------- ids, language tags, scores
@FUZZ
@given(batches=st.lists(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 50)), max_size=30))
def test_id_set_is_a_set(batches: list[list[int]]) -> None:
    from tasks.ingest.ids import IdSet, repeated

    ids, ref = IdSet(), set()
    for keys in batches:
        arr = np.array(keys, np.uint64)
        seen_here: set[int] = set()
        expect = []
        for k in keys:
            expect.append(k in ref or k in seen_here)
            seen_here.add(k)
        assert repeated(arr, ids).tolist() == expect
        ids.add(arr)
        ref |= set(keys)
        assert len(ids) == len(ref)


@FUZZ
@given(tag=st.text(max_size=20) | LANGS | st.from_regex(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}",
                                                         fullmatch=True))
def test_language_tags_become_contract_tags_or_none(tag: str) -> None:
    from tasks.langid import normalize_tag

    norm = normalize_tag(tag)
    assert norm is None or re.fullmatch(LANG_REGEX, norm)
    assert norm is None or normalize_tag(norm) == norm  # idempotent


@FUZZ
@given(v=st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8))
def test_lang_scores_are_fractions_or_none(v: Any) -> None:
    from tasks.ingest.records import lang_score

    got = lang_score(v)
    assert got is None or 0.0 <= got <= 1.0


class _Serial:
    """The stage executor, in this process: per-shard markers as the runner writes them."""

    def shards(self, out: Any, fn: Any, jobs: Any, desc: str, resources: Any = None) -> list:
        from tasks.store import run_marked

        return [out.shard_done(k) or run_marked(str(out.shard_marker(k)), fn, *a)
                for k, a in jobs]

    def task(self, fn: Any, *args: Any, desc: str = "task") -> Any:
        return fn(*args)


@FUZZ
@given(files=st.lists(st.lists(st.sampled_from(["0", "1", "2", "0#00001", "x"]), max_size=6),
                      min_size=1, max_size=4))
def test_ids_are_unique_per_stage_by_construction(files: list[list[str]]) -> None:
    from tasks.ingest.ids import ORIGINAL_KEY, forget, make_unique
    from tasks.store import StageDir

    with tmpdir() as d:
        out = StageDir(d / "root", "ingest", "v")
        jobs = []
        for i, ids in enumerate(files):
            src = d / f"in{i}.jsonl"
            src.write_text("".join(json.dumps({"id": x, "text": f"file {i} row {j}"}) + "\n"
                                   for j, x in enumerate(ids)))
            jobs.append((f"{i:05d}", (str(src), f"{i:05d}", str(out.path), "jsonl", {}, CFG)))
        forget(out, [k for k, _ in jobs])
        stats = _Serial().shards(out, ingest_file, jobs, "ingest")
        renamed = make_unique(out, _Serial(), [(k, s["kept"]) for (k, _), s in
                                               zip(jobs, stats, strict=True)])
        kept = _rows(out.path, "kept")
        assert len({r["id"] for r in kept}) == len(kept)
        moved = [r for r in kept if r["meta"] and ORIGINAL_KEY in json.loads(r["meta"])]
        assert len(moved) == renamed
        for r in kept:  # renamed iff an earlier file has its id; the new id names the file
            i = int(r["text"].split()[1])
            orig = json.loads(r["meta"])[ORIGINAL_KEY] if r in moved else r["id"]
            assert (r in moved) == (orig in set().union(*map(set, files[:i])))
            assert r not in moved or r["id"].startswith(f"{orig}#{i:05d}")
