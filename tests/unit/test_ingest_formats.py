"""Every input format, each from a real file of that format written here; language id and
normalisation at ingest; the stats the flow records."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tasks.ingest import (
    content_sha256,
    detect_format,
    expand_inputs,
    fingerprint,
    ingest_file,
)
from tasks.recipe import IngestConfig
from tasks.schema import DOC_SCHEMA
from tasks.store import file_sha256

ARTICLE = ("The river flooded the lower town twice that spring, and the council finally agreed "
           "to build the long stone wall that the engineers had proposed a decade earlier. ")
PAGE = ("<html><head><title>t</title></head><body><nav><a href='/'>Home menu</a> "
        "<a href='/a'>About menu</a></nav><article><h1>Flood</h1><p>{body}</p></article>"
        "<footer>Copyright footer text</footer></body></html>")
FR = ("Le conseil municipal a finalement accepté de construire le long mur de pierre que les "
      "ingénieurs avaient proposé dix ans plus tôt, après les inondations du printemps.")
ES = ("El consejo municipal aceptó por fin construir el largo muro de piedra que los "
      "ingenieros habían propuesto una década antes, después de las inundaciones.")


def cfg(**kw: Any) -> SimpleNamespace:
    """IngestConfig's values plus the new parameters (read with getattr by tasks/ingest.py)."""
    return SimpleNamespace(**{**IngestConfig().model_dump(), **kw})


def run(path: Path, out: Path, fmt: str = "auto", fields: dict | None = None,
        c: Any = None) -> dict[str, Any]:
    stats = ingest_file(str(path), "00000", str(out), fmt, fields or {}, c or IngestConfig())
    assert stats["docs_in"] == stats["docs_kept"] + stats["docs_rejected"]
    assert sum(stats["langs"].values()) == stats["docs_kept"]
    json.dumps(stats)  # the shard marker is JSON
    return stats


