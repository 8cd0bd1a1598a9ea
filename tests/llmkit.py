"""A kit for the LLM backends' tests, with no hub and no download: a real local HTTP server that
speaks the OpenAI chat API (``FakeLLM``: it can be down for a while, answer 503 or drop the
connection for chosen requests), a counting proxy in front of a real server (``Proxy``), shards
and jobs for ``rewrite_llm``, and a tiny randomly initialised Llama with a BPE tokenizer made on
the spot (its text is noise by design)."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa


class FakeLLM:
    """A real HTTP server on 127.0.0.1 that speaks the OpenAI chat API, answers 500 for its
    first ``fail_s`` seconds (an outage), and counts what it is asked. ``misbehave(content)``
    (the last message's content) may say a status (``"503"``: answer with it) or ``"drop"``
    (close the connection without an answer) for chosen requests; ``None``: answer."""

    def __init__(self, fail_s: float = 0.0, reply: Any = "Rewritten: {n}",
                 misbehave: Callable[[str], str | None] | None = None,
                 usage: tuple[int, int] = (10, 3)) -> None:
        self.fail_s = fail_s
        self.fail_until: float | None = None  # the outage starts with the first request
        self.failed = 0
        self.reply = reply
        self.misbehave = misbehave
        self.calls: list[str] = []
        self.auth: set[str | None] = set()  # the Authorization headers it saw
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                with outer.lock:
                    outer.calls.append(content)
                    n = len(outer.calls)
                    auth = self.headers.get("Authorization")
                    outer.auth.add(auth)
                    if outer.fail_until is None:
                        outer.fail_until = time.monotonic() + outer.fail_s
                how = outer.misbehave(content) if outer.misbehave else None
                if time.monotonic() < outer.fail_until or how is not None:
                    with outer.lock:
                        outer.failed += 1
                    if how == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.send_response(int(how) if how else 500)
                    self.end_headers()
                    return
                text = outer.reply(n) if callable(outer.reply) else \
                    outer.reply.format(n=n, auth=auth)
                out = json.dumps({"choices": [{"message": {"content": text},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": usage[0],
                                            "completion_tokens": usage[1]}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(out.encode())

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


class Proxy:
    """Forwards POSTs to the real server; records each request (body hash, start, whether its
    answer was delivered); can hold new requests, or answer 500 until a deadline."""

    def __init__(self, upstream: str) -> None:
        u = urlparse(upstream)
        self.host, self.port, self.prefix = u.hostname, u.port, u.path.rstrip("/")
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.open = threading.Event()
        self.open.set()
        self.fail_s = 0.0  # an outage this long, from the first request on
        self.fail_until: float | None = None
        self.failed = 0
        self.in_flight = 0  # forwarded, not yet answered
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                rec = {"key": hashlib.sha256(body).hexdigest(), "t0": time.time(),
                       "delivered": False}
                with outer.lock:
                    outer.log.append(rec)
                outer.open.wait()
                with outer.lock:
                    outer.in_flight += 1
                try:
                    self._answer(body, rec)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def _answer(self, body: bytes, rec: dict[str, Any]) -> None:
                with outer.lock:
                    if outer.fail_until is None:
                        outer.fail_until = time.time() + outer.fail_s
                if time.time() < outer.fail_until:
                    outer.failed += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                c = http.client.HTTPConnection(outer.host, outer.port, timeout=600)
                c.request("POST", self.path.replace("/v1", outer.prefix, 1), body,
                          {"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                try:
                    self.send_response(r.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    rec["delivered"] = r.status == 200
                    rec["t1"] = time.time()
                except OSError:  # the client died while we answered
                    pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.log if r["delivered"]]

    def close(self) -> None:
        self.open.set()
        self.srv.shutdown()
        self.srv.server_close()


def doc_shard(tmp: Path, n: int) -> Path:
    """``n`` short documents (``d0``..): "Document number <i>. ..." in one shard."""
    from tasks.schema import DOC_SCHEMA
    from tasks.store import write_parquet

    texts = [f"Document number {i}. It has a sentence or two." for i in range(n)]
    t = pa.table({"id": [f"d{i}" for i in range(n)], "text": texts, "source": ["s"] * n,
                  "url": [None] * n, "fetched_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
                  "lang": ["en"] * n, "lang_score": pa.nulls(n, pa.float32()),
                  "meta": [None] * n}, schema=DOC_SCHEMA)
    p = tmp / "in.parquet"
    write_parquet(t, p)
    return p


def rewrite_job(tmp: Path, src: Path, key: str = "0") -> dict[str, Any]:
    return {"key": key, "mode": "rewrite", "source": str(src),
            "kept": str(tmp / "out" / f"kept-{key}.parquet"),
            "rejected": str(tmp / "out" / f"rej-{key}.parquet"),
            "marker": str(tmp / "out" / f"{key}.json"), "reject_stage": "rewrite"}


def rewrite_cfg(url: str, **kw: Any) -> dict[str, Any]:
    """An openai-backend config with fast retries, as ``rewrite_llm`` gets it."""
    from tasks.recipe import RewriteConfig

    base = {"backend": "openai", "base_url": url, "model": "fake", "prompt": "wrap_easy",
            "max_concurrency": 4, "backoff_base_s": 0.01, "backoff_cap_s": 0.05,
            "breaker_cooldown_s": 0.05, "breaker_threshold": 3}
    return RewriteConfig(**{**base, **kw}).model_dump()


def make_tiny_llama(out: Path) -> str:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["The cat sat on the mat. A chat between a user and an "
                             "assistant."] * 50, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=512, eos_token_id=fast.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return str(out)
