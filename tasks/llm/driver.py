"""One request pool for every shard of an LLM rewrite: plan shards lazily, look answers up in
the generation cache, send the rest through one backend, store each answer as it arrives and
write each shard the moment its last answer is in (``tasks.rewrite`` plans and assembles)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# a request that failed for a reason that may pass (after every retry): its document is
# rejected as ``rewrite.transient_error`` for this run, nothing is cached, its shard is not
# marked done, so the next run asks again
TRANSIENT = "transient_error"


def rewrite_llm(jobs: list[dict[str, Any]], cfg: dict[str, Any], cache_dir: str,
                api_key: str | None = None) -> dict[str, Any]:
    """Rewrite every shard in ``jobs`` with an LLM backend, resumably.

    Each job: ``source`` (input Parquet), ``kept``, ``rejected``, ``marker`` paths, ``mode``
    (``rewrite``: originals kept plus rewrites; ``recycle``: ``source`` is a filter's rejected
    shard, ``real`` its kept shard, ``filters`` the rules a rewrite must pass) and
    ``reject_stage``. Shards whose marker exists are skipped; every request whose answer is in
    the generation cache is not sent again; each new answer is stored as it arrives, and each
    shard is written the moment its last answer is in. One global request pool spans shards,
    so concurrency does not sag at shard boundaries. Answers are made storable (lone
    surrogates become U+FFFD) before they are cached or written; errors leave with every URL
    in their message scrubbed of credentials and query.
    """
    from tasks.llm import cache_model, model_id, sampling_of
    from tasks.llm.cache import GenerationCache
    from tasks.llm.redact import scrubbed_errors
    from tasks.prompts import load_prompt
    from tasks.rewrite import finish_shard, plan_shard

    prompt = load_prompt(cfg["prompt"])
    model = model_id(cfg)
    key_model = cache_model(cfg)
    sampling_key = sampling_of(cfg).as_key()
    cache = GenerationCache(cache_dir)
    shard_stats: dict[str, dict[str, Any]] = {}
    todo = []
    for j in jobs:
        m = Path(j["marker"])
        if m.is_file():
            shard_stats[j["key"]] = json.loads(m.read_text())
        else:
            todo.append(j)
    outputs: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    waiting: dict[str, list[Any]] = {}  # key -> shards that still need it
    open_shards: list[Any] = []
    need: dict[str, int] = {}  # key -> uses by open shards (answers are freed at zero)
    run = {"requests": 0, "retries": 0, "failed": 0, "breaker_opened": 0, "paused_s": 0.0,
           "cache_hits": 0, "new_generations": 0, "new_tokens_in": 0, "new_tokens_out": 0,
           "llm_seconds": 0.0, "transient_requests": 0}

    def finish_ready() -> None:
        for sh in [s for s in open_shards if not s.waiting]:
            open_shards.remove(sh)
            shard_stats[sh.job["key"]] = finish_shard(sh, outputs, errors, cfg, prompt, model)
            for ks in sh.keys:  # free answers no other open shard needs
                for k in ks:
                    need[k] -= 1
                    if need[k] <= 0:
                        need.pop(k)
                        outputs.pop(k, None)

    def requests() -> Any:
        """Plan shards lazily, so memory holds only shards with requests in flight."""
        for j in todo:
            sh, reqs = plan_shard(j, cfg, prompt, key_model, sampling_key)
            hits = cache.get_many(set(reqs))
            run["cache_hits"] += len(hits)
            outputs.update(hits)
            open_shards.append(sh)
            for ks in sh.keys:
                for k in ks:
                    need[k] = need.get(k, 0) + 1
            sh.waiting = {k for k in reqs if k not in hits}
            new = []
            for k in sh.waiting:
                if k in waiting:  # already requested for an earlier shard
                    waiting[k].append(sh)
                else:
                    waiting[k] = [sh]
                    new.append(reqs[k])
            finish_ready()
            yield from new

    def on_result(res: Any) -> None:
        on_answer(res, run, cache, outputs, errors, model, prompt.name)
        for sh in waiting.pop(res.key, []):
            sh.waiting.discard(res.key)
        finish_ready()

    t0 = time.perf_counter()
    with scrubbed_errors():
        _drive(requests(), on_result, cfg, api_key, cache, run)
        finish_ready()
    run["llm_seconds"] = round(time.perf_counter() - t0, 3)
    return {"shards": [shard_stats[j["key"]] for j in jobs], "run": run}


def on_answer(res: Any, run: dict[str, Any], cache: Any, outputs: dict[str, dict[str, Any]],
              errors: dict[str, str], model: str, prompt: str) -> None:
    """One finished request: an answer is cached before anything else happens to it; a
    permanent failure is final for this stage version (its shard is marked done); a transient
    one is neither cached nor final."""
    from tasks.llm.base import storable

    if res.output is None:
        if res.transient:
            errors[res.key] = TRANSIENT
            run["transient_requests"] += 1
        else:
            errors[res.key] = storable(res.error or "failed")
        return
    rec = {"key": res.key, "output": storable(res.output), "tokens_in": res.tokens_in,
           "tokens_out": res.tokens_out, "finish_reason": storable(res.finish_reason or ""),
           "model": model, "prompt": prompt, "seconds": res.seconds, "created_at": time.time()}
    cache.put(rec)  # stored before anything else happens to it
    outputs[res.key] = rec
    run["new_generations"] += 1
    run["new_tokens_in"] += res.tokens_in
    run["new_tokens_out"] += res.tokens_out


def _drive(reqs: Any, on_result: Any, cfg: dict[str, Any], api_key: str | None, cache: Any,
           run: dict[str, Any]) -> None:
    """Send what the cache lacks; start a backend only when something must be generated."""
    from tasks.llm import make_backend

    backend: Any = None
    keepalive: Any = None
    try:
        first = next(reqs, None)
        if first is not None:
            backend, keepalive = make_backend(cfg, api_key)
            backend.run(_chain(first, reqs), on_result)
    finally:
        cache.close()
        if backend is not None:
            run.update({k: v for k, v in backend.stats().items() if k in run})
            backend.close()
        del keepalive


def _chain(first: Any, rest: Any) -> Any:
    yield first
    yield from rest
