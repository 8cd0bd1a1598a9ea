"""Stages ``rewrite`` (before the filter) and ``recycle`` (after it: REWIRE's rewrite of the
filter's rejects, checked by the same rules; or Nemotron-CC's rewrite of the kept documents
with prompts routed by the quality bucket the filter stage assigned): identity/noise per
shard on Dask; LLM backends through one request pool, with cost accounting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasks.stage import Artifact, Executor, Manifest, RunInfo, Stage, Upstream
from tasks.store import StageDir, merge_counts, shard_key

# what _report writes to the catalog and the artifact, in this order
LLM_METRICS = ["attempts", "rewrites_kept", "requests", "retries", "cache_hits",
               "new_generations", "tokens_in", "tokens_out", "new_tokens_in", "new_tokens_out",
               "docs_per_s", "tokens_out_per_s", "llm_seconds", "paused_s", "breaker_opened",
               "transient_failures", "cost_run", "cost_total"]


def routed(cfg: Any) -> bool:
    """The prompt is a routing by quality bucket (tasks/prompts/routing.py)."""
    from tasks.prompts import load_prompt
    from tasks.prompts.routing import Routing

    return isinstance(load_prompt(cfg.prompt), Routing)


def _deferred(cfg: Any) -> bool:
    """After the filter (recycle): select=rejected (the LLM rewrites the filter's rejects), or
    a prompt routed by quality bucket (the buckets exist only once the filter has run)."""
    return cfg is not None and cfg.is_llm and (cfg.select == "rejected" or routed(cfg))


def llm_cache_dir(run: RunInfo) -> Path:
    return Path(os.environ.get("DATAMILL_LLM_CACHE") or run.data_root / "llm_cache")


def run_llm(run: RunInfo, out: StageDir, ex: Executor, cfg: Any, jobs: list[dict[str, Any]],
            desc: str) -> dict[str, Any]:
    """One task drives every shard through one request pool (global concurrency, no sag at
    shard boundaries): in a Dask task for HTTP backends, here for Ray actors (local) and when
    the API key is a secret's value (a secret never travels as a task's argument; the requests
    are I/O, so the flow process drives them as well as a worker would).

    Documents whose requests failed transiently are rejected (``rewrite.transient_error``) for
    this run, counted as ``transient_failures``, and their shards left unmarked: the manifest
    says ``incomplete``, so the next run is not a cache hit and asks for them again."""
    from tasks import rewrite
    from tasks.llm import model_id
    from tasks.llm.cache import compact

    config = cfg.model_dump()
    cache_dir = str(llm_cache_dir(run))
    key = run.secret(cfg.api_key_secret) if cfg.backend == "openai" and cfg.api_key_secret \
        else None
    if cfg.backend == "local" or key is not None:
        res = rewrite.rewrite_llm(jobs, config, cache_dir, key)
    else:
        res = ex.task(rewrite.rewrite_llm, jobs, config, cache_dir, desc=desc)
    compact(cache_dir)  # the flow process is the cache's only compactor
    shards = res["shards"]
    llm = dict(res["run"])
    tin = sum(s["tokens_in"] for s in shards)
    tout = sum(s["tokens_out"] for s in shards)
    secs = max(llm["llm_seconds"], 1e-9)
    attempts = sum(s["attempts"] for s in shards)
    llm.update({
        "attempts": attempts, "rewrites_kept": sum(s["rewrites_kept"] for s in shards),
        "tokens_in": tin, "tokens_out": tout,
        "docs_per_s": round(attempts / secs, 3) if llm["new_generations"] else None,
        "tokens_out_per_s": round(llm["new_tokens_out"] / secs, 3),
        # what this run paid, and what the stage's data cost in all (cache hits included)
        "cost_run": round(llm["new_tokens_in"] / 1e6 * cfg.price_per_m_input
                          + llm["new_tokens_out"] / 1e6 * cfg.price_per_m_output, 6),
        "cost_total": round(tin / 1e6 * cfg.price_per_m_input
                            + tout / 1e6 * cfg.price_per_m_output, 6),
        "prompt": cfg.prompt, "model": model_id(config), "backend": cfg.backend,
        "transient_failures": sum(s.get("transient_failures", 0) for s in shards)})
    per_prompt: dict[str, dict[str, int]] = {}
    for s in shards:  # attempts and kept rewrites per prompt (a routing has several)
        for name, c in s.get("by_prompt", {}).items():
            tot = per_prompt.setdefault(name, {"attempts": 0, "kept": 0})
            tot["attempts"] += c["attempts"]
            tot["kept"] += c["kept"]
    llm["by_prompt"] = per_prompt
    kept = [out.rel(s["kept_file"]) for s in shards if s.get("kept_file")]
    body = {**merge_counts(shards), "llm": llm, "outputs": {"kept": kept},
            "transient_failures": llm["transient_failures"]}
    if llm["transient_failures"]:
        body["incomplete"] = (f"{llm['transient_failures']} documents failed transiently "
                              "(rewrite.transient_error); the next run asks for them again")
    return body


def report_llm(run: RunInfo, manifest: Manifest) -> None:
    """Throughput, tokens and cost: catalog metrics and a table artifact."""
    llm = manifest.extra.get("llm")
    if not llm:
        return
    stage = manifest.stage
    run.catalog.record_metrics(run.run_id, [(0, f"{stage}.{n}", float(llm[n]))
                                            for n in LLM_METRICS if llm.get(n) is not None])
    run.artifacts.append(Artifact(
        key=f"datamill-{stage}-llm",
        table=[{"metric": n, "value": llm.get(n)} for n in ["prompt", "model", "backend",
                                                            *LLM_METRICS]],
        description=f"{stage}: LLM throughput, tokens and estimated cost, run {run.run_id}"))


def _llm_job(out: StageDir, key: str, mode: str, source: str, stage: str,
             **more: Any) -> dict[str, Any]:
    return {"key": key, "mode": mode, "source": source,
            "kept": str(out.path / "kept" / f"part-{key}.parquet"),
            "rejected": str(out.path / "rejected" / f"part-{key}.parquet"),
            "marker": str(out.shard_marker(key)), "reject_stage": stage, **more}


class Rewrite(Stage):
    name = "rewrite"
    code_version = 1
    recipe_key = "stages.rewrite"
    outputs = ("kept", "rejected")
    description = "identity, noise lab, or LLM rewriting (originals kept, rewrites added)"

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        cfg = run.recipe.stages.rewrite
        return None if cfg is None or _deferred(cfg) else cfg

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        from tasks import rewrite

        docs, config = up.docs, self.config(run)
        if config is None:  # pass-through: account for every doc, copy nothing
            n = docs.docs_kept
            return {"docs_in": n, "docs_kept": n, "docs_rejected": 0, "rejections": {},
                    "passthrough": True, "outputs": {"kept": docs.kept}}
        if config.is_llm:
            jobs = [_llm_job(out, shard_key(rel), "rewrite", run.abs(rel), "rewrite")
                    for rel in docs.kept]
            return run_llm(run, out, ex, config, jobs, "rewrite")
        jobs = []
        for rel in docs.kept:
            k = shard_key(rel)
            jobs.append((k, (run.abs(rel), str(out.path / "kept" / f"part-{k}.parquet"),
                             str(out.path / "rejected" / f"part-{k}.parquet"),
                             config.model_dump())))
        stats = ex.shards(out, rewrite.rewrite_shard, jobs, "rewrite")
        return {**merge_counts(stats), "outputs": {"kept": [out.rel(a[1]) for _, a in jobs]}}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        report_llm(run, manifest)


class Recycle(Stage):
    """After the filter, two modes.

    REWIRE (``select: rejected``): rewrite the documents the filter rejected (by quality
    rules, not dedup), run the rewrites through the same rules, and add those that pass to
    the kept documents. The filter's kept documents pass through; its rejects stay accounted
    in the filter stage. With a routed prompt, each reject's bucket picks its prompts.

    Routed (a prompt routed by quality bucket, ``select: all``): the filter's kept documents,
    which carry ``quality_bucket``, are the originals; each gets the prompts of its bucket's
    route, and the rewrites are added beside them, as the ``rewrite`` stage adds them."""

    name = "recycle"
    group = "filter"
    code_version = 1
    recipe_key = "stages.rewrite (select: rejected, or a prompt routed by quality bucket)"
    inputs = ("kept", "rejected")
    description = ("after the filter: REWIRE (its rejects rewritten; those passing its rules "
                   "join) or rewrites routed by quality bucket")

    def enabled(self, run: RunInfo, up: Upstream) -> bool:
        return _deferred(run.recipe.stages.rewrite)

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        return {"rewrite": run.recipe.stages.rewrite,
                "filters": run.recipe.stages.filter.filters}

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        import pyarrow.parquet as pq

        cfg, fcfg, filtered = run.recipe.stages.rewrite, run.recipe.stages.filter, up.docs
        if cfg.select == "all":  # routed by bucket: the kept documents are the originals
            jobs = [_llm_job(out, shard_key(rel), "route", run.abs(rel), "recycle")
                    for rel in filtered.kept]
            return run_llm(run, out, ex, cfg, jobs, "recycle")
        jobs, real = [], 0
        for kept_rel, rej_rel in zip(filtered.kept, filtered.output("rejected"), strict=True):
            n_real = pq.read_metadata(run.abs(kept_rel)).num_rows
            if not Path(run.abs(rej_rel)).is_file():  # a shard with no rejects
                real += n_real
                continue
            jobs.append(_llm_job(out, shard_key(rej_rel), "recycle", run.abs(rej_rel),
                                 "recycle", real=run.abs(kept_rel), filters=fcfg.filters))
        body = run_llm(run, out, ex, cfg, jobs, "recycle")
        body["docs_in"] += real  # shards without rejects: real documents passing through
        body["docs_kept"] += real
        body["outputs"]["kept"] = filtered.kept + body["outputs"]["kept"]
        return body

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        report_llm(run, manifest)
