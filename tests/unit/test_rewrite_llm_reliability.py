"""LLM rewriting when things go wrong, against a real local HTTP server (tests/llmkit.py): an
answer no UTF-8 writer accepts, requests failing transiently, one model name served from two
places, a secret that must not travel through Dask, URLs with credentials in errors, and a
generation cache that is read per shard, not whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llmkit import FakeLLM, doc_shard, rewrite_cfg, rewrite_job

from tasks.llm import cache_model, normalize_url
from tasks.llm.base import storable
from tasks.llm.cache import GenerationCache, compact
from tasks.llm.redact import scrub_urls, scrubbed_errors
from tasks.rewrite import rewrite_llm


def _rewrites(path: str | Path) -> list[dict[str, Any]]:
    t = pq.read_table(path)
    return t.filter(pa.compute.is_valid(t["rewritten_from"])).to_pylist()


def test_an_answer_with_a_lone_surrogate_is_cached_and_written(tmp_path: Path) -> None:
    assert storable("a\ud800b") == "a\ufffdb" and storable("\ud83d\ude00") == "\U0001f600"
    srv = FakeLLM(reply=lambda n: f"half a pair \ud83d here ({n})")  # sent as "\ud83d"
    cache = str(tmp_path / "c")
    try:
        out = rewrite_llm([rewrite_job(tmp_path, doc_shard(tmp_path, 3))],
                          rewrite_cfg(srv.url), cache)
        assert out["run"]["new_generations"] == 3 and out["shards"][0]["docs_kept"] == 6
        texts = [r["text"] for r in _rewrites(tmp_path / "out" / "kept-0.parquet")]
        assert len(texts) == 3 and all("pair \ufffd here" in t for t in texts)
        # cached as it arrived, so a re-run (another stage version) asks for nothing
        again = rewrite_llm([rewrite_job(tmp_path, doc_shard(tmp_path, 3), key="1")],
                            rewrite_cfg(srv.url), cache)
    finally:
        srv.close()
    assert again["run"]["cache_hits"] == 3 and len(srv.calls) == 3
    compact(cache)
    assert GenerationCache(cache).count() == 3


def test_transient_failures_are_rejected_for_this_run_and_retried_by_the_next(
        tmp_path: Path) -> None:
    down = {"number 1.": "503", "number 2.": "drop", "number 3.": "400"}

    def misbehave(content: str) -> str | None:
        return next((how for doc, how in down.items() if doc in content), None)

    srv = FakeLLM(misbehave=misbehave)
    job, cache = rewrite_job(tmp_path, doc_shard(tmp_path, 6)), str(tmp_path / "c")
    cfg = rewrite_cfg(srv.url, max_retries=2, breaker_threshold=100)
    try:
        first = rewrite_llm([job], cfg, cache)
        s = first["shards"][0]
        assert s["transient_failures"] == 2 and s["rejections"] == {
            "rewrite.transient_error": {"first": 2, "alone": 2},
            "rewrite.http_400": {"first": 1, "alone": 1}}
        assert s["docs_in"] == 12 and s["docs_kept"] == 9
        assert first["run"]["transient_requests"] == 2 and first["run"]["new_generations"] == 3
        assert not Path(job["marker"]).exists()  # not done: the next run redoes the shard
        assert GenerationCache(cache).count() == 3  # no failure is cached
        n = len(srv.calls)
        assert n == 3 + 2 * 3 + 1  # each transient one tried 1 + max_retries times; 400 once
        down.pop("number 1.")
        down.pop("number 2.")  # the server recovers
        second = rewrite_llm([job], cfg, cache)
    finally:
        srv.close()
    s = second["shards"][0]
    # only what failed transiently is asked again (and the 400: permanent failures are never
    # cached, but they are final: its shard is now done)
    assert len(srv.calls) == n + 3 and second["run"]["cache_hits"] == 3
    assert s["transient_failures"] == 0 and s["rejections"] == {
        "rewrite.http_400": {"first": 1, "alone": 1}}
    assert Path(job["marker"]).exists()
    assert sorted(r["rewritten_from"] for r in _rewrites(job["kept"])) == \
        ["d0", "d1", "d2", "d4", "d5"]
    third = rewrite_llm([job], cfg, cache)  # a finished shard: nothing at all
    assert third["run"]["requests"] == 0 and third["shards"][0] == s


def test_one_model_name_served_from_two_places_shares_no_answers(tmp_path: Path) -> None:
    assert normalize_url("HTTP://User:pw@LocalHost:80/v1/?k=1#f") == "http://localhost/v1"
    assert normalize_url("https://h:443/v1") == normalize_url("https://h/v1/")
    assert normalize_url("http://h:8000/v1") != normalize_url("http://h:8001/v1")
    a, b = FakeLLM(reply="from a"), FakeLLM(reply="from b")
    src, cache = doc_shard(tmp_path, 2), str(tmp_path / "c")
    try:
        rewrite_llm([rewrite_job(tmp_path, src, "a")], rewrite_cfg(a.url), cache)
        rewrite_llm([rewrite_job(tmp_path, src, "b")], rewrite_cfg(b.url), cache)
        # the same place spelled differently shares
        same = rewrite_llm([rewrite_job(tmp_path, src, "a2")],
                           rewrite_cfg(a.url.replace("http://", "HTTP://") + "/"),
                           cache)
    finally:
        a.close()
        b.close()
    assert len(a.calls) == 2 and len(b.calls) == 2 and same["run"]["cache_hits"] == 2
    assert {r["text"] for r in _rewrites(tmp_path / "out" / "kept-b.parquet")} == {"from b"}
    assert {r["model"] for r in _rewrites(tmp_path / "out" / "kept-b.parquet")} == {"fake"}
    # the stage version does not see base_url: only the answer cache key does
    assert cache_model(rewrite_cfg(a.url)) != cache_model(rewrite_cfg(b.url))


def test_a_secret_never_travels_through_dask(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.recipe import RewriteConfig
    from tasks.stage import RunInfo
    from tasks.stages.rewrite import _llm_job, run_llm
    from tasks.store import StageDir

    class RecordingExecutor:
        """Runs ``task`` inline and keeps what it was handed."""

        def __init__(self) -> None:
            self.handed: list[Any] = []

        def task(self, fn: Any, *args: Any, desc: str = "task") -> Any:
            self.handed.append((fn, args))
            return fn(*args)

    monkeypatch.setenv("DM_TEST_ENV_KEY", "sk-env-777")
    srv = FakeLLM(reply="auth was {auth}")
    root = tmp_path / "root"
    run = RunInfo("r1", None, root, None, secrets={"llm": "sk-secret-4242"}.__getitem__)
    src = doc_shard(tmp_path, 2)
    try:
        for i, how in enumerate(({"api_key_secret": "llm"}, {"api_key_env": "DM_TEST_ENV_KEY"})):
            out = StageDir(root, "rewrite", f"v{i}")
            monkeypatch.setenv("DATAMILL_LLM_CACHE", str(tmp_path / f"cache{i}"))
            ex = RecordingExecutor()
            cfg = RewriteConfig(backend="openai", base_url=srv.url, model="m",
                                prompt="wrap_easy", **how)
            body = run_llm(run, out, ex, cfg, [_llm_job(out, "0", "rewrite", str(src),
                                                        "rewrite")], "rewrite")
            texts = {r["text"] for r in _rewrites(root / body["outputs"]["kept"][0])}
            if "api_key_secret" in how:  # driven in this process: nothing handed to Dask
                assert ex.handed == [] and texts == {"auth was Bearer sk-secret-4242"}
            else:  # a worker reads the variable itself: only its name travels
                assert len(ex.handed) == 1 and texts == {"auth was Bearer sk-env-777"}
                assert "sk-env-777" not in repr(ex.handed)
            assert "sk-" not in json.dumps(body)
    finally:
        srv.close()


def test_urls_in_errors_lose_credentials_and_query(tmp_path: Path) -> None:
    from tasks.llm.openai_http import BackendConfigError

    assert scrub_urls("POST https://bob:s3cr3t@api.x.com:8443/v1/chat?key=abc failed") == \
        "POST https://***@api.x.com:8443/v1/chat?*** failed"
    assert scrub_urls("'http://h/v1#token=9' and http://h:1/v1") == "'http://h/v1?***' and " \
        "http://h:1/v1"
    srv = FakeLLM(misbehave=lambda c: "401")
    url = srv.url.replace("http://", "http://bob:s3cr3t@") + "?api_key=abc"
    try:
        with pytest.raises(BackendConfigError) as e:
            rewrite_llm([rewrite_job(tmp_path, doc_shard(tmp_path, 1))], rewrite_cfg(url),
                        str(tmp_path / "c"))
    finally:
        srv.close()
    msg = f"{type(e.value).__name__}: {e.value}"  # what the catalog's runs.error gets
    assert "401" in msg and "s3cr3t" not in msg and "abc" not in msg and "bob" not in msg
    # any other error, and its cause, come out scrubbed too
    with pytest.raises(ValueError) as e2, scrubbed_errors():
        try:
            raise OSError("connect to http://u:pw@h/v1?sig=1 failed")
        except OSError as inner:
            raise ValueError("while posting to http://u:pw@h/v1?sig=1") from inner
    assert "pw" not in str(e2.value) and "sig" not in str(e2.value.__cause__)


def test_the_cache_is_read_per_shard_not_whole(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    c = GenerationCache(tmp_path)
    keys = [f"{i:04d}" for i in range(2000)]
    for k in keys[:1000]:
        c.put({"key": k, "output": f"o{k}"})
    c.close()
    assert compact(tmp_path) == 1000
    for k in keys[1000:1500]:  # a second segment
        c.put({"key": k, "output": f"o{k}"})
    c.close()
    compact(tmp_path)
    seg_rows = [pq.read_metadata(p).row_group(0).num_rows
                for p in sorted((tmp_path / "segments").glob("*.parquet"))]
    assert len(seg_rows) == 2 and max(seg_rows) <= 64  # small, sorted row groups
    for k in keys[1500:1800]:  # an open log, and a writer that closes later
        c.put({"key": k, "output": f"o{k}"})
    reader = GenerationCache(tmp_path)
    read: list[int] = []
    orig = pq.ParquetFile.read_row_groups

    def counting(self: pq.ParquetFile, rgs: list[int], *a: Any, **kw: Any) -> pa.Table:
        if kw.get("columns") is None:
            read.extend(rgs)
        return orig(self, rgs, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", counting)
    want = {"0007", "0993", "1234", "1600", "1999", "nope"}
    got = reader.get_many(want)
    assert {k: v["output"] for k, v in got.items()} == {k: f"o{k}" for k in want - {
        "1999", "nope"}}
    assert len(read) == 3  # a row group per key found in a segment, of 16 + 8
    for k in keys[1800:]:  # appended since: the reader's log index catches up
        c.put({"key": k, "output": f"o{k}"})
    c.close()  # .open.jsonl renamed to .jsonl
    assert set(reader.get_many({"1700", "1999"})) == {"1700", "1999"}
    compact(tmp_path)  # the logs folded away after they were indexed
    assert set(reader.get_many({"1700", "1999", "0500"})) == {"1700", "1999", "0500"}
