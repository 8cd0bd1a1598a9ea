"""LLM rewriting against a real server: ``datamill llm serve`` (llama.cpp via xllamacpp, with
SmolLM2-135M) behind a counting proxy (tests/llmkit.py: a real HTTP server of our own that
counts every request, can hold them, and can answer 500 for a while). The model is tiny and
slow on 2 cores, so answers are capped at a few tokens and each test uses a handful of short
documents."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from llmkit import FakeLLM, Proxy

from tasks.recipe import RewriteConfig
from tasks.rewrite import rewrite_llm
from tasks.schema import DOC_SCHEMA
from tasks.store import write_parquet

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def llm_server() -> Iterator[str]:
    """The real thing: `datamill llm serve` in its own process."""
    pytest.importorskip("xllamacpp")
    from tasks.llm.embedded import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "llm", "serve", "--port", str(port),
         "--parallel", "2", "--ctx", "4096"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, "datamill llm serve exited before serving"
        url = json.loads(line)["base_url"]
        for _ in range(100):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def proxy(llm_server: str) -> Iterator[Proxy]:
    p = Proxy(llm_server)
    yield p
    p.close()


def _docs(sample_lines: list[str], n: int, chars: int = 280, offset: int = 0
          ) -> list[dict[str, Any]]:
    docs = [json.loads(x) for x in sample_lines]
    en = [d for d in docs if d.get("lang") == "en" and len(d["text"]) > chars][offset:offset + n]
    return [{"id": d["id"], "text": d["text"][:chars], "source": d["source"], "lang": "en"}
            for d in en]


def _shard(tmp: Path, docs: list[dict[str, Any]]) -> Path:
    n = len(docs)
    t = pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs],
                  "source": [d["source"] for d in docs], "url": [None] * n,
                  "fetched_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
                  "lang": ["en"] * n, "lang_score": pa.nulls(n, pa.float32()),
                  "meta": [None] * n}, schema=DOC_SCHEMA)
    p = tmp / "in.parquet"
    write_parquet(t, p)
    return p


def _job(tmp: Path, src: Path, key: str) -> dict[str, Any]:
    return {"key": key, "mode": "rewrite", "source": str(src),
            "kept": str(tmp / key / "kept.parquet"), "rejected": str(tmp / key / "rej.parquet"),
            "marker": str(tmp / key / "marker.json"), "reject_stage": "rewrite"}


FAMILIES = {  # one prompt per family; the reasons each may reject with
    "wrap_qa": {"rewrite.empty_output"},
    "nemotron_distill": {"rewrite.empty_output"},
    # 12 tokens cannot reach REWIRE's closing marker: the parse rejects, with its reason
    "rewire": {"rewrite.missing_marker"},
    "nemotron_math_clean": {"rewrite.no_useful_content", "rewrite.empty_output"},
}


def test_each_prompt_family_against_the_real_server(proxy: Proxy, sample_lines: list[str],
                                                    tmp_path: Path) -> None:
    # one document per family: the long published instructions cost most of the time here
    src = _shard(tmp_path, _docs(sample_lines, 1, chars=200))
    for name, allowed in FAMILIES.items():
        # one request at a time: the long instructions stay in llama.cpp's prompt cache
        cfg = RewriteConfig(backend="openai", base_url=proxy.url, model="smollm2", prompt=name,
                            max_tokens=12, temperature=0, max_concurrency=1).model_dump()
        out = rewrite_llm([_job(tmp_path, src, name)], cfg, str(tmp_path / "cache"))
        s = out["shards"][0]
        assert s["attempts"] == 1 and s["docs_in"] == s["docs_kept"] + s["docs_rejected"] == 2
        assert out["run"]["new_generations"] == 1 and s["tokens_in"] > 60 and s["tokens_out"] > 0
        kept = pq.read_table(tmp_path / name / "kept.parquet")
        rw = kept.filter(pa.compute.is_valid(kept["rewritten_from"])).to_pylist()
        assert len(rw) + s["docs_rejected"] == 1, name
        for r in rw:
            assert r["id"] == f"{r['rewritten_from']}~{name}" and r["prompt"] == name
            assert r["model"] == "smollm2" and r["backend"] == "openai" and r["tokens_out"] > 0
            assert r["text"].strip()
        if s["docs_rejected"]:
            rej = pq.read_table(tmp_path / name / "rej.parquet").column("reject_reason")
            assert set(rej.to_pylist()) <= allowed, name
    assert len(proxy.log) == len(FAMILIES)
    # rewire's answers were cut by max_tokens: never a marker, so always rejected, never kept
    rej = pq.read_table(tmp_path / "rewire" / "rej.parquet").column("reject_reason").to_pylist()
    assert rej == ["rewrite.missing_marker"]


def test_server_answering_500_for_a_while(proxy: Proxy, sample_lines: list[str],
                                          tmp_path: Path) -> None:
    proxy.fail_s = 3.0  # a 3 s outage from the first request on
    src = _shard(tmp_path, _docs(sample_lines, 3, offset=2))
    cfg = RewriteConfig(backend="openai", base_url=proxy.url, model="smollm2",
                        prompt="wrap_easy", max_tokens=8, temperature=0, max_concurrency=2,
                        backoff_base_s=0.1, backoff_cap_s=0.5, breaker_threshold=3,
                        breaker_cooldown_s=0.5).model_dump()
    out = rewrite_llm([_job(tmp_path, src, "o")], cfg, str(tmp_path / "cache"))
    s, run = out["shards"][0], out["run"]
    assert proxy.failed >= 3 and run["breaker_opened"] >= 1 and run["paused_s"] > 0
    assert s["docs_kept"] == 6 and s["docs_rejected"] == 0  # every document, after recovery
    assert run["new_generations"] == 3 and len(proxy.delivered()) == 3


# ----------------------------------------------------------------------------- the flow
def _recipe(path: Path, inp: Path, root: Path, rewrite: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "rewrite-it", "data_root": str(root), "input": {"paths": [str(inp)]},
        "stages": {"ingest": {"shard_max_bytes": 1000}, "rewrite": rewrite}}))
    return path


def _cache_lines(cache: Path) -> list[Path]:
    return sorted((cache / "log").glob("*.jsonl")) if (cache / "log").exists() else []


def test_sigkill_of_the_worker_mid_stage_repeats_no_finished_request(
        prefect_harness: None, proxy: Proxy, sample_lines: list[str], tmp_path: Path) -> None:
    from flows.pipeline import run_recipe

    docs = _docs(sample_lines, 8, chars=200, offset=6)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    root = tmp_path / "root"
    rw = {"backend": "openai", "base_url": proxy.url, "model": "smollm2", "prompt": "wrap_easy",
          "max_tokens": 12, "temperature": 0, "max_concurrency": 2}
    recipe = _recipe(tmp_path / "r.yaml", inp, root, rw)
    cache = root / "llm_cache"
    killed: dict[str, Any] = {}

    def killer() -> None:
        while len(proxy.delivered()) < 3:
            time.sleep(0.05)
        proxy.open.clear()  # hold new requests: the kill lands between answers
        deadline = time.time() + 60
        while proxy.in_flight and time.time() < deadline:  # let forwarded ones finish
            time.sleep(0.05)
        done = {r["key"] for r in proxy.delivered()}
        while time.time() < deadline:  # every delivered answer is in the cache
            n = sum(len(p.read_text().splitlines()) for p in _cache_lines(cache))
            if n >= len(done):
                break
            time.sleep(0.05)
        logs = [p for p in _cache_lines(cache) if p.name.endswith(".open.jsonl")]
        pid = int(logs[0].name.split("-")[0])  # the worker process writing the cache
        killed.update(done=done, pid=pid, at=time.time())
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        proxy.open.set()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    summary = run_recipe(str(recipe), until="rewrite")
    t.join(timeout=5)
    assert killed, "the stage finished before it could be killed"
    assert killed["pid"] != os.getpid()  # a Dask worker, not this process
    after = [r for r in proxy.log if r["t0"] > killed["at"]]
    assert after, "nothing was requested after the kill"
    assert not {r["key"] for r in after} & killed["done"]  # no finished request again
    st = {s["stage"]: s for s in summary["stages"]}["rewrite"]
    assert st["docs_in"] == st["docs_kept"] + st["docs_rejected"] == 16  # 8 originals + 8
    out = Path(st["output_path"])
    kept = pa.concat_tables([pq.read_table(p) for p in sorted((out / "kept").glob("*.parquet"))])
    src = kept.filter(pa.compute.is_valid(kept["rewritten_from"]))
    assert sorted(src.column("rewritten_from").to_pylist()) == sorted(d["id"] for d in docs)
    n_requests = len(proxy.log)
    assert n_requests == 8 + sum(1 for r in proxy.log if not r["delivered"])

    # a re-run of the finished stage: zero requests
    again = run_recipe(str(recipe), until="rewrite")
    assert {s["stage"]: s for s in again["stages"]}["rewrite"]["cached"]
    assert len(proxy.log) == n_requests
    # another stage version over the same documents (a different mixer): generations shared
    other = run_recipe(str(_recipe(tmp_path / "r2.yaml", inp, root, {**rw, "mix_ratio": 2.0})),
                       until="rewrite")
    st2 = {s["stage"]: s for s in other["stages"]}["rewrite"]
    assert not st2["cached"] and st2["version"] != st["version"]
    assert len(proxy.log) == n_requests
    # at 2:1 (per shard, rounded down) at most 4 of the 8 rewrites stay
    assert 4 <= st2["docs_rejected"] <= 8 and st2["docs_kept"] == 16 - st2["docs_rejected"]
    from tasks.catalog import Catalog

    run = Catalog(root / "catalog.duckdb").show(other["run_id"])
    m = {x["name"]: x["value"] for x in run["metrics"]}
    assert m["rewrite.requests"] == 0 and m["rewrite.cache_hits"] == 8
    assert m["rewrite.tokens_out"] > 0


def test_transient_failures_are_retried_by_the_next_run(
        prefect_harness: None, sample_lines: list[str], tmp_path: Path) -> None:
    """Requests still failing after their retries (a 503, a dropped connection) reject their
    documents for this run only: the manifest is set aside, later stages get another version,
    and the next run asks for exactly those documents again."""
    from flows.pipeline import run_recipe

    docs = _docs(sample_lines, 4, chars=200, offset=14)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    flaky = {" ".join(d["text"].split()[:8]): how for d, how in zip(docs[:2], ("503", "drop"),
                                                                       strict=True)}
    down = [True]
    srv = FakeLLM(misbehave=lambda c: next((how for snip, how in flaky.items()
                                            if down[0] and snip in " ".join(c.split())), None))
    rw = {"backend": "openai", "base_url": srv.url, "model": "m", "prompt": "wrap_easy",
          "max_retries": 1, "backoff_base_s": 0.01, "backoff_cap_s": 0.05,
          "breaker_threshold": 100}
    recipe = _recipe(tmp_path / "r.yaml", tmp_path / "in.jsonl", tmp_path / "root", rw)

    def rewrite_stage() -> dict[str, Any]:
        return {s["stage"]: s for s in run_recipe(str(recipe), until="rewrite")["stages"]
                }["rewrite"]

    try:
        first = rewrite_stage()
        assert not (Path(first["output_path"]) / "manifest.json").exists()
        n, down[0] = len(srv.calls), False
        second, third = rewrite_stage(), rewrite_stage()
    finally:
        srv.close()
    assert first["docs_in"] == 8 and first["docs_rejected"] == 2 and n == 2 + 2 * 2
    assert "+partial-" in first["version"] and not first["cached"]
    assert not second["cached"] and second["docs_kept"] == 8 and second["docs_rejected"] == 0
    assert second["version"] == first["version"].split("+")[0]
    assert third["cached"] and len(srv.calls) == n + 2  # only the two that failed, once


# a stand-in for a remote LLM service: REWIRE's format around a long, clean English text, so
# recycled rewrites pass the quality rules
REWIRE_TEXT = (
    "The river town grew slowly over two centuries. Farmers brought grain to the mill every "
    "autumn, and the miller kept careful records of each delivery. These records show how the "
    "harvest changed from year to year, and they help historians understand the weather, the "
    "prices and the lives of the people who worked the land. Today the mill is a museum where "
    "visitors can read the old books and see the great wheel turn once again in the water.")
REWIRE_ANSWER = ("<thinking starts>plan<thinking ends>\n<improved response starts>\n"
                 f"{REWIRE_TEXT}\n<improved response ends>")


def test_rewire_recycles_the_filters_rejects_after_the_filter(
        prefect_harness: None, sample_slice: Path, tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    from flows.pipeline import run_recipe
    from tasks.catalog import Catalog

    Secret(value="sk-recycle-4242").save("datamill-test-llm-key", overwrite=True)
    svc = FakeLLM(reply=REWIRE_ANSWER, usage=(700, 90))
    root = tmp_path / "root"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "rewire", "data_root": str(root), "input": {"paths": [str(sample_slice)]},
        "stages": {"ingest": {"shard_max_bytes": 250_000},
                   "rewrite": {"backend": "openai", "base_url": svc.url, "model": "m",
                               "prompt": "rewire", "select": "rejected", "mix_ratio": None,
                               "api_key_secret": "datamill-test-llm-key",
                               "price_per_m_input": 0.1, "price_per_m_output": 0.4},
                   "filter": {"filters": {"gopher_quality": {}}, "exact_dedup": {}}}}))
    try:
        summary = run_recipe(str(recipe), until="filter")
    finally:
        svc.close()
    st = {s["stage"]: s for s in summary["stages"]}
    assert list(st) == ["ingest", "rewrite", "score", "filter", "recycle"]
    assert st["rewrite"]["docs_in"] == st["rewrite"]["docs_kept"]  # passes through
    f, r = st["filter"], st["recycle"]
    fdir = Path(f["output_path"])
    rejected = pa.concat_tables([pq.read_table(p, columns=["id", "reject_reason"])
                                 for p in sorted((fdir / "rejected").glob("*.parquet"))])
    reasons = rejected.column("reject_reason").to_pylist()
    quality = [x for x in reasons if x.startswith("gopher_quality.")]
    assert quality and "exact_dedup.duplicate" in reasons  # dedup rejects are not recycled
    assert len(svc.calls) == len(quality)
    # every rewrite passes gopher here: kept = the filter's kept + one rewrite per reject
    assert r["docs_in"] == f["docs_kept"] + len(quality) == r["docs_kept"] + r["docs_rejected"]
    assert r["docs_kept"] == f["docs_kept"] + len(quality)
    rec = pa.concat_tables([pq.read_table(p) for p in
                            sorted((Path(r["output_path"]) / "kept").glob("*.parquet"))])
    assert set(rec.column("prompt").to_pylist()) == {"rewire"}
    assert sorted(rec.column("rewritten_from").to_pylist()) == sorted(
        i for i, x in zip(rejected.column("id").to_pylist(), reasons, strict=True)
        if x.startswith("gopher_quality."))
    m = {x["name"]: x["value"] for x in Catalog(root / "catalog.duckdb").show(
        summary["run_id"])["metrics"]}
    n = len(quality)
    assert m["recycle.tokens_in"] == 700 * n and m["recycle.tokens_out"] == 90 * n
    assert m["recycle.cost_run"] == pytest.approx((700 * 0.1 + 90 * 0.4) * n / 1e6)
    # the Secret block's value reached the server, and nothing datamill wrote
    assert svc.auth == {"Bearer sk-recycle-4242"}
    written = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".html",
                                                                            ".duckdb", ".jsonl")]
    assert written and not any(b"sk-recycle-4242" in p.read_bytes() for p in written)


def test_local_models_on_ray_actors(tmp_path: Path, sample_lines: list[str]) -> None:
    """The local backend end to end on CPU: a pool of Ray actors each holding the model
    (transformers here; vLLM where installed), fed batches, answers cached as they come."""
    from llmkit import make_tiny_llama

    model = make_tiny_llama(tmp_path / "tiny")
    src = _shard(tmp_path, _docs(sample_lines, 5, chars=120))
    cfg = RewriteConfig(backend="local", model=model, prompt="wrap_easy", max_tokens=4,
                        temperature=0, local_actors=2, local_batch_size=2,
                        local_engine="transformers").model_dump()
    out = rewrite_llm([_job(tmp_path, src, "l")], cfg, str(tmp_path / "cache"))
    s, run = out["shards"][0], out["run"]
    assert s["attempts"] == 5 and run["new_generations"] == 5 and run["requests"] == 5
    assert s["docs_in"] == 10 == s["docs_kept"] + s["docs_rejected"]
    again = rewrite_llm([_job(tmp_path, src, "l2")], cfg, str(tmp_path / "cache"))
    assert again["run"]["cache_hits"] == 5 and again["run"]["requests"] == 0


def test_embedded_backend_starts_its_own_server(tmp_path: Path, sample_lines: list[str]
                                                ) -> None:
    """backend: embedded: llama.cpp's server with SmolLM2 started inside the stage."""
    pytest.importorskip("xllamacpp")
    src = _shard(tmp_path, _docs(sample_lines, 1, chars=120))
    cfg = RewriteConfig(backend="embedded", prompt="wrap_easy", max_tokens=4, temperature=0,
                        max_concurrency=1).model_dump()
    out = rewrite_llm([_job(tmp_path, src, "e")], cfg, str(tmp_path / "cache"))
    assert out["run"]["new_generations"] == 1 and out["shards"][0]["tokens_out"] > 0
    kept = pq.read_table(tmp_path / "e" / "kept.parquet").to_pylist()
    assert {r["model"] for r in kept if r["rewritten_from"]} == {"SmolLM2-135M-Instruct.Q4_1"}
