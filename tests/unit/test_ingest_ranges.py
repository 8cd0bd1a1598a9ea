"""Large JSONL inputs read in byte ranges (tasks/ingest/ranges.py, readers/jsonl.py) and the
block reader itself: every line is read once, by exactly one range, with the number, offset
and id it has in a read of the whole input, whatever the cut; the stage's output (ids,
texts, rejections, quarantine, counts) is the unsplit run's; a re-run after a kill gives the
same output. And orjson, where it parses a line, gives what ``json`` gives."""

from __future__ import annotations

import gzip
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.ingest.plan import run_shards, shard_jobs
from tasks.ingest.ranges import plan
from tasks.ingest.readers import jsonl
from tasks.ingest.records import ReadContext
from tasks.recipe import IngestConfig
from tasks.store import StageDir, merge_counts, run_marked

FUZZ = settings(max_examples=int(os.environ.get("DATAMILL_FUZZ_EXAMPLES", 12)), deadline=None,
                database=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.function_scoped_fixture])
MAX_LINE = 80


def _lines() -> bytes:
    recs = [b"\xef\xbb\xbf" + json.dumps({"id": "bom", "text": "behind a BOM"}).encode()]
    for i in range(12):
        recs.append(json.dumps({"id": f"r{i}", "text": f"record {i}"}).encode())
        if i % 4 == 1:
            recs.append(json.dumps({"text": f"no id {i}"}).encode())  # id from the position
        if i % 5 == 2:
            recs += [b"", b"   \t", b'{"id": "bad", "text": ', b'{"id":"crlf","text":"x"}\r']
        if i % 6 == 3:
            recs += [b'{"id": "long", "text": "' + b"y" * 120 + b'"}', b'{"text": "caf\xe9"}']
    recs.append(json.dumps({"id": "last", "text": "no newline after me"}).encode())
    return b"\n".join(recs)  # no final newline


def _part(data: bytes, start: int, end: int | None) -> dict[str, Any]:
    return {"start": start, "end": end, "lines_before": data[:start].count(b"\n"),
            "at_line_start": start == 0 or data[start - 1:start] == b"\n", "seek": start,
            "zstd": False}


