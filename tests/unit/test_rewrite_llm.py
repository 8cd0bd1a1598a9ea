"""LLM rewriting without a model: prompts, parsing, chunking, selection, backoff, the breaker,
the generation cache, and the HTTP backend against a real local HTTP server (stdlib) standing
in for a remote LLM service — including one that answers 500 for a while."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llmkit import FakeLLM, doc_shard, rewrite_cfg, rewrite_job

from tasks.llm.base import Request, Sampling
from tasks.llm.cache import GenerationCache, compact, request_key
from tasks.llm.openai_http import HTTPBackend
from tasks.llm.retry import Backoff, CircuitBreaker, OutageError
from tasks.prompts import BUILTIN, chunk_text, estimate_tokens, load_prompt, merge_chunks
from tasks.rewrite import rewrite_llm, select_mask


# ----------------------------------------------------------------------------- prompts
def test_published_prompt_families_are_all_there() -> None:
    fams: dict[str, list[str]] = {}
    for p in BUILTIN.values():
        fams.setdefault(p.family, []).append(p.name)
        assert p.user.count("{text}") == 1, p.name
    assert sorted(fams["wrap"]) == ["wrap_easy", "wrap_hard", "wrap_qa", "wrap_wikipedia"]
    assert len(fams["nemotron_cc"]) == 5
    assert fams["rewire"] == ["rewire"] and fams["nemotron_cc_math"] == ["nemotron_math_clean"]
    wrap = BUILTIN["wrap_easy"].messages("The cat sat.")
    assert wrap[0]["role"] == "system" and wrap[0]["content"].startswith("A chat between")
    assert wrap[1]["content"].endswith("The cat sat.") and "toddler" in wrap[1]["content"]
    comp = BUILTIN["wrap_qa"].completion("X")
    assert comp.startswith("A chat between") and "USER: Convert" in comp
    assert comp.endswith("ASSISTANT:")


def test_rewire_keeps_only_the_improved_response_and_rejects_without_markers() -> None:
    p = BUILTIN["rewire"]
    ans = ("<thinking starts>plan it<thinking ends>\n<improved response starts>\nBetter text."
           "\n<improved response ends> trailing chatter")
    assert p.parse(ans).text == "Better text."
    no_end = p.parse("<improved response starts> cut off by max_tokens")
    assert no_end.text is None and no_end.reason == "missing_marker"
    assert p.parse("just some answer").reason == "missing_marker"


def test_math_cleaning_no_useful_content_is_a_rejection() -> None:
    p = BUILTIN["nemotron_math_clean"]
    for ans in ("NO USEFUL CONTENT", '"NO USEFUL CONTENT"', "  `no useful content` \n"):
        r = p.parse(ans)
        assert r.text is None and r.reason == "no_useful_content"
    assert p.parse("Let $x^2 = 4$.").text == "Let $x^2 = 4$."


def test_nemotron_lead_ins_are_stripped_and_empty_answers_rejected() -> None:
    assert BUILTIN["nemotron_distill"].parse("Paraphrased Text: The gist.").text == "The gist."
    assert BUILTIN["nemotron_wikipedia"].parse(
        "Here is a paraphrased version:\nA B.").text == "A B."
    assert BUILTIN["wrap_hard"].parse("   ").reason == "empty_output"


def test_prompt_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("system: Be terse.\nuser: 'Summarise: {text}'\nreject_if: NOTHING\n")
    p = load_prompt(str(f))
    assert p.name == "mine" and p.messages("abc")[1]["content"] == "Summarise: abc"
    assert p.parse("NOTHING").text is None
    f.write_text("user: 'Summarise: {text}'\n")
    assert load_prompt(str(f)).digest() != p.digest()  # editing a prompt changes its digest
    (tmp_path / "bad.yaml").write_text("user: no placeholder\n")
    with pytest.raises(ValueError, match="text"):
        load_prompt(str(tmp_path / "bad.yaml"))
    with pytest.raises(ValueError, match="unknown prompt"):
        load_prompt("no_such_prompt")


# ----------------------------------------------------------------------------- chunking
def test_chunks_respect_the_budget_and_keep_order(sample_lines: list[str]) -> None:
    text = max((json.loads(x)["text"] for x in sample_lines), key=len)
    chunks = chunk_text(text, 120)
    assert len(chunks) > 1
    assert all(estimate_tokens(c) <= 120 for c in chunks)
    # nothing lost, nothing reordered: the words come back in order
    assert merge_chunks(chunks).split() == text.split()
    assert chunk_text("short text", 300) == ["short text"]
    one_long_sentence = " ".join(["word"] * 1000)
    assert all(estimate_tokens(c) <= 50 for c in chunk_text(one_long_sentence, 50))


# ----------------------------------------------------------------------------- selection
def test_selection_random_fraction_is_deterministic_and_about_right() -> None:
    ids = [f"doc-{i}" for i in range(4000)]
    cfg = {"sample_fraction": 0.25, "sample_seed": 7}
    a, b = select_mask(ids, None, cfg), select_mask(list(reversed(ids)), None, cfg)
    assert a == list(reversed(b))  # by id, not by position: any sharding picks the same docs
    assert 0.22 < sum(a) / len(a) < 0.28
    assert select_mask(ids, None, {**cfg, "sample_seed": 8}) != a
    assert all(select_mask(ids[:10], None, {"sample_fraction": 1.0}))


def test_selection_of_rejected_documents() -> None:
    ids = ["a", "b", "c", "d", "e"]
    reasons = ["gopher_quality.min_words", "exact_dedup.duplicate", None,
               "fineweb_quality.line_punct_ratio", "minhash_dedup.near_duplicate"]
    assert select_mask(ids, reasons, {}) == [True, False, False, True, False]
    assert select_mask(ids, reasons, {"recycle_rules": ["gopher_quality"]}) == \
        [True, False, False, False, False]


# ----------------------------------------------------------------------------- backoff, breaker
def test_backoff_is_exponential_with_full_jitter() -> None:
    b, rng = Backoff(base_s=1.0, cap_s=8.0), random.Random(0)
    for attempt, bound in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        ds = [b.delay(attempt, rng) for _ in range(300)]
        assert all(0 <= d <= bound for d in ds)
        assert max(ds) > 0.8 * bound and min(ds) < 0.2 * bound  # spread over the whole range


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_pauses_probes_and_closes() -> None:
    clock = FakeClock()
    br = CircuitBreaker(threshold=3, cooldown_s=10, max_outage_s=1000, clock=clock)
    for _ in range(2):
        br.record_failure()
    assert br.state == "closed" and br.healthy
    br.record_failure()
    assert br.state == "open" and br.opened_count == 1 and not br.healthy
    passed: list[float] = []

    def probe() -> None:
        br.before_request()
        passed.append(clock.t)
        time.sleep(0.5)
        br.record_failure()  # the probe failed: open again, longer cooldown

    t = threading.Thread(target=probe)
    t.start()
    time.sleep(0.2)
    assert not passed  # held while open
    clock.t = 11  # cooldown over: one probe goes (waiters re-check at least every second)
    time.sleep(1.2)
    assert passed == [11] and br.state == "half_open"
    br.record_failure()  # a request sent before the outage failing late: no longer pause
    assert br.state == "half_open"
    t.join(timeout=5)
    assert br.state == "open" and br.cooldown == 20
    clock.t = 32
    br.before_request()
    br.record_success()
    assert br.state == "closed" and br.healthy and br.cooldown == 10 and br.paused_s == 32


def test_breaker_gives_up_after_max_outage() -> None:
    clock = FakeClock()
    br = CircuitBreaker(threshold=1, cooldown_s=1, max_outage_s=5, clock=clock)
    br.record_failure()
    clock.t = 6
    with pytest.raises(OutageError):
        br.before_request()


# ----------------------------------------------------------------------------- cache
def test_cache_survives_a_torn_line_and_compacts(tmp_path: Path) -> None:
    c = GenerationCache(tmp_path)
    for i in range(3):
        c.put({"key": f"k{i}", "output": f"o{i}", "tokens_in": 1, "tokens_out": 2})
    # a writer killed mid-line leaves a torn last line in its open log
    (tmp_path / "log" / "999-dead.open.jsonl").write_text('{"key": "k9", "output": "x"}\n{"ke')
    assert set(GenerationCache(tmp_path).get_many({"k0", "k2", "k9", "kx"})) == \
        {"k0", "k2", "k9"}
    c.close()
    assert compact(tmp_path) == 3  # closed logs only; the dead writer's is not stale yet
    assert list((tmp_path / "segments").glob("*.parquet"))
    got = GenerationCache(tmp_path).get_many({"k1", "k9"})
    assert got["k1"]["output"] == "o1" and got["k9"]["output"] == "x"
    s = Sampling(temperature=0.5).as_key()
    assert request_key("t", "p", "m", "chat", s) != request_key("t", "p", "m", "chat",
                                                                 {**s, "temperature": 0.6})


# ----------------------------------------------------------------------------- a real HTTP server
@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    f = FakeLLM()
    yield f
    f.close()


def test_outage_then_recovery_completes_with_every_document(tmp_path: Path) -> None:
    srv = FakeLLM(fail_s=1.5)  # 1.5 s of 500s: the breaker opens, probes, recovers
    try:
        out = rewrite_llm([rewrite_job(tmp_path, doc_shard(tmp_path, 12))], rewrite_cfg(srv.url),
                          str(tmp_path / "cache"))
    finally:
        srv.close()
    s, run = out["shards"][0], out["run"]
    assert s["docs_in"] == 24 and s["docs_kept"] == 24 and s["docs_rejected"] == 0
    assert srv.failed >= 3 and run["breaker_opened"] >= 1 and run["retries"] == srv.failed
    assert run["new_generations"] == 12 and run["requests"] == 12 + srv.failed
    kept = pq.read_table(tmp_path / "out" / "kept-0.parquet")
    rw = kept.filter(pa.compute.is_valid(kept["rewritten_from"]))
    assert sorted(rw.column("rewritten_from").to_pylist()) == sorted(f"d{i}" for i in range(12))
    assert set(rw.column("prompt").to_pylist()) == {"wrap_easy"}
    assert set(rw.column("backend").to_pylist()) == {"openai"}
    assert rw.column("tokens_out").to_pylist() == [3] * 12


def test_rerun_makes_zero_requests_and_shares_generations(tmp_path: Path,
                                                          fake_llm: FakeLLM) -> None:
    src = doc_shard(tmp_path, 6)
    cache = str(tmp_path / "cache")
    rewrite_llm([rewrite_job(tmp_path, src)], rewrite_cfg(fake_llm.url), cache)
    assert len(fake_llm.calls) == 6
    # another stage version (another mixer setting, new output paths) over the same docs
    again = rewrite_llm([rewrite_job(tmp_path, src, key="1")],
                        rewrite_cfg(fake_llm.url, mix_ratio=2.0), cache)
    assert len(fake_llm.calls) == 6 and again["run"]["cache_hits"] == 6
    assert again["shards"][0]["rejections"] == {"rewrite.mix_ratio": {"first": 3, "alone": 3}}
    # a different sampling parameter is a different generation
    rewrite_llm([rewrite_job(tmp_path, src, key="2")],
                rewrite_cfg(fake_llm.url, temperature=0.1), cache)
    assert len(fake_llm.calls) == 12


def test_api_key_goes_only_in_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DM_TEST_KEY", "sk-secret-123")
    srv = FakeLLM(reply="auth was {auth}")
    try:
        cfg = rewrite_cfg(srv.url, api_key_env="DM_TEST_KEY")
        out = rewrite_llm([rewrite_job(tmp_path, doc_shard(tmp_path, 2))], cfg, str(tmp_path / "c"))
    finally:
        srv.close()
    kept = pq.read_table(tmp_path / "out" / "kept-0.parquet").column("text").to_pylist()
    assert "auth was Bearer sk-secret-123" in kept  # it reached the server...
    assert "sk-secret" not in json.dumps(cfg) + json.dumps(out)  # ...and nothing we keep
    b = HTTPBackend(srv.url, "m", Sampling(), api_key="sk-secret-123")
    assert "sk-secret" not in repr(b) and "sk-secret" not in json.dumps(b.stats())


def test_a_request_the_server_refuses_is_a_rejection_not_a_crash(tmp_path: Path) -> None:
    class Refuse(FakeLLM):
        pass

    srv = Refuse()
    srv.srv.RequestHandlerClass.do_POST = lambda self: (  # type: ignore[method-assign]
        self.rfile.read(int(self.headers["Content-Length"])), self.send_response(400),
        self.end_headers())
    try:
        out = rewrite_llm([rewrite_job(tmp_path, doc_shard(tmp_path, 3))], rewrite_cfg(srv.url),
                          str(tmp_path / "c"))
    finally:
        srv.close()
    s = out["shards"][0]
    assert s["docs_in"] == 6 and s["docs_kept"] == 3 and s["docs_rejected"] == 3
    rej = pq.read_table(tmp_path / "out" / "rej-0.parquet")
    assert set(rej.column("reject_reason").to_pylist()) == {"rewrite.http_400"}
    assert set(rej.column("reject_stage").to_pylist()) == {"rewrite"}
    assert out["run"]["new_generations"] == 0  # failures are not cached: a re-run retries


def test_http_backend_concurrency_is_bounded(fake_llm: FakeLLM) -> None:
    active, peak = [0], [0]
    lock = threading.Lock()
    orig = HTTPBackend.call

    def slow_call(self: HTTPBackend, req: Request) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        try:
            return orig(self, req)
        finally:
            with lock:
                active[0] -= 1

    b = HTTPBackend(fake_llm.url, "m", Sampling(), max_concurrency=3)
    b.call = slow_call.__get__(b)  # type: ignore[method-assign]
    got: list[str] = []
    b.run((Request(f"k{i}", messages=[{"role": "user", "content": str(i)}]) for i in range(20)),
          lambda r: got.append(r.key))
    b.close()
    assert sorted(got) == sorted(f"k{i}" for i in range(20)) and peak[0] == 3


def test_a_wrong_url_or_key_fails_the_stage_instead_of_rejecting_everything(
        tmp_path: Path) -> None:
    from tasks.llm.openai_http import BackendConfigError

    srv = FakeLLM()
    srv.srv.RequestHandlerClass.do_POST = lambda self: (  # type: ignore[method-assign]
        self.rfile.read(int(self.headers["Content-Length"])), self.send_response(401),
        self.end_headers())
    try:
        with pytest.raises(BackendConfigError, match="401"):
            rewrite_llm([rewrite_job(tmp_path, doc_shard(tmp_path, 3))], rewrite_cfg(srv.url),
                        str(tmp_path / "c"))
    finally:
        srv.close()
    assert not (tmp_path / "out" / "0.json").exists()  # no shard marked done


def test_post_filter_keeps_the_top_percent_by_quality(tmp_path: Path) -> None:
    from tasks.rewrite import quality_scores

    # answers whose share of alphabetic words varies: n words then a few numbers
    srv = FakeLLM(reply=lambda n: " ".join(["word"] * n + ["123"] * 4))
    try:
        out = rewrite_llm([rewrite_job(tmp_path, doc_shard(tmp_path, 8))],
                          rewrite_cfg(srv.url, keep_top_percent=50, mix_ratio=None,
                               quality_score="gopher_quality.alpha_words_frac"),
                          str(tmp_path / "c"))
    finally:
        srv.close()
    s = out["shards"][0]
    assert s["rewrites_kept"] == 4 and s["rejections"] == {
        "rewrite.post_filter": {"first": 4, "alone": 4}}
    kept = pq.read_table(tmp_path / "out" / "kept-0.parquet")
    kept = kept.filter(pa.compute.is_valid(kept["rewritten_from"]))
    rej = pq.read_table(tmp_path / "out" / "rej-0.parquet")
    spec = "gopher_quality.alpha_words_frac"
    assert min(quality_scores(kept, spec)) > max(quality_scores(rej, spec))
    with pytest.raises(ValueError, match="no column"):
        quality_scores(kept, "gopher_quality.nonsense")
