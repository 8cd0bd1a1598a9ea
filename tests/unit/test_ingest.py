"""Ingest turns files into the document table; bad input is quarantined and counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.ingest import InputError, expand_inputs, ingest_file
from tasks.recipe import IngestConfig
from tasks.schema import DOC_SCHEMA, check_documents

CFG = IngestConfig()


def _read(out: Path, sub: str) -> list[dict]:
    return [r for p in sorted((out / sub).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def _docs(n: int) -> list[dict]:
    return [{"id": f"d{i}", "text": f"document number {i}", "source": "s", "lang": "en",
             "url": f"https://example.org/{i}", "extra": i} for i in range(n)]


def test_jsonl_to_contract_table(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(d) for d in _docs(5)) + "\n")
    stats = ingest_file(str(src), "00000", str(tmp_path / "out"), "jsonl", {}, CFG)
    assert stats["docs_in"] == stats["docs_kept"] == 5 and stats["docs_rejected"] == 0
    t = pq.read_table(tmp_path / "out" / stats["kept"][0])
    check_documents(t)
    assert t.schema.equals(DOC_SCHEMA)
    row = t.to_pylist()[2]
    assert row["id"] == "d2" and row["url"] == "https://example.org/2" and row["lang"] == "en"
    assert json.loads(row["meta"]) == {"extra": 2}  # unmapped fields kept, not lost


def test_a_repeated_id_is_rejected_and_the_first_kept(tmp_path: Path) -> None:
    """The documents contract wants unique ids: an input repeating one (the sample does)
    keeps its first document and rejects the others, counted, across batches too."""
    docs = _docs(3)
    rows = [docs[0], docs[1], {**docs[0], "text": "another text, same id"}, docs[2], docs[1]]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(d) for d in rows) + "\n")
    stats = ingest_file(str(src), "00000", str(tmp_path / "out"), "jsonl", {}, CFG)
    assert (stats["docs_in"], stats["docs_kept"], stats["docs_rejected"]) == (5, 3, 2)
    assert stats["rejections"]["ingest.duplicate_id"] == {"first": 2, "alone": 2}
    kept = _read(tmp_path / "out", "kept")
    assert [r["id"] for r in kept] == ["d0", "d1", "d2"]
    assert kept[0]["text"] == "document number 0"
    rej = _read(tmp_path / "out", "rejected")
    assert [(r["id"], r["reject_reason"]) for r in rej] == [
        ("d0", "ingest.duplicate_id"), ("d1", "ingest.duplicate_id")]


def test_bad_lines_are_quarantined_and_good_ones_around_them_kept(tmp_path: Path) -> None:
    good = [json.dumps(d).encode() for d in _docs(4)]
    lines = [good[0], b"{not json", good[1], b'{"id": "x", "text": "caf\xe9"}', good[2],
             b"[1, 2]", b'{"id": "no-text"}', good[3]]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    stats = ingest_file(str(src), "00000", str(tmp_path / "out"), "jsonl", {}, CFG)
    assert stats["docs_in"] == 8 and stats["docs_kept"] == 4 and stats["quarantined"] == 4
    assert stats["docs_in"] == stats["docs_kept"] + stats["docs_rejected"]
    q = _read(tmp_path / "out", "quarantine")
    assert [r["position"] for r in q] == [2, 4, 6, 7]
    assert "invalid JSON" in q[0]["error"] and "UTF-8" in q[1]["error"]
    assert all(r["file"] == str(src) for r in q)
    assert [r["id"] for r in _read(tmp_path / "out", "kept")] == ["d0", "d1", "d2", "d3"]


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    payload = ("\n".join(json.dumps(d) for d in _docs(3000)) + "\n").encode()
    data = gzip.compress(payload)
    src = tmp_path / "cut.jsonl.gz"
    src.write_bytes(data[: len(data) // 2])
    stats = ingest_file(str(src), "00000", str(tmp_path / "out"), "auto", {}, CFG)
    assert 0 < stats["docs_kept"] < 3000
    q = _read(tmp_path / "out", "quarantine")
    assert len(q) == 1 and "unreadable stream" in q[0]["error"]
    assert stats["docs_in"] == stats["docs_kept"] + stats["docs_rejected"]


def test_gzip_and_empty_files(tmp_path: Path) -> None:
    src = tmp_path / "ok.jsonl.gz"
    src.write_bytes(gzip.compress(("\n".join(json.dumps(d) for d in _docs(7))).encode()))
    assert ingest_file(str(src), "00000", str(tmp_path / "o1"), "auto", {}, CFG)["docs_kept"] == 7
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    stats = ingest_file(str(empty), "00001", str(tmp_path / "o2"), "auto", {}, CFG)
    assert stats["docs_in"] == 0 and stats["kept"] == []


def test_parquet_with_field_mapping_and_wrong_schema(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"doc_id": ["a", "b"], "content": ["one text", "two text"],
                             "other": [1, 2]}), good, row_group_size=1)
    stats = ingest_file(str(good), "00000", str(tmp_path / "o1"), "auto",
                        {"id": "doc_id", "text": "content"}, CFG)
    rows = _read(tmp_path / "o1", "kept")
    assert [r["id"] for r in rows] == ["a", "b"] and rows[1]["text"] == "two text"
    assert rows[0]["source"] == "good" and json.loads(rows[0]["meta"]) == {"other": 1}
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"body": ["x", "y", "z"]}), bad)
    stats = ingest_file(str(bad), "00001", str(tmp_path / "o2"), "auto", {}, CFG)
    assert stats["docs_in"] == 3 and stats["quarantined"] == 3 and stats["docs_kept"] == 0
    assert "no text column" in _read(tmp_path / "o2", "quarantine")[0]["error"]


def test_too_long_and_empty_documents_are_rejected_with_a_reason(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    docs = [{"id": "long", "text": "x" * 500}, {"id": "blank", "text": "   "},
            {"id": "ok", "text": "fine"}]
    src.write_text("\n".join(json.dumps(d) for d in docs))
    stats = ingest_file(str(src), "00000", str(tmp_path / "out"), "jsonl", {},
                        IngestConfig(max_doc_chars=100))
    rej = {r["id"]: r["reject_reason"] for r in _read(tmp_path / "out", "rejected")}
    assert rej == {"long": "ingest.too_long", "blank": "ingest.empty_text"}
    assert stats["rejections"]["ingest.too_long"]["first"] == 1


def test_ids_are_stable_when_records_have_none(tmp_path: Path) -> None:
    src = tmp_path / "noid.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"t{i}"}) for i in range(3)))
    ids = []
    for run in ("a", "b"):
        ingest_file(str(src), "00000", str(tmp_path / run), "jsonl", {}, CFG)
        ids.append([r["id"] for r in _read(tmp_path / run, "kept")])
    assert ids[0] == ids[1] and len(set(ids[0])) == 3


def test_shards_split_by_size_and_rerun_does_not_double(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": str(i), "text": "y" * 1000}) for i in range(50)))
    cfg = IngestConfig(shard_max_bytes=10_000)
    for _ in range(2):  # a re-run of the same file replaces its shards
        stats = ingest_file(str(src), "00000", str(tmp_path / "out"), "jsonl", {}, cfg)
    assert len(stats["kept"]) == 5
    assert len(_read(tmp_path / "out", "kept")) == 50


def test_empty_glob_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothing-\*\.jsonl"):
        expand_inputs([str(tmp_path / "nothing-*.jsonl")])


# ----------------------------------------------------------------------------- bad input
def _lines(n: int) -> bytes:
    return ("\n".join(json.dumps(d) for d in _docs(n)) + "\n").encode()


def test_truncated_zstd_keeps_what_was_read(tmp_path: Path) -> None:
    import zstandard

    data = zstandard.ZstdCompressor().compress(_lines(3000))
    src = tmp_path / "cut.jsonl.zst"
    src.write_bytes(data[: len(data) // 2])  # python-zstandard alone would end silently here
    stats = ingest_file(str(src), "00000", str(tmp_path / "out"), "auto", {}, CFG)
    assert 0 < stats["docs_kept"] < 3000
    q = _read(tmp_path / "out", "quarantine")
    assert len(q) == 1 and "unreadable stream" in q[0]["error"] and "truncated" in q[0]["error"]
    assert q[0]["position"] == stats["docs_kept"] + 1  # the first line not read
    assert stats["docs_in"] == stats["docs_kept"] + stats["docs_rejected"]


def test_a_100_mb_line_is_skipped_without_being_held(tmp_path: Path) -> None:
    import tracemalloc

    src = tmp_path / "huge.jsonl"
    with open(src, "wb") as fh:
        fh.write(json.dumps({"id": "before", "text": "fine"}).encode() + b"\n")
        fh.write(b'{"id": "huge", "text": "')
        block = b"x" * 2**20
        for _ in range(100):
            fh.write(block)
        fh.write(b'"}\n')
        fh.write(json.dumps({"id": "after", "text": "fine too"}).encode() + b"\n")
    tracemalloc.start()
    try:
        stats = ingest_file(str(src), "00000", str(tmp_path / "out"), "jsonl", {}, CFG)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 * 2**20, peak  # the default max_line_bytes (16 MiB) + a chunk, not 100 MB
    assert [r["id"] for r in _read(tmp_path / "out", "kept")] == ["before", "after"]
    q = _read(tmp_path / "out", "quarantine")
    assert len(q) == 1 and q[0]["position"] == 2 and q[0]["offset"] == len(
        json.dumps({"id": "before", "text": "fine"})) + 1
    assert "max_line_bytes" in q[0]["error"] and q[0]["raw"].startswith('{"id": "huge"')
    assert stats["docs_in"] == 3 and stats["docs_rejected"] == 1


def test_empty_inputs_of_every_format(tmp_path: Path) -> None:
    import io

    import zstandard
    from warcio.warcwriter import WARCWriter

    (tmp_path / "a.jsonl.zst").write_bytes(b"")
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b""))
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "d.jsonl").write_bytes(b"\n\n  \n")
    (tmp_path / "e.warc.gz").write_bytes(b"")
    buf = io.BytesIO()
    WARCWriter(buf, gzip=True)  # a writer that wrote nothing
    (tmp_path / "f.warc.wet.gz").write_bytes(buf.getvalue())
    (tmp_path / "g").mkdir()  # an empty folder
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "h.parquet")
    hf = tmp_path / "i"
    hf.mkdir()
    (hf / "dataset_info.json").write_text("{}")
    with pa.OSFile(str(hf / "data-00000-of-00001.arrow"), "wb") as sink:
        pa.ipc.new_stream(sink, pa.schema([("text", pa.string())])).close()
    for i, name in enumerate("abcdefghi"):
        path = next(tmp_path.glob(f"{name}*"))
        stats = ingest_file(str(path), f"{i:05d}", str(tmp_path / "out"), "auto", {}, CFG)
        assert (stats["docs_in"], stats["quarantined"], stats["kept"]) == (0, 0, []), name


def test_enormous_and_deeply_nested_html_are_rejected_not_fatal(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    body = "<p>A paragraph that is long enough to be the main content of this page.</p>"
    (site / "a_ok.html").write_text(f"<html><body><article>{body}</article></body></html>")
    (site / "b_big.html").write_text("<html><body>" + body * 100_000 + "</body></html>")
    deep = "<div>" * 200_000 + body + "</div>" * 200_000
    (site / "c_deep.html").write_text(f"<html><body>{deep}</body></html>")
    (site / "d_ok.htm").write_text(f"<html><body><article>{body}</article></body></html>")
    for extractor in ("trafilatura", "resiliparse"):
        cfg = SimpleNamespace(**{**CFG.model_dump(), "extractor": extractor})
        out = tmp_path / extractor
        stats = ingest_file(str(site), "00000", str(out), "html", {}, cfg)
        assert stats["docs_in"] == 4 and stats["docs_kept"] == 2
        rej = {json.loads(r["meta"])["path"]: r["reject_reason"] for r in _read(out, "rejected")}
        assert rej == {"b_big.html": "ingest.html_too_large", "c_deep.html": "ingest.html_too_deep"}