def _read(path: Path, part: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Every record and quarantine row the reader gives, in order."""
    ctx = ReadContext(path, {}, IngestConfig(max_line_bytes=MAX_LINE), "src", part)
    out: list[tuple[Any, ...]] = []
    for b in jsonl.read_jsonl(path, ctx):
        out += [("q", q["position"], q["offset"], q["error"], q["raw"]) for q in b.quarantine]
        out += list(zip(b.pos, b.cols["id"], b.cols["text"], strict=True))
    return sorted(out, key=lambda r: (r[1] if r[0] == "q" else r[0]))


def test_block_size_does_not_change_what_is_read(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(_lines())
    whole = _read(src)
    ids = [r[1] for r in whole if r[0] != "q"]
    assert ids[0] == "bom" and ids[-1] == "last" and "crlf" in ids
    errors = [r[3] for r in whole if r[0] == "q"]
    assert sum("longer than max_line_bytes" in e for e in errors) == 2
    assert sum("invalid UTF-8" in e for e in errors) == 2
    assert sum("invalid JSON" in e for e in errors) == 2
    for block in (1, 2, 3, 7, 64, 81, 82, 200):
        monkeypatch.setattr(jsonl, "BLOCK", block)
        assert _read(src) == whole, block


def test_two_ranges_cut_at_every_byte_read_each_line_once(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    data = _lines()
    src = tmp_path / "in.jsonl"
    src.write_bytes(data)
    whole = _read(src)
    monkeypatch.setattr(jsonl, "BLOCK", 16)  # lines across blocks, too
    for cut in range(len(data) + 1):
        got = _read(src, _part(data, 0, cut)) + _read(src, _part(data, cut, None))
        assert sorted(got, key=lambda r: r[1] if r[0] == "q" else r[0]) == whole, cut
    rng = random.Random(0)
    for _ in range(100):  # three and four ranges
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(2, 3)))
        bounds = [0, *cuts, None]
        got = [r for a, b in zip(bounds, bounds[1:], strict=False)
               for r in _read(src, _part(data, a, b))]  # type: ignore[arg-type]
        assert sorted(got, key=lambda r: r[1] if r[0] == "q" else r[0]) == whole, cuts


def test_plain_plan_cuts_at_line_starts(tmp_path: Path) -> None:
    data = _lines() + b"\n"
    src = tmp_path / "in.jsonl"
    src.write_bytes(data)
    assert plan(str(src), "jsonl", len(data)) is None  # not larger than a range
    for size in (1, 50, 100, 333):
        ranges = plan(str(src), "auto", size)
        assert ranges and ranges[0]["start"] == 0 and ranges[-1]["end"] is None
        for r, nxt in zip(ranges, ranges[1:], strict=False):
            assert r["end"] == nxt["start"] and data[nxt["start"] - 1:nxt["start"]] == b"\n"
            assert nxt["lines_before"] == data[:nxt["start"]].count(b"\n")
        assert [x for r in ranges for x in _read(src, r)] == _read(src)
    gz = tmp_path / "in.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    assert plan(str(gz), "jsonl", 10) is None  # gzip is read whole
    txt = tmp_path / "in.txt"
    txt.write_bytes(data)
    assert plan(str(txt), "auto", 10) is None  # so are other formats


def _zstd_frames(data: bytes, cuts: list[int]) -> bytes:
    c = zstandard.ZstdCompressor()
    bounds = [0, *cuts, len(data)]
    return b"".join(c.compress(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))


def test_zstd_frames_are_ranges_and_lines_across_frames_read_once(tmp_path: Path) -> None:
    data = _lines() + b"\n"
    rng = random.Random(1)
    src = tmp_path / "in.jsonl.zst"
    plain = tmp_path / "in.jsonl"
    plain.write_bytes(data)
    def unlabelled(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [(r[0], "src-?", r[2]) if str(r[1]).startswith("src-") else r for r in rows]

    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(2, 12)))  # mid-line, too
        src.write_bytes(_zstd_frames(data, cuts))
        whole = _read(src)  # ids of records without one name the file: compare the rest
        assert unlabelled(whole) == unlabelled(_read(plain))
        for size in (1, 40, 150):
            ranges = plan(str(src), "jsonl", size)
            if ranges is None:  # no two frame starts `size` apart: read whole
                assert size > 1
                continue
            assert all(r["zstd"] for r in ranges)
            got = [x for r in ranges for x in _read(src, r)]
            assert sorted(got, key=lambda r: r[1] if r[0] == "q" else r[0]) == whole
    src.write_bytes(zstandard.ZstdCompressor().compress(data))
    assert plan(str(src), "jsonl", 10) is None  # one frame: read whole
    src.write_bytes(_zstd_frames(data, [100, 200])[:-5])
    assert plan(str(src), "jsonl", 10) is None  # damaged: read whole, damage quarantined


# ------------------------------------------------------------------------------ the stage
class _Serial:
    """The stage executor, in this process: per-shard markers as the runner writes them."""

    def shards(self, out: Any, fn: Any, jobs: Any, desc: str, resources: Any = None) -> list:
        return [out.shard_done(k) or run_marked(str(out.shard_marker(k)), fn, *a)
                for k, a in jobs]

    def map(self, fn: Any, jobs: Any, desc: str) -> list:
        return [fn(*a) for a in jobs]

    def task(self, fn: Any, *args: Any, desc: str = "task") -> Any:
        return fn(*args)


def _files(tmp: Path, ids: list[list[str]]) -> list[Path]:
    out = []
    for i, rows in enumerate(ids):
        src = tmp / f"in{i}.jsonl"
        src.write_text("".join(
            (json.dumps({"text": f"file {i} row {j} has no id"}) if x == "-" else
             "{broken" if x == "!" else
             json.dumps({"id": x, "text": f"file {i} row {j}", "lang": "en" if j % 2 else "fr"}))
            + "\n" for j, x in enumerate(rows)))
        out.append(src)
    return out


def _stage(tmp: Path, files: list[Path], shard_bytes: int) -> dict[str, Any]:
    out = StageDir(tmp / "root", "ingest", f"v{shard_bytes}")
    cfg = IngestConfig(lang_id="off", shard_max_bytes=shard_bytes)
    jobs = shard_jobs(files, str(out.path), "jsonl", {}, cfg, _Serial())
    stats, renamed = run_shards(out, _Serial(), jobs)
    kept = [r for rel in sorted(k for s in stats for k in s["kept"])  # the manifest's order
            for r in pq.read_table(out.path / rel).to_pylist()]
    rows = {sub: sorted((r for p in (out.path / sub).glob("*.parquet")
                         for r in pq.read_table(p).to_pylist()), key=repr)
            for sub in ("rejected", "quarantine")}
    langs: dict[str, int] = {}
    for s in stats:
        for k, v in s["langs"].items():
            langs[k] = langs.get(k, 0) + v
    assert all(pq.ParquetFile(out.path / k).metadata.num_rows for s in stats for k in s["kept"])
    return {"jobs": len(jobs), "kept": kept, **rows, "counts": merge_counts(stats),
            "renamed": renamed, "langs": {k: v for k, v in langs.items() if v}, "out": out}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for k in ("kept", "rejected", "quarantine", "counts", "renamed", "langs"):
        assert a[k] == b[k], k


IDS = [["a0", "a1", "-", "a2", "b0", "a1", "!", "a3", "-", "a0#00001", "a4", "a5", "a2", "c"] * 2,
       ["a1", "b0", "b1", "-", "a1", "b2", "a0"], ["c", "a0#00002", "a0"]]


def _expected(ids: list[list[str]]) -> tuple[int, int]:
    """Repeats within an input (rejected) and ids an earlier input has (renamed)."""
    seen: set[str] = set()
    dups = renamed = 0
    for rows in ids:
        mine = [x for x in rows if x not in ("-", "!")]
        dups += len(mine) - len(set(mine))
        renamed += len(set(mine) & seen)
        seen |= set(mine)
    return dups, renamed


def test_a_split_input_gives_the_unsplit_output(tmp_path: Path) -> None:
    files = _files(tmp_path, IDS)
    whole = _stage(tmp_path, files, 10**9)
    split = _stage(tmp_path, files, 200)
    assert whole["jobs"] == 3 and split["jobs"] > 6
    _same(split, whole)
    dups, renamed = _expected(IDS)
    reasons = [r["reject_reason"] for r in split["rejected"]]
    assert reasons.count("ingest.duplicate_id") == dups and split["renamed"] == renamed
    dups = sorted(p.name for p in (split["out"].path / "rejected").glob("*-dups.parquet"))
    assert dups and all(d.startswith("part-00000.") for d in dups)
    ids = [r["id"] for r in split["kept"]]
    assert len(ids) == len(set(ids))
    assert "a0#00001-2" in ids and "a0#00002-2" in ids  # the plain new id was taken


@pytest.mark.parametrize("local_bytes", [0, 1_000])
def test_lines_counted_on_the_workers_or_here_plan_the_same_ranges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_bytes: int) -> None:
    """Plain inputs past LOCAL_COUNT_BYTES (all of them at 0, the first one at 1,000) have
    their lines counted by the executor's map; the ranges and the output are the same."""
    from tasks.ingest import plan

    files = _files(tmp_path, IDS)
    cfg = IngestConfig(lang_id="off", shard_max_bytes=200)
    here = shard_jobs(files, str(tmp_path / "out"), "jsonl", {}, cfg, _Serial())
    mapped: list[int] = []

    class Counting(_Serial):
        def map(self, fn: Any, jobs: Any, desc: str) -> list:
            mapped.append(len(jobs))
            return super().map(fn, jobs, desc)

    monkeypatch.setattr(plan, "LOCAL_COUNT_BYTES", local_bytes)
    there = shard_jobs(files, str(tmp_path / "out"), "jsonl", {}, cfg, Counting())
    # a count per range but each input's last, for the inputs past the budget
    cuts = [plan.ranges.plain_cuts(str(f), 200) for f in files]
    assert cuts[0] and cuts[0][-1] > 1_000 and cuts[1] and cuts[1][-1] <= 1_000
    expect = sum(len(c) - 1 for c in cuts if c) if local_bytes == 0 else len(cuts[0]) - 1
    assert there == here and mapped == [expect]
    _same(_stage(tmp_path / "w", files, 200), _stage(tmp_path / "h", files, 10**9))


def test_a_rerun_after_a_kill_gives_the_same_output(tmp_path: Path) -> None:
    files = _files(tmp_path, IDS)
    first = _stage(tmp_path, files, 200)
    out = first["out"]
    shards = out.path / "_shards"
    # killed during the id step: decision and some renames gone
    (out.path / "ids" / "decided.json").unlink()
    for m in sorted(shards.glob("ids-*.json"))[:2]:
        m.unlink()
    _same(_stage(tmp_path, files, 200), first)
    # killed while reading: one range of the split input unfinished (all of it is read again)
    before = {m.name: m.stat().st_mtime_ns for m in shards.glob("0*.json")}
    (shards / "00000.0002.json").unlink()
    _same(_stage(tmp_path, files, 200), first)
    again = {m.name for m in shards.glob("0*.json") if m.stat().st_mtime_ns != before[m.name]}
    assert again == {k for k in before if k.startswith("00000.")}


@FUZZ
@given(ids=st.lists(st.lists(st.sampled_from(["0", "1", "2", "0#00001", "x", "-", "!"]),
                             max_size=14), min_size=1, max_size=3),
       size=st.integers(30, 400))
def test_split_or_not_the_same_output(tmp_path: Path, ids: list[list[str]], size: int) -> None:
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    files = _files(d, ids)
    _same(_stage(d, files, size), _stage(d, files, 10**9))


# ------------------------------------------------------------------------------ parsing
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=8) | st.sampled_from(["\ud800", "a\udfff", 10**19, -2**63 - 1, 2**64]),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
    max_leaves=10)
RAW = st.sampled_from([b"NaN", b"1e400", b"-1e400", b"[1,]", b"{\"a\":1,\"a\":2}", b"-0",
                       b"18446744073709551616", b"\"\\ud800\"", b"\"\xed\xa0\x80\"", b"\xff",
                       b"[" * 2000 + b"]" * 2000, b"1" * 5000, b"{\"a\":\"x\ty\"}", b" {} "])


@settings(max_examples=300, deadline=None, database=None)
@given(value=JSON | RAW)
def test_a_line_parses_as_json_parses_it(value: Any) -> None:
    line = value if isinstance(value, bytes) else json.dumps(value).encode()
    try:
        want: Any = repr(json.loads(line.decode("utf-8")))
    except (ValueError, RecursionError) as e:
        want = type(e)
    try:
        got: Any = repr(jsonl.parse_line(line + b"\n"))
    except (ValueError, RecursionError) as e:
        got = type(e)
    assert got == want
