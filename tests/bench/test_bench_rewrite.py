"""Rewrite stage throughput: datamill vs calling the same server directly.

One llama.cpp server (the embedded SmolLM2-135M, ``xllamacpp``) serves both sides. The direct
baseline posts the very request bodies datamill would send from a thread pool of the same
concurrency; datamill runs the stage's own function (``tasks.rewrite.rewrite_llm``: read the
shard, select, chunk, look up the cache, request, store each answer, parse, write the shards)
with a fresh cache. The server's prompt cache is off and sampling is greedy, so both sides ask
for exactly the same work; rounds alternate the order. Target: datamill >= 0.95x direct.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tasks.llm.base import Sampling
from tasks.llm.openai_http import HTTPBackend
from tasks.prompts import BUILTIN, chunk_text
from tasks.recipe import RewriteConfig
from tasks.rewrite import rewrite_llm
from tasks.schema import DOC_SCHEMA
from tasks.store import write_parquet

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"


def _direct(url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[float, int]:
    """The baseline: a thread pool posting the bodies, one kept-alive client per thread."""
    import threading

    import httpx

    local = threading.local()
    clients: list[Any] = []

    def one(body: dict[str, Any]) -> int:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = httpx.Client(timeout=600)
            clients.append(c)
        r = c.post(url + "/chat/completions", json=body)
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        toks = sum(pool.map(one, bodies))
    dt = time.perf_counter() - t0
    for c in clients:
        c.close()
    return dt, toks


def test_bench_rewrite_vs_direct(tmp_path: Path, table: Any) -> None:
    pytest.importorskip("xllamacpp")
    from tasks.llm.embedded import start_server

    n_docs = int(os.environ.get("DATAMILL_BENCH_REWRITE_DOCS", "12"))
    conc = int(os.environ.get("DATAMILL_BENCH_REWRITE_CONCURRENCY", "4"))
    rounds = int(os.environ.get("DATAMILL_BENCH_REWRITE_ROUNDS", "2"))
    max_tokens = 16
    threads = int(os.environ.get("DATAMILL_BENCH_REWRITE_THREADS", "0")) or None
    srv, url = start_server(n_parallel=conc, n_ctx=1024 * conc, cache_prompt=False,
                            threads=threads)
    docs = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    docs = [d for d in docs if d.get("lang") == "en" and len(d["text"]) > 400][:n_docs]
    texts = [d["text"][:400] for d in docs]
    n = len(docs)
    t = pa.table({"id": [d["id"] for d in docs], "text": texts,
                  "source": [d["source"] for d in docs], "url": [None] * n,
                  "fetched_at": pa.nulls(n, pa.timestamp("us", tz="UTC")), "lang": ["en"] * n,
                  "lang_score": pa.nulls(n, pa.float32()), "meta": [None] * n},
                  schema=DOC_SCHEMA)
    src = tmp_path / "in.parquet"
    write_parquet(t, src)
    cfg = RewriteConfig(backend="openai", base_url=url, model="smollm2",
                        prompt="wrap_wikipedia", max_tokens=max_tokens, temperature=0,
                        max_concurrency=conc, mix_ratio=None).model_dump()
    prompt = BUILTIN["wrap_wikipedia"]
    sampling = Sampling(temperature=0, top_p=cfg["top_p"], max_tokens=max_tokens)
    shaper = HTTPBackend(url, "smollm2", sampling)
    from tasks.llm.base import Request

    bodies = [shaper.body(Request("k", messages=prompt.messages(c)))
              for x in texts for c in chunk_text(x, prompt.chunk_tokens)]
    _direct(url, bodies[:conc], conc)  # warm-up

    def datamill(i: int) -> tuple[float, int]:
        job = {"key": "0", "mode": "rewrite", "source": str(src),
               "kept": str(tmp_path / f"r{i}" / "kept.parquet"),
               "rejected": str(tmp_path / f"r{i}" / "rej.parquet"),
               "marker": str(tmp_path / f"r{i}" / "m.json"), "reject_stage": "rewrite"}
        t0 = time.perf_counter()
        out = rewrite_llm([job], cfg, str(tmp_path / f"cache{i}"))
        dt = time.perf_counter() - t0
        assert out["run"]["new_generations"] == len(bodies) and out["run"]["cache_hits"] == 0
        assert out["shards"][0]["attempts"] == n
        return dt, out["run"]["new_tokens_out"]

    res: dict[str, list[tuple[float, int]]] = {"direct": [], "datamill": []}
    for i in range(rounds):
        order = ["direct", "datamill"] if i % 2 == 0 else ["datamill", "direct"]
        for side in order:
            res[side].append(_direct(url, bodies, conc) if side == "direct" else datamill(i))
    del srv
    rows, rate = [], {}
    for side, runs in res.items():
        secs = sum(r[0] for r in runs)
        toks = sum(r[1] for r in runs)
        docs_s = n * len(runs) / secs
        rate[side] = (docs_s, toks / secs)
        rows.append([side, n * len(runs), len(bodies) * len(runs), f"{secs:.1f}",
                     f"{docs_s:.2f}", toks, f"{toks / secs:.1f}",
                     " / ".join(f"{r[0]:.1f}s" for r in runs)])
    print()
    print(f"rewrite: {n} docs x {rounds} rounds, wrap_wikipedia, max_tokens {max_tokens}, "
          f"concurrency {conc}, SmolLM2-135M Q4_1 on llama.cpp (prompt cache off)")
    print(table(["side", "docs", "requests", "seconds", "docs/s", "gen tokens", "gen tok/s",
                 "runs"], rows))
    r_docs = rate["datamill"][0] / rate["direct"][0]
    r_tok = rate["datamill"][1] / rate["direct"][1]
    print(f"datamill / direct: docs/s {r_docs:.3f}x, generated tokens/s {r_tok:.3f}x "
          f"(target >= 0.95x: {'PASS' if min(r_docs, r_tok) >= 0.95 else 'MISS'})")