def read(out: Path, sub: str) -> list[dict]:
    return [r for p in sorted((out / sub).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def kept(out: Path) -> list[dict]:
    for p in sorted((out / "kept").glob("*.parquet")):
        assert pq.read_schema(p).equals(DOC_SCHEMA)
    return read(out, "kept")


# ----------------------------------------------------------------------------- WARC / WET
def _response(w: WARCWriter, uri: str, body: bytes, ctype: str | None = "text/html; charset=utf-8",
              status: str = "200 OK", date: str = "2024-03-04T05:06:07Z") -> Any:
    headers = [("Content-Type", ctype)] if ctype else []
    hh = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
    rec = w.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=hh)
    rec.rec_headers.replace_header("WARC-Date", date)
    return rec


def _write_warc(path: Path, records: list[tuple[str, Any]], gz: bool) -> list[int]:
    """records: (kind, args); returns each record's offset in the file."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    offsets = []
    for kind, args in records:
        offsets.append(buf.tell())
        if kind == "response":
            w.write_record(_response(w, *args))
        else:  # request / metadata / conversion / warcinfo with a plain payload
            uri, body = args
            rec = w.create_warc_record(uri, kind, payload=io.BytesIO(body))
            rec.rec_headers.replace_header("WARC-Date", "2024-03-04T05:06:07Z")
            w.write_record(rec)
    path.write_bytes(buf.getvalue())
    return offsets


@pytest.mark.parametrize("gz", [False, True])
def test_warc_responses_become_documents(tmp_path: Path, gz: bool) -> None:
    latin = PAGE.format(body="Un café crème au comptoir. " + ARTICLE).encode("latin-1")
    deep = b"<html><body>" + b"<div>" * 3000 + b"<p>deep</p>" + b"</div>" * 3000 + b"</body>"
    records = [
        ("warcinfo", ("", b"software: test")),
        ("request", ("http://ex.org/a", b"GET /a HTTP/1.1\r\nHost: ex.org\r\n\r\n")),
        ("response", ("http://ex.org/a", PAGE.format(body=ARTICLE).encode())),
        ("response", ("http://ex.org/img.png", b"\x89PNG....", "image/png")),
        ("response", ("http://ex.org/gone", PAGE.format(body="gone").encode(),
                      "text/html", "404 Not Found")),
        ("response", ("http://ex.org/latin", latin, "text/html; charset=iso-8859-1")),
        ("response", ("http://ex.org/big", PAGE.format(body=ARTICLE * 400).encode())),
        ("response", ("http://ex.org/deep", deep)),
        ("response", ("http://ex.org/empty", b"<html><body><script>1;</script></body></html>")),
        ("response", ("http://ex.org/noctype", PAGE.format(body=ARTICLE).encode(), None)),
        ("metadata", ("http://ex.org/a", b"fetchTimeMs: 12")),
    ]
    src = tmp_path / ("crawl.warc.gz" if gz else "crawl.warc")
    _write_warc(src, records, gz)
    assert detect_format(src, "auto") == "warc"
    stats = run(src, tmp_path / "out", c=cfg(max_html_bytes=40_000))
    docs = kept(tmp_path / "out")
    assert [d["url"] for d in docs] == ["http://ex.org/a", "http://ex.org/latin",
                                       "http://ex.org/noctype"]
    a = docs[0]
    assert "lower town twice" in a["text"] and "Home menu" not in a["text"]
    assert "Copyright footer" not in a["text"]
    assert a["fetched_at"].isoformat() == "2024-03-04T05:06:07+00:00"
    assert a["id"].startswith("urn:uuid:") and a["source"] == "crawl" and a["lang"] == "en"
    assert json.loads(a["meta"])["http_status"] == "200"
    assert "Un café crème" in docs[1]["text"]
    rej = {r["url"]: r["reject_reason"] for r in read(tmp_path / "out", "rejected")}
    assert rej == {"http://ex.org/big": "ingest.html_too_large",
                   "http://ex.org/deep": "ingest.html_too_deep",
                   "http://ex.org/empty": "ingest.empty_text"}
    # records that are not documents are skipped and counted, never docs_in
    assert stats["skipped"] == {"warc.http_status": 1, "warc.metadata": 1, "warc.non_html": 1,
                                "warc.request": 1, "warc.warcinfo": 1}
    assert stats["docs_in"] == 6 and stats["docs_kept"] == 3 and stats["quarantined"] == 0
    assert stats["langs"] == {"en": 3}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("damage", [
    b"GARBAGE/9.9\r\n",  # not a WARC record at all: warcio raises
    b"WARC/1.0\r\n\r\n",  # the header block ends at once: warcio reads it as a typeless record
])
def test_warc_broken_header_keeps_earlier_records(tmp_path: Path, gz: bool,
                                                  damage: bytes) -> None:
    records = [("response", (f"http://ex.org/{i}", PAGE.format(body=f"{i} {ARTICLE}").encode()))
               for i in range(4)]
    src = tmp_path / ("bad.warc.gz" if gz else "bad.warc")
    offsets = _write_warc(src, records, gz=False)
    data = src.read_bytes()
    bad = data[:offsets[2]] + damage + data[offsets[2] + len(b"WARC/1.0\r\n"):]
    src.write_bytes(gzip.compress(bad) if gz else bad)
    stats = run(src, tmp_path / "out")
    assert [d["url"] for d in kept(tmp_path / "out")] == ["http://ex.org/0", "http://ex.org/1"]
    q = read(tmp_path / "out", "quarantine")
    assert len(q) == 1 and q[0]["position"] == 2 and q[0]["offset"] == offsets[2]
    assert "rest of the file" in q[0]["error"] and stats["quarantined"] == 1


def test_truncated_warc_gz(tmp_path: Path) -> None:
    records = [("response", (f"http://ex.org/{i}", PAGE.format(body=f"{i} {ARTICLE}").encode()))
               for i in range(40)]
    src = tmp_path / "cut.warc.gz"
    _write_warc(src, records, gz=True)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    stats = run(src, tmp_path / "out")
    n = stats["docs_kept"]
    assert 10 < n < 40
    assert [d["url"] for d in kept(tmp_path / "out")] == [f"http://ex.org/{i}" for i in range(n)]
    q = read(tmp_path / "out", "quarantine")
    assert len(q) == 1 and q[0]["position"] == n and "EOFError" in q[0]["error"]


def test_wet_conversion_records(tmp_path: Path) -> None:
    src = tmp_path / "crawl.warc.wet.gz"
    text = "Line one of the page.\nLine two, with  double  spaces kept."
    _write_warc(src, [("warcinfo", ("", b"software: test")),
                      ("conversion", ("http://ex.org/x", text.encode())),
                      ("conversion", ("http://ex.org/fr", FR.encode())),
                      ("conversion", ("http://ex.org/bad", b"caf\xe9 not utf-8"))], gz=True)
    assert detect_format(src, "auto") == "wet"
    stats = run(src, tmp_path / "out")
    docs = kept(tmp_path / "out")
    assert [(d["url"], d["text"]) for d in docs] == [("http://ex.org/x", text),
                                                     ("http://ex.org/fr", FR)]
    assert docs[0]["fetched_at"] is not None and docs[1]["lang"] == "fr"
    assert stats["skipped"] == {"warc.warcinfo": 1} and stats["quarantined"] == 1
    assert "UTF-8" in read(tmp_path / "out", "quarantine")[0]["error"]
    assert stats["langs"] == {"en": 1, "fr": 1}


# ----------------------------------------------------------------------------- folders
def _site(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.html").write_text(PAGE.format(body=ARTICLE), encoding="utf-8")
    (root / "sub" / "b.htm").write_bytes(PAGE.format(body="Déjà vu. " + ARTICLE).encode("cp1252"))
    (root / "c.txt").write_text("A plain text file.\r\nSecond line.  \n", encoding="utf-8")
    (root / "d.png").write_bytes(b"\x89PNG")
    (root / ".hidden.txt").write_text("hidden")
    (root / "bad.txt").write_bytes(b"caf\xe9")


def test_folder_of_pages(tmp_path: Path) -> None:
    root = tmp_path / "site"
    _site(root)
    assert detect_format(root, "auto") == "files"
    stats = run(root, tmp_path / "out")
    docs = kept(tmp_path / "out")
    assert [json.loads(d["meta"])["path"] for d in docs] == ["a.html", "c.txt", "sub/b.htm"]
    assert all(d["source"] == "site" and d["url"] is None for d in docs)
    assert docs[1]["text"] == "A plain text file.\nSecond line."
    assert "Déjà vu" in docs[2]["text"] and "Home menu" not in docs[0]["text"]
    assert stats["skipped"] == {"files.png": 1} and stats["quarantined"] == 1  # bad.txt
    # ids: a hash of the relative path, stable across runs and machines
    again = run(root, tmp_path / "again")
    assert [d["id"] for d in kept(tmp_path / "again")] == [d["id"] for d in docs]
    assert again["docs_kept"] == 3
    # format html / text pick one kind
    assert run(root, tmp_path / "h", "html")["docs_kept"] == 2
    assert run(root, tmp_path / "t", "text")["docs_kept"] == 1


def test_folder_inputs_expand_and_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "site"
    _site(root)
    (tmp_path / "x.jsonl").write_text('{"text": "t"}\n')
    # a folder named by a pattern is one input; its files are not inputs of their own
    assert expand_inputs([str(root), str(root / "*.html"), str(tmp_path / "*.jsonl")]) == [
        root, tmp_path / "x.jsonl"]
    fp = fingerprint(root)
    assert fp["n_files"] == 6 and fp["size"] == sum(
        p.stat().st_size for p in root.rglob("*") if p.is_file())
    digest = content_sha256(root)
    assert digest == content_sha256(root) and len(digest) == 64
    (root / "sub" / "new.txt").write_text("new")
    assert fingerprint(root)["mtime_ns"] >= fp["mtime_ns"] and fingerprint(root) != fp
    assert content_sha256(root) != digest
    assert content_sha256(root / "c.txt") == file_sha256(root / "c.txt")


def test_big_text_file_is_rejected_unread(tmp_path: Path) -> None:
    root = tmp_path / "texts"
    root.mkdir()
    (root / "big.txt").write_text("x" * 5000)
    (root / "ok.txt").write_text("fine")
    stats = run(root, tmp_path / "out", c=cfg(max_line_bytes=1000))
    rej = read(tmp_path / "out", "rejected")
    assert [(json.loads(r["meta"])["path"], r["reject_reason"]) for r in rej] == [
        ("big.txt", "ingest.too_long")]
    assert stats["docs_kept"] == 1


# ----------------------------------------------------------------------------- HF on disk
def _arrow_stream(path: Path, table: pa.Table, batch_rows: int = 2) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        for b in table.to_batches(max_chunksize=batch_rows):
            w.write_batch(b)


def _hf_dir(d: Path, tables: list[pa.Table]) -> None:
    d.mkdir(parents=True)
    names = []
    for i, t in enumerate(tables):
        name = f"data-{i:05d}-of-{len(tables):05d}.arrow"
        _arrow_stream(d / name, t)
        names.append({"filename": name})
    (d / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (d / "state.json").write_text(json.dumps({"_data_files": names, "_split": None}))


def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    ds = tmp_path / "my_ds"
    t1 = pa.table({"content": ["first doc", "second doc", "third doc"], "n": [1, 2, 3]})
    t2 = pa.table({"content": ["fourth doc", None], "n": [4, 5]})
    _hf_dir(ds, [t1, t2])
    assert detect_format(ds, "auto") == "hf"
    assert expand_inputs([str(tmp_path / "*")]) == [ds]  # a dataset dir matches a glob
    stats = run(ds, tmp_path / "out", fields={"text": "content"})
    docs = kept(tmp_path / "out")
    assert [d["text"] for d in docs] == ["first doc", "second doc", "third doc", "fourth doc"]
    assert [json.loads(d["meta"])["n"] for d in docs] == [1, 2, 3, 4]
    assert docs[0]["source"] == "my_ds" and stats["quarantined"] == 1  # the null text
    assert read(tmp_path / "out", "quarantine")[0]["position"] == 4


def test_hf_dataset_dict_and_parquet_and_wrong_schema(tmp_path: Path) -> None:
    dd = tmp_path / "dd"
    _hf_dir(dd / "train", [pa.table({"text": ["tr one", "tr two"]})])
    _hf_dir(dd / "test", [pa.table({"text": ["te one"]})])
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    run(dd, tmp_path / "o1")
    docs = kept(tmp_path / "o1")
    assert [(d["text"], json.loads(d["meta"])["split"]) for d in docs] == [
        ("tr one", "train"), ("tr two", "train"), ("te one", "test")]
    pqd = tmp_path / "pq_ds" / "data"
    pqd.mkdir(parents=True)
    (tmp_path / "pq_ds" / "dataset_info.json").write_text("{}")
    pq.write_table(pa.table({"text": ["p1", "p2"]}), pqd / "train-00000.parquet")
    assert run(tmp_path / "pq_ds", tmp_path / "o2", "hf")["docs_kept"] == 2
    bad = tmp_path / "bad_ds"
    _hf_dir(bad, [pa.table({"body": ["x", "y", "z"]})])
    stats = run(bad, tmp_path / "o3")
    assert stats["docs_in"] == stats["quarantined"] == 3 and stats["docs_kept"] == 0
    assert "no text column" in read(tmp_path / "o3", "quarantine")[0]["error"]


# ----------------------------------------------------------------------------- JSONL
def test_jsonl_zstd_multi_frame_and_magic_bytes(tmp_path: Path) -> None:
    lines = [json.dumps({"id": str(i), "text": f"doc {i}"}) + "\n" for i in range(10)]
    c = zstandard.ZstdCompressor()
    src = tmp_path / "in.jsonl.zst"
    src.write_bytes(c.compress("".join(lines[:4]).encode()) + c.compress("".join(lines[4:])
                                                                         .encode()))
    assert run(src, tmp_path / "o1")["docs_kept"] == 10
    odd = tmp_path / "really_gzip.jsonl"  # the extension says plain; the bytes say gzip
    odd.write_bytes(gzip.compress("".join(lines).encode()))
    assert run(odd, tmp_path / "o2")["docs_kept"] == 10
    assert [d["id"] for d in kept(tmp_path / "o2")] == [str(i) for i in range(10)]


# ----------------------------------------------------------------------------- lang, normalise
def _jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n")
    return path


def test_language_is_identified_when_missing_and_filtered(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "in.jsonl", [
        {"id": "en", "text": ARTICLE}, {"id": "fr", "text": FR}, {"id": "es", "text": ES},
        {"id": "own", "text": ARTICLE, "lang": "fr-FR"},  # its own label is kept
        {"id": "noise", "text": "zxq vbn qwp lkj mnb"}])
    stats = run(src, tmp_path / "o1")
    got = {d["id"]: (d["lang"], d["lang_score"]) for d in kept(tmp_path / "o1")}
    assert got["en"][0] == "en" and got["fr"][0] == "fr" and got["es"][0] == "es"
    assert got["own"] == ("fr-FR", None) and got["en"][1] > 0.5
    assert stats["langs"]["fr"] == 1 and stats["langs"]["fr-FR"] == 1
    # always: relabel everything; allow-list and score threshold reject with reasons
    stats = run(src, tmp_path / "o2", c=cfg(lang_id="always", languages=["en", "fr"],
                                            min_lang_score=0.5))
    rej = {r["id"]: r["reject_reason"] for r in read(tmp_path / "o2", "rejected")}
    assert rej == {"es": "ingest.language", "noise": "ingest.lang_score"}
    assert {d["id"]: d["lang"] for d in kept(tmp_path / "o2")}["own"] == "en"
    assert stats["rejections"]["ingest.language"] == {"first": 1, "alone": 1}
    assert stats["langs"] == {"en": 2, "fr": 1}
    # off: nothing filled
    run(src, tmp_path / "o3", c=cfg(lang_id="off"))
    assert {d["lang"] for d in kept(tmp_path / "o3")} == {None, "fr-FR"}


def test_normalisation_at_ingest_and_switching_it_off(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([
        json.dumps({"id": "moji", "text": "Le cafÃ© est prÃªt.\r\nMerci  "}),
        json.dumps({"id": "ctrl", "text": "\x00\x07 \r\n"}),  # nothing left: empty
        json.dumps({"id": "surr", "text": "emoji cut \ud83d here"}),
    ]) + "\n")
    stats = run(src, tmp_path / "o1")
    docs = {d["id"]: d["text"] for d in kept(tmp_path / "o1")}
    assert docs == {"moji": "Le café est prêt.\nMerci", "surr": "emoji cut \ufffd here"}
    assert stats["rejections"]["ingest.empty_text"]["first"] == 1
    stats = run(src, tmp_path / "o2", c=cfg(normalize=False))
    docs = {d["id"]: d["text"] for d in kept(tmp_path / "o2")}
    assert docs["moji"] == "Le cafÃ© est prÃªt.\r\nMerci  " and "ctrl" in docs
    # a lone surrogate cannot be stored as UTF-8: quarantined, not a crash
    q = read(tmp_path / "o2", "quarantine")
    assert [r["position"] for r in q] == [3] and "Unicode" in q[0]["error"]
    assert stats["quarantined"] == 1
