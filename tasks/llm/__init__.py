"""LLM backends for the rewrite stage: OpenAI-compatible HTTP (``openai_http``), local models on
Ray actors (``local``), and the embedded CPU default (``embedded``: llama.cpp's server with
SmolLM2-135M, for exercising the pipeline). Every completed generation goes to the generation
cache (``cache``) the moment it arrives."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from tasks.llm.base import Backend, Request, Result, Sampling

SMALL_FILE = 16 << 20  # local model files up to this size are hashed; larger by size and mtime

__all__ = ["Backend", "Request", "Result", "Sampling", "cache_model", "make_backend",
           "model_id", "normalize_url", "resolve_api_key"]


def model_id(cfg: dict[str, Any]) -> str:
    """The model's name: what the server is asked for and what provenance records. Cache keys
    use ``cache_model``: one name served from two places is two models."""
    if cfg["backend"] == "embedded":
        from tasks.llm.embedded import MODEL_NAME

        return cfg.get("model") or MODEL_NAME
    if not cfg.get("model"):
        raise ValueError(f"rewrite.model is required for the {cfg['backend']!r} backend")
    return str(cfg["model"])


def normalize_url(url: str) -> str:
    """A base URL as a serving location: scheme and host lower-cased, default port, trailing
    slashes, credentials, query and fragment dropped (none of them says which weights)."""
    from urllib.parse import urlsplit

    u = urlsplit(url.strip())
    scheme = u.scheme.lower()
    host = (u.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host  # IPv6
    port = u.port if u.port not in (None, {"http": 80, "https": 443}.get(scheme)) else None
    return f"{scheme}://{host}{f':{port}' if port else ''}{u.path.rstrip('/')}"


def _model_files(path: Path, whole: bool = False) -> str:
    """A model (a file or a directory) by content: small files (configs, tokenizers) by hash,
    larger ones (weights) by size and modification time, as hashing gigabytes every run would
    cost too much; ``whole``: every file by hash. Memoised per process on the same stamp."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return _fingerprint(tuple(
        (str(p), p.name if p == path else str(p.relative_to(path)), p.stat().st_size,
         p.stat().st_mtime_ns) for p in files), whole)


@functools.lru_cache(maxsize=16)
def _fingerprint(stamp: tuple[tuple[str, str, int, int], ...], whole: bool) -> str:
    from tasks.identity import file_digest

    h = hashlib.sha256()
    for full, name, size, mtime in stamp:
        what = file_digest(full) if whole or size <= SMALL_FILE else f"{size}:{mtime}"
        h.update(f"{name}\0{size}\0{what}\0".encode())
    return h.hexdigest()[:16]


def serving_location(cfg: dict[str, Any]) -> str:
    """Where the model is served, as cache keys see it: the normalised base URL (openai), the
    GGUF's content (embedded), the model's files (local: a path), or its hub id."""
    backend = cfg["backend"]
    if backend == "openai":
        return normalize_url(str(cfg["base_url"]))
    if backend == "embedded":
        from tasks.llm.embedded import gguf_path

        return f"gguf:{_model_files(gguf_path(), whole=True)}"
    p = Path(str(cfg["model"])).expanduser()
    return f"path:{p.resolve()}:{_model_files(p)}" if p.exists() else f"hub:{cfg['model']}"


def cache_model(cfg: dict[str, Any]) -> str:
    """The model as generation cache keys name it: its id *and* where it is served, so two
    servers answering to one name with different weights never share answers."""
    return f"{model_id(cfg)}@{serving_location(cfg)}"


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
