"""LLM backends for the rewrite stage: OpenAI-compatible HTTP (``openai_http``), local models on
Ray actors (``local``), and the embedded CPU default (``embedded``: llama.cpp's server with
SmolLM2-135M, for exercising the pipeline). Every completed generation goes to the generation
cache (``cache``) the moment it arrives."""

from __future__ import annotations

import os
from typing import Any

from tasks.llm.base import Backend, Request, Result, Sampling

__all__ = ["Backend", "Request", "Result", "Sampling", "make_backend", "model_id",
           "resolve_api_key"]


def model_id(cfg: dict[str, Any]) -> str:
    """The model named in cache keys: the same model behind two URLs shares generations."""
    if cfg["backend"] == "embedded":
        from tasks.llm.embedded import MODEL_NAME

        return cfg.get("model") or MODEL_NAME
    if not cfg.get("model"):
        raise ValueError(f"rewrite.model is required for the {cfg['backend']!r} backend")
    return str(cfg["model"])


def sampling_of(cfg: dict[str, Any]) -> Sampling:
    return Sampling(temperature=cfg["temperature"], top_p=cfg["top_p"],
                    max_tokens=cfg["max_tokens"], seed=cfg.get("sampling_seed"),
                    stop=list(cfg.get("stop") or []))


def resolve_api_key(cfg: dict[str, Any], secret_value: str | None = None) -> str | None:
    """An environment variable's value (read here, on the worker), or the value of a Prefect
    Secret block the flow resolved. Never logged, never stored in a manifest or artifact."""
    if secret_value:
        return secret_value
    env = cfg.get("api_key_env")
    if env:
        v = os.environ.get(env)
        if not v:
            raise ValueError(f"rewrite.api_key_env names {env!r}, which is not set")
        return v
    return None


def make_backend(cfg: dict[str, Any], api_key: str | None = None) -> tuple[Backend, Any]:
    """(backend, keep-alive handle). The handle holds an embedded server while it is used."""
    from tasks.llm.openai_http import HTTPBackend
    from tasks.llm.retry import Backoff, CircuitBreaker

    sampling = sampling_of(cfg)
    breaker = CircuitBreaker(threshold=cfg["breaker_threshold"],
                             cooldown_s=cfg["breaker_cooldown_s"],
                             max_outage_s=cfg["max_outage_s"])
    backoff = Backoff(base_s=cfg["backoff_base_s"], cap_s=cfg["backoff_cap_s"])
    if cfg["backend"] == "openai":
        if not cfg.get("base_url"):
            raise ValueError("rewrite.base_url is required for the openai backend")
        return HTTPBackend(cfg["base_url"], model_id(cfg), sampling, api=cfg["api"],
                           api_key=resolve_api_key(cfg, api_key),
                           max_concurrency=cfg["max_concurrency"], timeout_s=cfg["timeout_s"],
                           max_retries=cfg["max_retries"], backoff=backoff,
                           breaker=breaker), None
    if cfg["backend"] == "embedded":
        from tasks.llm.embedded import start_server

        # 4096 tokens of context per slot: room for a published prompt, a chunk and an answer
        par = cfg["max_concurrency"]
        srv, url = start_server(n_parallel=par, n_ctx=min(4096 * par, 65536))
        return HTTPBackend(url, model_id(cfg), sampling, api=cfg["api"],
                           max_concurrency=cfg["max_concurrency"], timeout_s=cfg["timeout_s"],
                           max_retries=cfg["max_retries"], backoff=backoff,
                           breaker=breaker), srv
    if cfg["backend"] == "local":
        from tasks.llm.local import RayBackend

        return RayBackend(model_id(cfg), sampling, actors=cfg["local_actors"],
                          batch_size=cfg["local_batch_size"], engine=cfg["local_engine"]), None
    raise ValueError(f"not an LLM backend: {cfg['backend']!r}")
