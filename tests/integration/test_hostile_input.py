"""A hostile-input corpus through the real flow (up to ingest): every bad record becomes a
counted quarantine row or a rejection with a reason, every good record is kept, the ingest
contract holds, and the run completes within a minute. Then a run killed part-way through the
cross-input id step, re-run, gives the same output."""

from __future__ import annotations

import gzip
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from tasks.contracts import check_documents

pytestmark = pytest.mark.slow

WORDS = "with enough plain words in it to be an ordinary, perfectly good document"


def good(rid: str, **kw: Any) -> dict[str, Any]:
    return {"id": rid, "text": f"Record {rid}: a good one, {WORDS}.", **kw}


def jl(*recs: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


# hostile.jsonl, line by line: (line, what becomes of it)
HOSTILE: list[tuple[bytes, str]] = [
    (b"\xef\xbb\xbf" + json.dumps(good("good-0")).encode(), "kept"),  # behind a BOM
    (b"[" * 100_000 + b"]" * 100_000, "q:RecursionError"),
    (b'{"id": ' + b"7" * 5000 + b', "text": "an id too long for int()"}', "q:ValueError"),
    (b'{"id": "\\ud800", "text": "a lone surrogate id"}', "q:not valid Unicode"),
    (b"[1, 2, 3]", "q:not an object"),
    (b'{"id": "num", "text": 5}', "q:no string field"),
    (b"\x00\x00\x00", "q:invalid JSON"),
    (b'{"id": "big", "text": "' + b"x" * 2_000_000 + b'"}', "q:max_line_bytes"),
    (b'{"id": "latin", "text": "caf\xe9"}', "q:UTF-8"),
    (b'{"id": "deep-meta", "text": "deep", "m": ' + b"[" * 3000 + b"]" * 3000 + b"}",
     "q:RecursionError"),
    (json.dumps(good("good-1", lang="EN")).encode(), "kept"),
    (json.dumps(good("good-2", lang="en_US")).encode(), "kept"),
    (json.dumps(good("good-3", lang="en-us")).encode(), "kept"),
    (json.dumps(good("good-4", lang="eng_Latn")).encode(), "kept"),
    (json.dumps(good("good-5", lang="eng")).encode(), "kept"),
    (json.dumps(good("bad-lang", lang="English")).encode(), "r:ingest.bad_lang"),
    (json.dumps(good("good-6", lang="en", lang_score=93)).encode(), "kept"),
    (json.dumps(good("good-7", lang="en", lang_score="high")).encode(), "kept"),
    (json.dumps(good("good-8", lang="en", lang_score=250)).encode(), "kept"),
    (json.dumps(good("good-9", fetched_at="0001-01-01T00:00:00+05:00")).encode(), "kept"),
    (json.dumps(good("good-10", m=json.loads("[" * 400 + "]" * 400))).encode(), "kept"),
    (b"", "blank"),
    (json.dumps({"id": "blank-text", "text": " \n\t "}).encode(), "r:ingest.empty_text"),
    (json.dumps({"id": "good-0", "text": "the same id again"}).encode(),
     "r:ingest.duplicate_id"),
]


def _corrupt_parquet(path: Path) -> None:
    """30 rows in 3 row groups; the middle group's text page header is overwritten."""
    t = pa.table({"id": [f"pq-{i}" for i in range(30)],
                  "text": [f"Parquet row {i}, {WORDS}." for i in range(30)]})
    pq.write_table(t, path, row_group_size=10, compression="zstd")
    col = pq.ParquetFile(path).metadata.row_group(1).column(1)
    at = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    data[at:at + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def _bad_utf8(values: list[bytes]) -> pa.Array:
    b = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(b), b.buffers())


def _warc(path: Path) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    page = f"<html><head><title>t</title></head><body><article><p>{WORDS}. " * 5 + \
        "</p></article></body></html>"
    hh = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
    w.write_record(w.create_warc_record("http://ex.org/ok", "response",
                                        payload=io.BytesIO(page.encode()), http_headers=hh))
    path.write_bytes(buf.getvalue() + gzip.compress(b"WARC/1.0\r\nbroken"))


def build_corpus(root: Path) -> Path:
    c = root / "corpus"
    (c / "sub").mkdir(parents=True)
    (c / "pages").mkdir()
    # two symlinks to a parent folder: a `**` glob must still end
    os.symlink("..", c / "sub" / "up1")
    os.symlink("..", c / "sub" / "up2")
    (c / "hostile.jsonl").write_bytes(b"\n".join(line for line, _ in HOSTILE) + b"\n")
    (c / "empty.jsonl").write_bytes(b"")
    gz = gzip.compress(jl(*(good(f"gz-{i}") for i in range(200))))
    (c / "cut.jsonl.gz").write_bytes(gz[:len(gz) * 2 // 3])
    zst = b"".join(zstandard.ZstdCompressor().compress(jl(*(good(f"zst-{i}") for i in
                                                           range(lo, lo + 20))))
                   for lo in range(0, 200, 20))  # frames of 20 records: a cut keeps some
    (c / "cut.jsonl.zst").write_bytes(zst[:len(zst) * 2 // 3])
    # two dumps that both number their ids from 0
    (c / "dump_a.jsonl").write_bytes(jl(*(good(str(i), dump="a") for i in range(3))))
    (c / "sub" / "dump_b.jsonl").write_bytes(jl(*(good(str(i), dump="b") for i in range(3))))
    latin = os.fsdecode(bytes(c / "caf") + b"\xe9.jsonl")  # a name that is not UTF-8
    Path(latin).write_bytes(jl(good("latin-name")))
    texts = [f"Parquet string, {WORDS}.".encode(), b"caf\xe9 \xff", f"Fine, {WORDS}.".encode()]
    pq.write_table(pa.table({"id": ["pqs-0", "pqs-1", "pqs-2"], "text": _bad_utf8(texts)}),
                   c / "strings.parquet")
    _corrupt_parquet(c / "corrupt.parquet")
    hf = pa.table({"id": ["hf-0", "hf-1"], "text": _bad_utf8([f"Arrow row, {WORDS}.".encode(),
                                                              b"\xc3\x28 broken"])})
    with pa.ipc.new_stream(c / "ds.arrow", hf.schema) as w:
        w.write_table(hf)
    _warc(c / "crawl.warc.gz")
    (c / "unknown.xyz").write_bytes(b"what format is this?")
    (c / "pages" / "a.html").write_text(
        f"<html><body><article><p>An HTML page, {WORDS}. " * 5 + "</p></article></body></html>")
    (c / "pages" / "unclosed.html").write_text("<a" * 20_000)
    (c / "pages" / "deep.html").write_text("<div>" * 3000 + "deep" + "</div>" * 3000)
    (c / "pages" / "nul.txt").write_bytes(f"Plain text\x00 with a NUL, {WORDS}.".encode())
    recipe = {"name": "hostile", "data_root": str(root / "root"),
              "input": {"paths": [str(c / "**" / "*"), str(c / "pages")]},
              "stages": {"ingest": {"max_line_bytes": 1_000_000}}}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def rows(d: Path, sub: str) -> list[dict[str, Any]]:
    return [r for p in sorted((d / sub).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def hostile(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from flows.pipeline import run_recipe

    tmp = tmp_path_factory.mktemp("hostile")
    recipe = build_corpus(tmp)
    t0 = time.perf_counter()
    summary = run_recipe(str(recipe), until="ingest")
    seconds = time.perf_counter() - t0
    out = Path(summary["stages"][0]["output_path"])
    return {"summary": summary, "seconds": seconds, "out": out, "recipe": recipe,
            "manifest": json.loads((out / "manifest.json").read_text())}


def test_hostile_corpus_completes_with_everything_accounted_for(hostile: dict[str, Any]
                                                                ) -> None:
    assert hostile["summary"]["status"] == "completed"  # the ingest contract gate passed
    assert hostile["seconds"] < 60
    m, out = hostile["manifest"], hostile["out"]
    kept, rejected, quarantine = (rows(out, s) for s in ("kept", "rejected", "quarantine"))
    assert m["docs_in"] == m["docs_kept"] + m["docs_rejected"]
    assert (m["docs_kept"], m["quarantined"]) == (len(kept), len(quarantine))
    assert m["docs_rejected"] == len(rejected) + len(quarantine)
    assert check_documents("ingest", sorted((out / "kept").glob("*.parquet"))).ok

    by_id = {d["id"]: d for d in kept}
    by_file: dict[str, list[dict[str, Any]]] = {}
    for q in quarantine:
        by_file.setdefault(Path(q["file"]).name, []).append(q)
    # hostile.jsonl: each line kept, rejected with its reason or quarantined with its error
    reasons = {(r["id"], r["reject_reason"]) for r in rejected}
    q_hostile = {q["position"]: q["error"] for q in by_file.pop("hostile.jsonl")}
    for lineno, (line, fate) in enumerate(HOSTILE, 1):
        if fate == "kept":
            assert json.loads(line.decode("utf-8-sig"))["id"] in by_id, lineno
        elif fate.startswith("q:"):
            assert fate[2:] in q_hostile.pop(lineno), (lineno, q_hostile)
        elif fate.startswith("r:"):
            assert (json.loads(line)["id"], fate[2:]) in reasons, lineno
    assert not q_hostile
    assert [by_id[f"good-{i}"]["lang"] for i in range(1, 6)] == [
        "en", "en-US", "en-US", "en-Latn", "en"]
    assert by_id["good-6"]["lang_score"] == pytest.approx(0.93)
    for rid, raw in (("good-7", "high"), ("good-8", 250)):
        assert by_id[rid]["lang_score"] is None
        assert json.loads(by_id[rid]["meta"])["lang_score_unparsed"] == raw
    assert by_id["good-9"]["fetched_at"] is None
    # cut streams: what was read before the cut is kept, the rest is one quarantine row
    for name, prefix in (("cut.jsonl.gz", "gz"), ("cut.jsonl.zst", "zst")):
        got = sorted(int(i.split("-")[1]) for i in by_id if i.startswith(f"{prefix}-"))
        assert got and got == list(range(len(got))), name
        assert len(by_file.pop(name)) == 1
    # two dumps numbering from 0: all six kept; the later file's ids renamed, originals kept
    assert {by_id[str(i)]["meta"] and json.loads(by_id[str(i)]["meta"])["dump"]
            for i in range(3)} == {"a"}
    renamed = [d for d in kept if "#" in d["id"]]
    assert sorted(json.loads(d["meta"])["ingest_original_id"] for d in renamed) == ["0", "1",
                                                                                    "2"]
    assert {json.loads(d["meta"])["dump"] for d in renamed} == {"b"} and m["ids_renamed"] == 3
    assert "latin-name" in by_id and "caf\\xe9.jsonl" in {
        Path(f["path"]).name for f in m["files"]}
    assert {"pqs-0", "pqs-2", "hf-0"} <= set(by_id)
    assert [q["position"] for q in by_file.pop("strings.parquet")] == [1]
    assert [q["position"] for q in by_file.pop("ds.arrow")] == [1]
    # a corrupt page: its row group's 10 rows quarantined, the other 20 kept
    assert {f"pq-{i}" for i in (*range(10), *range(20, 30))} <= set(by_id)
    assert [q["position"] for q in by_file.pop("corrupt.parquet")] == list(range(10, 20))
    assert "http://ex.org/ok" in {d["url"] for d in kept}
    assert len(by_file.pop("crawl.warc.gz")) == 1
    assert "cannot tell the format" in by_file.pop("unknown.xyz")[0]["error"]
    assert not by_file, by_file
    pages = {json.loads(r["meta"])["path"]: r["reject_reason"] for r in rejected
             if r["meta"] and "path" in json.loads(r["meta"])}
    assert pages == {"unclosed.html": "ingest.empty_text", "deep.html": "ingest.html_too_deep"}
    assert sum(1 for d in kept if d["source"] == "pages") == 2  # a.html, nul.txt
    assert all("\x00" not in d["text"] for d in kept)


def _snapshot(out: Path) -> dict[str, Any]:
    return {sub: {p.name: pq.read_table(p).to_pylist() for p in sorted((out / sub).glob("*"))}
            for sub in ("kept", "rejected", "quarantine")}


def test_a_rerun_after_a_kill_in_the_id_step_gives_the_same_output(hostile: dict[str, Any]
                                                                   ) -> None:
    """Killed after the per-input shards and while renaming ids (one input to re-read too):
    the re-run redoes the id decision and the renames, with the same result."""
    from flows.pipeline import run_recipe

    out = hostile["out"]
    before = _snapshot(out)
    (out / "manifest.json").unlink()
    (out / "ids" / "decided.json").unlink()
    for marker in (out / "_shards").glob("ids-*.json"):
        marker.unlink()
    dump_b = next(k for k, f in enumerate(hostile["manifest"]["files"])
                  if f["path"].endswith("dump_b.jsonl"))
    (out / "_shards" / f"{dump_b:05d}.json").unlink()  # this input is read again
    summary = run_recipe(str(hostile["recipe"]), until="ingest")
    assert summary["status"] == "completed"
    assert Path(summary["stages"][0]["output_path"]) == out
    assert _snapshot(out) == before
    m = json.loads((out / "manifest.json").read_text())
    assert {k: m[k] for k in ("docs_in", "docs_kept", "docs_rejected", "ids_renamed")} == {
        k: hostile["manifest"][k] for k in ("docs_in", "docs_kept", "docs_rejected",
                                            "ids_renamed")}
