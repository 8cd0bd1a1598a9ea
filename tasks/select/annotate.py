"""LLM annotation for selection: a rating prompt per document, through the rewrite stage's
backends (OpenAI-compatible HTTP, local models on Ray actors, the embedded llama.cpp server),
their retries and circuit breaker, and the generation cache.

Every answer is cached the moment it arrives (``tasks/llm/cache.py``; key = document text,
prompt, model and where it is served, sampling), so an annotation that crashes or is killed
resumes where it stopped: a re-run sends only what the cache lacks. A request that fails
transiently (after every retry) is neither cached nor final: the caller reports it and the
next run asks again. Cost = requests sent, cache hits, tokens in and out, and the price the
recipe states per million tokens.

The FineWeb-Edu stage annotates a sample; the DataMan stage every document. Both use
``Annotator`` and ``LLMConfig`` from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.identity import OPERATIONAL, OpCount, OpPrice, OpSeconds, OpText

_BACKEND_STATS = ("requests", "retries", "failed", "breaker_opened", "paused_s")


class LLMConfig(BaseModel):
    """The LLM backend of an annotation (the rewrite stage's backends and their knobs).
    Where and how fast are operational; the model, its serving location (through the cache
    key) and the sampling version the answers."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai", "local", "embedded"] = Field(
        "openai", description="openai (any OpenAI-compatible server), local (a model path "
        "on Ray actors), embedded (SmolLM2-135M, only to exercise the pipeline)")
    base_url: OpText = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="openai: served model name; local: a path")
    api: Literal["chat", "completions"] = Field("chat", description="which endpoint")
    api_key_env: OpText = Field(None, description="environment variable holding the API key")
    api_key_secret: OpText = Field(None, description="name of a Prefect Secret block")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling (0: the rater's mode)")
    top_p: float = Field(1.0, gt=0, le=1, description="sampling")
    max_tokens: int = Field(512, ge=1, description="tokens a reply may have")
    sampling_seed: int | None = Field(None, description="seed sent to the server")
    max_chars: int = Field(8000, ge=100, description="characters of each document sent "
                           "(its start); longer documents are cut")
    max_concurrency: OpCount = Field(8, le=1024, description="requests in flight")
    timeout_s: OpSeconds = Field(600.0, description="read timeout per request")
    max_retries: Annotated[int, OPERATIONAL] = Field(8, ge=0, description="retries per "
                                                     "request while the server answers others")
    backoff_base_s: OpSeconds = Field(0.5, description="first retry waits up to this")
    backoff_cap_s: OpSeconds = Field(30.0, description="longest retry wait")
    breaker_threshold: OpCount = Field(5, description="consecutive failures that pause all")
    breaker_cooldown_s: OpSeconds = Field(2.0, description="pause before a probe request")
    max_outage_s: OpSeconds = Field(3600.0, description="a longer outage fails the stage")
    local_actors: OpCount = Field(1, description="local: model actors (one GPU each)")
    local_batch_size: OpCount = Field(8, description="local: requests per generate call")
    local_engine: Annotated[Literal["auto", "vllm", "transformers"], OPERATIONAL] = Field(
        "auto", description="local: vLLM when installed, else transformers")
    price_per_m_input: OpPrice = Field(0.0, description="price per million prompt tokens")
    price_per_m_output: OpPrice = Field(0.0, description="price per million reply tokens")

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("llm backend openai needs base_url and model")
        if self.backend == "local" and not self.model:
            raise ValueError("llm backend local needs model (a path)")
        return self

    def backend_dict(self) -> dict[str, Any]:
        """The dict ``tasks.llm.make_backend`` and the cache keys read."""
        return {**self.model_dump(), "stop": []}

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return round(tokens_in / 1e6 * self.price_per_m_input
                     + tokens_out / 1e6 * self.price_per_m_output, 6)


class Annotator:
    """Asks one prompt template of many documents: cache first, the rest through one backend
    (started on the first miss, kept for later batches). ``ask`` returns key -> raw reply for
    the answered, and records the failed in ``failed`` (key -> error) and ``transient``."""

    def __init__(self, cfg: LLMConfig, template: str, name: str, cache_dir: str | Path,
                 api_key: str | None = None) -> None:
        from tasks.llm import cache_model, model_id, sampling_of
        from tasks.llm.cache import GenerationCache
        from tasks.prompts.ratings import digest

        self.cfg = cfg
        self.conf = cfg.backend_dict()
        self.template = template
        self.name = name
        self.prompt_digest = f"{name}:{digest(template)}"
        self.model = model_id(self.conf)
        self.key_model = cache_model(self.conf)
        self.sampling = sampling_of(self.conf).as_key()
        self.cache = GenerationCache(cache_dir)
        self.api_key = api_key
        self._backend: Any = None
        self._keepalive: Any = None
        self.failed: dict[str, str] = {}
        self.transient: set[str] = set()
        self.run = {"requests": 0, "retries": 0, "failed": 0, "breaker_opened": 0,
                    "paused_s": 0.0, "cache_hits": 0, "new_generations": 0,
                    "new_tokens_in": 0, "new_tokens_out": 0, "transient_requests": 0,
                    "tokens_in": 0, "tokens_out": 0, "llm_seconds": 0.0}

    def request_key(self, text: str) -> str:
        from tasks.llm.cache import request_key

        return request_key(text, self.prompt_digest, self.key_model, self.conf["api"],
                           self.sampling)

    def _request(self, key: str, text: str) -> Any:
        from tasks.llm.base import Request
        from tasks.prompts.ratings import render

        body = render(self.template, text)
        if self.conf["api"] == "chat":
            return Request(key, messages=[{"role": "user", "content": body}])
        return Request(key, prompt=body)

    def ask(self, texts: Iterable[str | None]) -> list[str | None]:
        """Raw replies, one per text (None: failed, see ``failed``); texts are cut to
        ``max_chars`` first, and equal texts are asked once."""
        from tasks.llm.driver import on_answer

        cut = [(t or "")[: self.cfg.max_chars] for t in texts]
        keys = [self.request_key(t) for t in cut]
        want = dict(zip(keys, cut, strict=True))
        got = self.cache.get_many(set(want))
        self.run["cache_hits"] += len(got)
        outputs: dict[str, dict[str, Any]] = dict(got)
        errors: dict[str, str] = {}
        todo = [self._request(k, t) for k, t in want.items() if k not in got]
        if todo:
            t0 = time.perf_counter()
            self.backend().run(todo, lambda res: on_answer(res, self.run, self.cache, outputs,
                                                           errors, self.model, self.name))
            self.run["llm_seconds"] = round(self.run["llm_seconds"] + time.perf_counter() - t0,
                                            3)
        for k, err in errors.items():
            self.failed[k] = err
            if err == "transient_error":
                self.transient.add(k)
        for k in want:
            rec = outputs.get(k)
            if rec is not None:
                self.run["tokens_in"] += int(rec.get("tokens_in") or 0)
                self.run["tokens_out"] += int(rec.get("tokens_out") or 0)
        return [outputs[k]["output"] if k in outputs else None for k in keys]

    def backend(self) -> Any:
        if self._backend is None:
            from tasks.llm import make_backend

            self._backend, self._keepalive = make_backend(self.conf, self.api_key)
        return self._backend

    def close(self) -> None:
        self.cache.close()
        if self._backend is not None:
            self.run.update({k: v for k, v in self._backend.stats().items()
                             if k in _BACKEND_STATS})
            self._backend.close()
            self._backend = None
        self._keepalive = None

    def stats(self) -> dict[str, Any]:
        """What was asked and what it cost (this run's new tokens, and all answers used)."""
        r = dict(self.run)
        if self._backend is not None:  # the live backend's counts (close() also keeps them)
            r.update({k: v for k, v in self._backend.stats().items() if k in _BACKEND_STATS})
        r.update({"model": self.model, "backend": self.cfg.backend, "prompt": self.name,
                  "cost_run": self.cfg.cost(r["new_tokens_in"], r["new_tokens_out"]),
                  "cost_total": self.cfg.cost(r["tokens_in"], r["tokens_out"])})
        return r

    def __enter__(self) -> Annotator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_annotation(fn: Callable[..., Any], run: Any, ex: Any, cfg: LLMConfig, *args: Any,
                   desc: str) -> Any:
    """``fn(*args, cache_dir, api_key)`` where the rewrite stage runs its LLM work: in a Dask
    task for HTTP backends, in this process for Ray-actor models and when the key is a
    secret's value (a secret never travels as a task's argument). Compacts the cache after
    (the flow process is its only compactor)."""
    from tasks.llm.cache import compact
    from tasks.stages.rewrite import llm_cache_dir

    cache_dir = str(llm_cache_dir(run))
    key = run.secret(cfg.api_key_secret) if cfg.backend == "openai" and cfg.api_key_secret \
        else None
    if cfg.backend == "local" or key is not None:
        res = fn(*args, cache_dir, key)
    else:
        res = ex.task(fn, *args, cache_dir, None, desc=desc)
    compact(cache_dir)
    return res
