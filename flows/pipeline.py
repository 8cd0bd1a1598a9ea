"""The main flow: ingest -> rewrite -> filter (score, decide) -> tokenize -> train -> evaluate.

Each stage is a Prefect task that (1) computes its content-addressed version, (2) returns the
stored manifest if that version is complete — a cache hit, nothing recomputed — or (3) runs its
``tasks/`` functions shard by shard on Dask (CPU stages) or in a Ray actor (GPU stages), writes
the manifest, and records its counts in the catalog.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import loss_curve_artifact, scores_artifact
from flows.contracts import contract_gate
from infra import dask as dask_engine
from infra import ray as ray_engine
from infra.env import data_root as resolve_data_root
from tasks import dedup_index, ingest, report, rewrite, tokenize
from tasks import filter as filter_stage
from tasks.catalog import Catalog
from tasks.filters import dedup, minhash
from tasks.filters.base import get_filter
from tasks.recipe import STAGES, Recipe, load_recipe
from tasks.store import (
    StageDir,
    merge_counts,
    run_marked,
    version_of,
    write_parquet,
)


class AccountingError(RuntimeError):
    """A stage's docs_in != docs_kept + docs_rejected: something was lost or doubled."""


@dataclass
class RunContext:
    run_id: str
    recipe: Recipe
    recipe_path: str
    data_root: Path
    catalog: Catalog


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _abs(ctx: RunContext, rel: str) -> str:
    return str(ctx.data_root / rel)


def run_stage(
    ctx: RunContext, stage: str, config: Any, inputs: list[str],
    compute: Callable[[StageDir], dict[str, Any]],
) -> dict[str, Any]:
    """Content-addressed stage execution shared by every stage."""
    log = get_run_logger()
    version = version_of(stage, config, inputs)
    sd = StageDir(ctx.data_root, stage, version)
    t0 = time.perf_counter()
    if sd.done():
        manifest, cached = sd.manifest(), True
        log.info("%s %s: cached (%d docs in, %d kept)", stage, version,
                 manifest["docs_in"], manifest["docs_kept"])
    else:
        sd.path.mkdir(parents=True, exist_ok=True)
        body = compute(sd)
        manifest = sd.finish({"config": config, "inputs": inputs,
                              "seconds": time.perf_counter() - t0, **body})
        cached = False
        log.info("%s %s: %d docs in, %d kept, %d rejected in %.1fs", stage, version,
                 manifest["docs_in"], manifest["docs_kept"], manifest["docs_rejected"],
                 manifest["seconds"])
    if manifest["docs_in"] != manifest["docs_kept"] + manifest["docs_rejected"]:
        raise AccountingError(f"{stage} {version}: {manifest['docs_in']} in != "
                              f"{manifest['docs_kept']} kept + {manifest['docs_rejected']} "
                              "rejected")
    ctx.catalog.record_stage(ctx.run_id, manifest, time.perf_counter() - t0, str(sd.path),
                             cached)
    return manifest


def _sharded(sd: StageDir, fn: Callable[..., dict], jobs: list[tuple[str, tuple]],
             desc: str) -> list[dict[str, Any]]:
    """Run fn over shard jobs [(key, args)], skipping shards finished by an earlier attempt."""
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for key, args in jobs:
        done = sd.shard_done(key)
        if done is not None:
            results[key] = done
        else:
            todo.append((key, args))
    if todo:
        out = dask_engine.map_shards(
            run_marked, [(str(sd.shard_marker(k)), fn, *a) for k, a in todo], desc)
        results.update({k: r for (k, _), r in zip(todo, out, strict=True)})
    return [results[k] for k, _ in jobs]


def _shard_key(path: str) -> str:
    return Path(path).name.removeprefix("part-").removesuffix(".parquet")


# ----------------------------------------------------------------------------- stages
@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(ctx: RunContext) -> dict[str, Any]:
    inp, cfg = ctx.recipe.input, ctx.recipe.stages.ingest
    files = ingest.expand_inputs(inp.paths)
    prints = [ingest.fingerprint(f) for f in files]
    if cfg.incremental:
        # deltas: only files whose content this recipe has not consumed before
        for p in prints:
            p["sha256"] = ingest.content_sha256(Path(p["path"]))
        seen = ctx.catalog.consumed_hashes(ctx.recipe.name)
        skipped = [p for p in prints if p["sha256"] in seen]
        prints = [p for p in prints if p["sha256"] not in seen]
        files = [Path(p["path"]) for p in prints]
        get_run_logger().info("incremental ingest: %d new file(s), %d consumed before",
                              len(prints), len(skipped))
    config = {"input": inp.model_dump(exclude={"paths"}), "ingest": cfg.model_dump()}
    inputs = [f"{p['path']}:{p['size']}:{p['mtime_ns']}" for p in prints]

    def compute(sd: StageDir) -> dict[str, Any]:
        jobs = [(f"{i:05d}", (str(f), f"{i:05d}", str(sd.path), inp.format, inp.fields, cfg))
                for i, f in enumerate(files)]
        stats = _sharded(sd, ingest.ingest_file, jobs, "ingest")
        kept = sorted(sd.rel(sd.path / k) for s in stats for k in s["kept"])
        langs: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for s in stats:
            for k, v in s.get("langs", {}).items():
                langs[k] = langs.get(k, 0) + v
            for k, v in s.get("skipped", {}).items():
                skipped[k] = skipped.get(k, 0) + v
        return {**merge_counts(stats), "files": prints,
                "quarantined": sum(s.get("quarantined", 0) for s in stats),
                "langs": dict(sorted(langs.items())),  # kept documents per language
                "skipped": dict(sorted(skipped.items())),  # records that are not documents
                "outputs": {"kept": kept,
                            "quarantine": sd.rel(sd.path / "quarantine")}}

    manifest = run_stage(ctx, "ingest", config, inputs, compute)
    ctx.catalog.record_metrics(ctx.run_id, [(0, f"ingest.lang.{lang}", float(n))
                                            for lang, n in manifest.get("langs", {}).items()])
    if cfg.incremental:
        ctx.catalog.record_inputs(ctx.run_id, ctx.recipe.name, manifest["version"], prints)
    return manifest


@task(name="rewrite", cache_policy=NO_CACHE)
def rewrite_task(ctx: RunContext, upstream: dict[str, Any]) -> dict[str, Any]:
    cfg = ctx.recipe.stages.rewrite
    # select=rejected recycles the filter's rejects after the filter (recycle_task): here
    # documents pass through
    deferred = cfg is not None and cfg.is_llm and cfg.select == "rejected"
    config = None if cfg is None or deferred else _rewrite_config(cfg)

    def compute(sd: StageDir) -> dict[str, Any]:
        if config is None:  # pass-through: account for every doc, copy nothing
            n = upstream["docs_kept"]
            return {"docs_in": n, "docs_kept": n, "docs_rejected": 0, "rejections": {},
                    "passthrough": True, "outputs": {"kept": upstream["outputs"]["kept"]}}
        if cfg.is_llm:
            jobs = []
            for rel in upstream["outputs"]["kept"]:
                k = _shard_key(rel)
                jobs.append({"key": k, "mode": "rewrite", "source": _abs(ctx, rel),
                             "kept": str(sd.path / "kept" / f"part-{k}.parquet"),
                             "rejected": str(sd.path / "rejected" / f"part-{k}.parquet"),
                             "marker": str(sd.shard_marker(k)), "reject_stage": "rewrite"})
            return _run_llm(ctx, sd, cfg, jobs, "rewrite")
        jobs = []
        for rel in upstream["outputs"]["kept"]:
            k = _shard_key(rel)
            jobs.append((k, (_abs(ctx, rel), str(sd.path / "kept" / f"part-{k}.parquet"),
                             str(sd.path / "rejected" / f"part-{k}.parquet"), config)))
        stats = _sharded(sd, rewrite.rewrite_shard, jobs, "rewrite")
        return {**merge_counts(stats),
                "outputs": {"kept": [sd.rel(a[1]) for _, a in jobs]}}

    manifest = run_stage(ctx, "rewrite", config, [upstream["version"]], compute)
    _report_llm(ctx, manifest)
    return manifest


# How a rewrite runs, not what it makes: changing these reuses the stage's output.
_REWRITE_OPERATIONAL = {"base_url", "api_key_env", "api_key_secret", "max_concurrency",
                        "timeout_s", "max_retries", "backoff_base_s", "backoff_cap_s",
                        "breaker_threshold", "breaker_cooldown_s", "max_outage_s",
                        "local_actors", "local_batch_size", "price_per_m_input",
                        "price_per_m_output"}


def _rewrite_config(cfg: Any) -> dict[str, Any]:
    """The rewrite stage's version config: a prompt file's content, not its path, counts;
    where and how fast the model is reached does not."""
    config = cfg.model_dump()
    if cfg.is_llm:
        config = {k: v for k, v in config.items() if k not in _REWRITE_OPERATIONAL}
        from tasks.prompts import load_prompt

        config["prompt_digest"] = load_prompt(cfg.prompt).digest()
    return config


def _api_key(cfg: Any) -> str | None:
    """A Prefect Secret block's value, resolved here in the flow; never logged or stored."""
    if cfg.backend != "openai" or not cfg.api_key_secret:
        return None
    from prefect.blocks.system import Secret

    return Secret.load(cfg.api_key_secret).get()


def _llm_cache_dir(ctx: RunContext) -> Path:
    import os

    return Path(os.environ.get("DATAMILL_LLM_CACHE") or ctx.data_root / "llm_cache")


def _run_llm(ctx: RunContext, sd: StageDir, cfg: Any, jobs: list[dict[str, Any]],
             desc: str) -> dict[str, Any]:
    """One task drives every shard through one request pool (global concurrency, no sag at
    shard boundaries): on a Dask worker for HTTP backends, here for Ray actors (local)."""
    from tasks.llm.cache import compact

    config = cfg.model_dump()
    cache_dir = str(_llm_cache_dir(ctx))
    args = (jobs, config, cache_dir, _api_key(cfg))
    if cfg.backend == "local":
        out = rewrite.rewrite_llm(*args)
    else:
        out = dask_engine.map_shards(rewrite.rewrite_llm, [args], desc)[0]
    compact(cache_dir)  # the flow process is the cache's only compactor
    shards = out["shards"]
    run = dict(out["run"])
    tin = sum(s["tokens_in"] for s in shards)
    tout = sum(s["tokens_out"] for s in shards)
    secs = max(run["llm_seconds"], 1e-9)
    attempts = sum(s["attempts"] for s in shards)
    run.update({
        "attempts": attempts, "rewrites_kept": sum(s["rewrites_kept"] for s in shards),
        "tokens_in": tin, "tokens_out": tout,
        "docs_per_s": round(attempts / secs, 3) if run["new_generations"] else None,
        "tokens_out_per_s": round(run["new_tokens_out"] / secs, 3),
        # what this run paid, and what the stage's data cost in all (cache hits included)
        "cost_run": round(run["new_tokens_in"] / 1e6 * cfg.price_per_m_input
                          + run["new_tokens_out"] / 1e6 * cfg.price_per_m_output, 6),
        "cost_total": round(tin / 1e6 * cfg.price_per_m_input
                            + tout / 1e6 * cfg.price_per_m_output, 6),
        "prompt": cfg.prompt, "model": _model_id(config),
        "backend": cfg.backend})
    kept_rewrites = [sd.rel(s["kept_file"]) for s in shards if s.get("kept_file")]
    return {**merge_counts(shards), "llm": run, "outputs": {"kept": kept_rewrites}}


def _model_id(config: dict[str, Any]) -> str:
    from tasks.llm import model_id

    return model_id(config)


def _report_llm(ctx: RunContext, manifest: dict[str, Any]) -> None:
    """Throughput, tokens and cost: catalog metrics and a Prefect table artifact."""
    run = manifest.get("llm")
    if not run:
        return
    stage = manifest["stage"]
    names = ["attempts", "rewrites_kept", "requests", "retries", "cache_hits", "new_generations",
             "tokens_in", "tokens_out", "new_tokens_in", "new_tokens_out", "docs_per_s",
             "tokens_out_per_s", "llm_seconds", "paused_s", "breaker_opened", "cost_run",
             "cost_total"]
    rows = [(0, f"{stage}.{n}", float(run[n])) for n in names if run.get(n) is not None]
    ctx.catalog.record_metrics(ctx.run_id, rows)
    create_table_artifact(
        key=f"datamill-{stage}-llm", table=[{"metric": n, "value": run.get(n)} for n in
                                            ["prompt", "model", "backend", *names]],
        description=f"{stage}: LLM throughput, tokens and estimated cost, run {ctx.run_id}")


@task(name="recycle", cache_policy=NO_CACHE)
def recycle_task(ctx: RunContext, upstream: dict[str, Any]) -> dict[str, Any]:
    """REWIRE: rewrite the documents the filter rejected (by quality rules, not dedup), run
    the rewrites through the same rules, and add those that pass to the kept documents. The
    filter's kept documents pass through; its rejects stay accounted in the filter stage."""
    cfg = ctx.recipe.stages.rewrite
    fcfg = ctx.recipe.stages.filter
    config = {"rewrite": _rewrite_config(cfg), "filters": fcfg.model_dump()["filters"]}

    def compute(sd: StageDir) -> dict[str, Any]:
        jobs = []
        real = 0
        for kept_rel, rej_rel in zip(upstream["outputs"]["kept"],
                                     upstream["outputs"]["rejected"], strict=True):
            import pyarrow.parquet as pq

            n_real = pq.read_metadata(_abs(ctx, kept_rel)).num_rows
            if not Path(_abs(ctx, rej_rel)).is_file():  # a shard with no rejects
                real += n_real
                continue
            k = _shard_key(rej_rel)
            jobs.append({"key": k, "mode": "recycle", "source": _abs(ctx, rej_rel),
                         "real": _abs(ctx, kept_rel), "filters": fcfg.filters,
                         "kept": str(sd.path / "kept" / f"part-{k}.parquet"),
                         "rejected": str(sd.path / "rejected" / f"part-{k}.parquet"),
                         "marker": str(sd.shard_marker(k)), "reject_stage": "recycle"})
        body = _run_llm(ctx, sd, cfg, jobs, "recycle")
        body["docs_in"] += real  # shards without rejects: real documents passing through
        body["docs_kept"] += real
        body["outputs"]["kept"] = list(upstream["outputs"]["kept"]) + body["outputs"]["kept"]
        return body

    manifest = run_stage(ctx, "recycle", config, [upstream["version"]], compute)
    _report_llm(ctx, manifest)
    return manifest


@task(name="score", cache_policy=NO_CACHE)
def score_task(ctx: RunContext, upstream: dict[str, Any]) -> dict[str, Any]:
    fcfg = ctx.recipe.stages.filter
    ded = fcfg.exact_dedup.model_dump() if fcfg.exact_dedup else None
    url = fcfg.url_dedup.model_dump() if fcfg.url_dedup else None
    # only what changes scores goes into this version: thresholds live in the decide step
    near = fcfg.minhash_dedup
    config = {"filters": {n: {"score_version": get_filter(n).SCORE_VERSION, **c.score_params()}
                          for n, c in fcfg.filters.items()},
              "order": list(fcfg.filters),  # edit steps change the text the next steps see
              "exact_dedup": ded,
              "url_dedup": url,
              "minhash_dedup": ({"score_version": minhash.SCORE_VERSION, **near.score_params()}
                                if near else None)}

    def compute(sd: StageDir) -> dict[str, Any]:
        jobs = []
        for rel in upstream["outputs"]["kept"]:
            k = _shard_key(rel)
            jobs.append((k, (_abs(ctx, rel), str(sd.path / "scored" / f"part-{k}.parquet"),
                             fcfg.filters, ded, near, url)))
        stats = _sharded(sd, filter_stage.score_shard, jobs, "score")
        return {**merge_counts(stats), "outputs": {"kept": [sd.rel(a[1]) for _, a in jobs]}}

    manifest = run_stage(ctx, "score", config, [upstream["version"]], compute)
    if manifest.get("edits"):  # lines removed, PII replaced: to the catalog and the log
        get_run_logger().info("edits: %s", manifest["edits"])
        ctx.catalog.record_metrics(ctx.run_id, [(0, f"edits.{k}", float(v))
                                                for k, v in sorted(manifest["edits"].items())])
    return manifest


def _without(keys: Any, seen: Any) -> Any:
    """``keys`` minus the (shard, row) pairs in ``seen``."""
    import numpy as np
    import pyarrow as pa

    def code(t: Any) -> Any:
        return (t.column("shard").to_numpy().astype(np.int64) << 40) | t.column("row").to_numpy()

    if len(seen) == 0:
        return keys
    return keys.filter(pa.array(~np.isin(code(keys), code(seen))))


def _drops_by_shard(drops: list[dict[str, list[int]]], rule: str, t: Any) -> None:
    for s, r in zip(t.column("shard").to_pylist(), t.column("row").to_pylist(), strict=True):
        drops[s].setdefault(rule, []).append(r)


@task(name="filter", cache_policy=NO_CACHE)
def filter_task(ctx: RunContext, upstream: dict[str, Any]) -> dict[str, Any]:
    import pyarrow as pa

    fcfg = ctx.recipe.stages.filter
    config = fcfg.model_dump()
    exact, near = fcfg.exact_dedup is not None, fcfg.minhash_dedup is not None
    url = fcfg.url_dedup is not None
    index = fcfg.dedup_index if (exact or near or url) else None
    inputs = [upstream["version"]]
    parts: list[dict[str, Any]] = []
    if index:
        # the index parts seen are an input: a new part elsewhere means a new decision here
        parts = dedup_index.snapshot(ctx.catalog, index, upstream["version"])
        inputs += [f"dedup_index:{index}:{p['stage_version']}" for p in parts]
        for p in parts:
            p["files"] = [_abs(ctx, f) for f in p["files"]]

    def compute(sd: StageDir) -> dict[str, Any]:
        scored = [_abs(ctx, rel) for rel in upstream["outputs"]["kept"]]
        drops: list[dict[str, list[int]]] = [{} for _ in scored]
        near_by_shard: list[Any] = [None] * len(scored)
        if exact or near or url:
            # pass 1: keys of docs passing the rules, from every shard; survivors chosen here
            cands = dask_engine.map_shards(
                filter_stage.dedup_candidates,
                [(p, i, fcfg.filters, exact, near, url) for i, p in enumerate(scored)],
                "dedup keys")
            for on, key, rule, seen_rule, col, unique in (
                (exact, "exact", dedup.RULE, dedup_index.SEEN_EXACT, dedup.HASH_COLUMN,
                 dedup.duplicates),
                (url, "url", dedup.URL_RULE, dedup_index.SEEN_URL, dedup.URL_HASH_COLUMN,
                 dedup.duplicates),
            ):
                if not on:
                    continue
                keys = pa.concat_tables([c[key] for c in cands])
                if parts:
                    seen = dedup_index.seen_keys(keys, parts, col)
                    _drops_by_shard(drops, seen_rule, seen)
                    keys = _without(keys, seen)
                _drops_by_shard(drops, rule, unique(keys))
            if near:
                keys = pa.concat_tables([c["near"] for c in cands])
                if parts:
                    seen = dedup_index.seen_near(keys, parts, minhash.BANDS_COLUMN,
                                                 minhash.SIG_COLUMN,
                                                 fcfg.minhash_dedup.threshold)
                    _drops_by_shard(drops, dedup_index.SEEN_NEAR, seen)
                    keys = _without(keys, seen)
                cl = minhash.clusters(keys, threshold=fcfg.minhash_dedup.threshold)
                shard_col = cl.column("shard").to_numpy()
                for i in range(len(scored)):
                    near_by_shard[i] = cl.filter(pa.array(shard_col == i))
        jobs = []
        for i, p in enumerate(scored):
            k = _shard_key(p)
            jobs.append((k, (p, str(sd.path / "kept" / f"part-{k}.parquet"),
                             str(sd.path / "rejected" / f"part-{k}.parquet"), fcfg.filters,
                             drops[i], near_by_shard[i],
                             str(sd.path / "index" / f"part-{k}.parquet") if index else None)))
        stats = _sharded(sd, filter_stage.decide_shard, jobs, "filter")
        outputs = {"kept": [sd.rel(a[1]) for _, a in jobs],
                   "rejected": [sd.rel(a[2]) for _, a in jobs]}
        if index:
            outputs["index"] = [sd.rel(a[6]) for _, a in jobs]
        return {**merge_counts(stats), "outputs": outputs}

    manifest = run_stage(ctx, "filter", config, inputs, compute)
    if index:
        dedup_index.register(ctx.catalog, index, manifest["version"], upstream["version"],
                             manifest["outputs"]["index"],
                             manifest["docs_kept"], ctx.run_id)
    return manifest


def _given_tokenizer(ctx: RunContext) -> Path | None:
    """The tokenizer.json to use instead of training one: with train.init_from the init run's
    (the model only knows its ids), else a user's tokenize.tokenizer; None = train one."""
    from tasks import train as train_lib

    cfg, tcfg = ctx.recipe.stages.tokenize, ctx.recipe.train_config()
    if cfg.tokenizer:
        tokenize.check_tokenizer(Path(cfg.tokenizer))
    if not tcfg.init_from:
        return Path(cfg.tokenizer) if cfg.tokenizer else None
    init = train_lib.resolve_init(tcfg.init_from, ctx.data_root)
    vocab = tokenize.check_tokenizer(init.tokenizer)
    if init.data_dir is not None and (init.data_dir / "manifest.json").is_file():
        # BPE may stop short of vocab_size on little text: compare what the recipes asked for
        vocab = json.loads((init.data_dir / "manifest.json").read_text())["config"]["vocab_size"]
    if cfg.tokenizer:
        if Path(cfg.tokenizer).read_bytes() != init.tokenizer.read_bytes():
            raise ValueError(f"tokenize.tokenizer {cfg.tokenizer} is not the tokenizer of "
                             f"train.init_from {tcfg.init_from!r} ({init.tokenizer}); drop one")
    elif cfg.vocab_size != vocab:
        raise ValueError(f"tokenize.vocab_size is {cfg.vocab_size}, but train.init_from "
                         f"{tcfg.init_from!r} was trained with a vocabulary of {vocab}; its "
                         f"tokenizer is reused, so set tokenize.vocab_size: {vocab}")
    return init.tokenizer


@task(name="tokenize", cache_policy=NO_CACHE)
def tokenize_task(ctx: RunContext, upstream: dict[str, Any]) -> dict[str, Any]:
    cfg = ctx.recipe.stages.tokenize
    config = cfg.model_dump()
    given = _given_tokenizer(ctx)
    if given is not None:  # a given tokenizer: its content, not its path, is the input
        import hashlib

        config["tokenizer"] = hashlib.sha256(given.read_bytes()).hexdigest()

    def compute(sd: StageDir) -> dict[str, Any]:
        kept = [_abs(ctx, rel) for rel in upstream["outputs"]["kept"]]
        tok_path = sd.path / "tokenizer.json"
        if given is not None:
            shutil.copyfile(given, tok_path)
        elif not tok_path.exists():
            dask_engine.map_shards(_train_tokenizer, [(kept, cfg, str(tok_path))], "tokenizer")
        jobs = [(_shard_key(p), (p, str(tok_path), str(sd.path), _shard_key(p), cfg.seq_len,
                                 cfg.heldout_fraction)) for p in kept]
        stats = _sharded(sd, tokenize.pack_shard, jobs, "tokenize")
        meta = tokenize.write_meta(sd.path, tok_path, cfg.seq_len, stats)
        by_source: dict[str, int] = {}
        for s in stats:
            for src, n in s["tokens_by_source"].items():
                by_source[src] = by_source.get(src, 0) + n
        return {**merge_counts(stats),
                "train_docs": sum(s["train_docs"] for s in stats),
                "heldout_docs": sum(s["heldout_docs"] for s in stats),
                "tokens": sum(s["tokens"] for s in stats),
                "train_sequences": sum(s["n_seq"] for s in stats),
                "tokens_by_source": by_source, "vocab_size": meta["vocab_size"],
                "outputs": {"data_dir": sd.rel(sd.path)}}

    return run_stage(ctx, "tokenize", config, [upstream["version"]], compute)


def _train_tokenizer(kept: list[str], cfg: Any, out: str) -> str:
    texts = tokenize.iter_train_texts(kept, cfg.heldout_fraction, cfg.tokenizer_train_bytes)
    tokenize.train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency, Path(out))
    return out


def _tail_metrics(path: Path, stop: threading.Event, log: Any) -> None:
    """Stream the trainer's metrics lines into the Prefect log while it runs."""
    pos = 0
    while True:
        stopped = stop.wait(1.0)
        if path.exists():
            if path.stat().st_size < pos:  # a resumed run cut the file back to its checkpoint
                pos = 0
            with open(path) as fh:
                fh.seek(pos)
                while (line := fh.readline()).endswith("\n"):
                    m = json.loads(line)
                    log.info("train step %d loss %.4f lr %.2e grad_norm %.3f %.0f tok/s",
                             m["step"], m["loss"], m["lr"], m["grad_norm"], m["tokens_per_s"])
                    pos = fh.tell()
        if stopped:
            return


def _train_workers(tcfg: Any) -> int:
    """train.workers, or every GPU when there are several and the batch splits over them."""
    if tcfg.workers > 1:
        return int(tcfg.workers)
    gpus = int(ray_engine.gpus_available())
    if gpus > 1 and tcfg.batch_size % gpus == 0:
        return gpus
    if gpus > 1:
        get_run_logger().warning("%d GPUs, but batch_size %d does not split over them: "
                                 "training on one", gpus, tcfg.batch_size)
    return 1


@task(name="train", cache_policy=NO_CACHE)
def train_task(ctx: RunContext, upstream: dict[str, Any], tcfg: Any) -> dict[str, Any]:
    """Train one proxy (one seed) in a Ray actor, or data-parallel under Ray Train."""
    from tasks import train as train_lib

    config = tcfg.trajectory()  # bookkeeping (log/checkpoint cadence) does not change the model
    log = get_run_logger()
    inputs = [upstream["version"]]
    init = None
    if tcfg.init_from:  # continual pre-training: the model it starts from is an input
        init = train_lib.resolve_init(tcfg.init_from, ctx.data_root, seed=tcfg.seed)
        inputs.append(f"init:{init.identity}")
        log.info("continuing from %s (replay %.0f%% of %s)", init.checkpoint,
                 100 * tcfg.replay, tcfg.replay_data or init.data_dir)

    def compute(sd: StageDir) -> dict[str, Any]:
        data_dir = _abs(ctx, upstream["outputs"]["data_dir"])
        metrics = sd.path / "metrics.jsonl"  # train() resumes it after a crash, or starts it
        stop = threading.Event()
        tail = threading.Thread(target=_tail_metrics, args=(metrics, stop, log), daemon=True)
        tail.start()
        kwargs = {"config": tcfg, "data_dir": Path(data_dir), "out_dir": sd.path,
                  "metrics_path": metrics, "init": init}
        try:
            workers = _train_workers(tcfg)
            if workers > 1:
                log.info("training data-parallel on %d Ray Train workers", workers)
                ray_engine.run_distributed("tasks.train:train", kwargs, workers, sd.path / "ray")
                summary = json.loads((sd.path / "summary.json").read_text())
            else:
                ray = ray_engine.init()
                actor = ray_engine.start_actor()
                try:
                    summary = ray.get(actor.run.remote("tasks.train:train", **kwargs))
                finally:
                    ray.kill(actor)
        finally:
            stop.set()
            tail.join(timeout=5)
        n = upstream["train_docs"]
        return {"docs_in": n, "docs_kept": n, "docs_rejected": 0, "summary": summary,
                "init": {"run_id": init.run_id, "identity": init.identity,
                         "checkpoint": str(init.checkpoint)} if init else None,
                "outputs": {"checkpoint": sd.rel(sd.path / "checkpoint"),
                            "metrics": sd.rel(metrics)}}

    manifest = run_stage(ctx, "train", config, inputs, compute)
    rows = []
    for line in (ctx.data_root / manifest["outputs"]["metrics"]).read_text().splitlines():
        m = json.loads(line)
        rows += [(m["step"], k, float(m[k])) for k in ("loss", "lr", "grad_norm", "tokens_per_s")]
    ctx.catalog.record_metrics(ctx.run_id, rows, seed=tcfg.seed)
    return manifest


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(ctx: RunContext, tok: dict[str, Any], trained: dict[str, Any],
                  ingested: dict[str, Any] | None = None, stage: str = "evaluate"
                  ) -> dict[str, Any]:
    """stage="baseline": another model (a refresh's promoted one) scored on this run's data,
    recorded as its own stage, not as this run's evals."""
    cfg = ctx.recipe.stages.evaluate
    config = cfg.model_dump()
    train_dir = ctx.data_root / Path(trained["outputs"]["checkpoint"]).parent
    ckpt = str(train_dir / "checkpoint")
    inputs = [tok["version"], trained["version"]]
    raw = cfg.heldout == "raw"
    if raw:
        if ingested is None:
            raise ValueError("evaluate.heldout: raw needs the ingest stage's output")
        inputs.append(f"raw:{ingested['version']}")

    def compute(sd: StageDir) -> dict[str, Any]:
        from tasks.evaluate import read_raw_heldout

        data_dir = ctx.data_root / tok["outputs"]["data_dir"]
        if raw:
            docs = read_raw_heldout([_abs(ctx, p) for p in ingested["outputs"]["kept"]],
                                    ctx.recipe.stages.tokenize.heldout_fraction, cfg.max_docs)
        else:
            docs = tokenize.read_heldout(data_dir, cfg.max_docs)
        seq_len = json.loads((data_dir / "meta.json").read_text())["seq_len"]
        ray = ray_engine.init()
        actor = ray_engine.start_actor()
        try:
            res = ray.get(actor.run.remote("tasks.evaluate:evaluate_run", train_dir, docs,
                                           seq_len, cfg.batch_size, cfg.tasks, cfg.max_items,
                                           cfg.seed, cfg.checkpoints, cfg.average_last))
        finally:
            ray.kill(actor)
        import pyarrow as pa

        write_parquet(pa.Table.from_pylist(res.pop("items")), sd.path / "items.parquet")
        (sd.path / "results.json").write_text(json.dumps(res, indent=2))
        return {"docs_in": len(docs), "docs_kept": len(docs), "docs_rejected": 0,
                "results": res, "outputs": {"results": sd.rel(sd.path / "results.json"),
                                            "items": sd.rel(sd.path / "items.parquet")}}

    manifest = run_stage(ctx, stage, config, inputs, compute)
    if stage != "evaluate":
        return manifest
    res = manifest["results"]
    seed = trained["config"]["seed"]
    ctx.catalog.record_evals(ctx.run_id, ckpt, _eval_rows(res), seed=seed)
    for c in res.get("checkpoints", []):  # checkpoint noise: each step under its own path
        ctx.catalog.record_evals(ctx.run_id, c["path"], _eval_rows(c), seed=seed)
    return manifest


def _eval_rows(res: dict[str, Any]) -> list[tuple[str, str, float]]:
    rows = [("heldout", "bpb", res["overall"]["bpb"])]
    rows += [(f"heldout/{src}", "bpb", r["bpb"])
             for src, r in sorted(res.get("by_source", {}).items())]
    for name, r in sorted(res.get("tasks", {}).items()):
        rows += [(name, m, r[m]) for m in ("acc", "acc_norm", "acc_centred", "items")]
    return rows


# ----------------------------------------------------------------------------- the flow
def _publish(ctx: RunContext, status: str) -> str:
    run = ctx.catalog.show(ctx.run_id)
    run["status"] = status
    path = ctx.data_root / "runs" / ctx.run_id / "report.html"
    report.write_html(run, path)
    create_table_artifact(key="datamill-funnel", table=report.funnel_rows(run),
                          description=f"Funnel of run {ctx.run_id}")
    if run["rejections"]:
        create_table_artifact(
            key="datamill-rejections",
            table=[{"stage": r["stage"], "rule": r["rule"], "dropped first": r["docs"],
                    "would drop alone": r["docs_alone"]} for r in run["rejections"]],
            description=f"Rejections by rule, run {ctx.run_id}")
    if run["evals"]:
        create_table_artifact(key="datamill-eval", table=report.eval_rows(run),
                              description=f"Held-out bits per byte, run {ctx.run_id}")
    loss = [{"seed": m.get("seed") or 0, "step": m["step"], "loss": round(m["value"], 4)}
            for m in run["metrics"] if m["name"] == "loss"]
    if loss:
        create_table_artifact(key="datamill-loss", table=loss,
                              description=f"Training loss by step, run {ctx.run_id}")
    create_markdown_artifact(key="datamill-report", markdown=report.markdown_summary(run)
                             + f"\nHTML report: `{path}`\n", description="datamill run summary")
    return str(path)


def _flow_run_name() -> str:
    """The flow run is named by the datamill run id, so the UI and the catalog agree."""
    from prefect.runtime import flow_run

    return flow_run.parameters.get("run_id") or new_run_id()


@flow(name="datamill-run", flow_run_name=_flow_run_name, log_prints=True)
def run_recipe(recipe_path: str, until: str | None = None, data_root: str | None = None,
               run_id: str | None = None) -> dict[str, Any]:
    """Run a recipe end to end (or up to ``until``); returns the run's summary."""
    return execute(load_recipe(recipe_path), recipe_path, until, data_root, run_id)


def execute(recipe: Recipe, recipe_path: str, until: str | None = None,
            data_root: str | None = None, run_id: str | None = None,
            after: Callable[[RunContext], None] | None = None) -> dict[str, Any]:
    """The run's body, inside a flow run (run_recipe's, or flows/refresh.py's with the recipe
    it derives); ``after(ctx)`` runs once the stages are done, before the run is published."""
    if until is not None and until not in STAGES:
        raise ValueError(f"--until must be one of {STAGES}, not {until!r}")
    root = resolve_data_root(data_root, recipe.data_root)
    if run_id is None:  # a deployment's run: the name _flow_run_name gave it
        from prefect.runtime import flow_run

        run_id = flow_run.name or new_run_id()
    ctx = RunContext(run_id, recipe, str(Path(recipe_path).resolve()), root,
                     Catalog(root / "catalog.duckdb"))
    log = get_run_logger()
    log.info("run %s: recipe %s, data root %s", ctx.run_id, recipe.name, root)
    ctx.catalog.start_run(ctx.run_id, recipe.name, ctx.recipe_path, recipe.model_dump())
    last = STAGES.index(until) if until else len(STAGES) - 1
    try:
        m = ingested = ingest_task(ctx)
        contract_gate(ctx, m)
        if ctx.recipe.stages.ingest.incremental and m["docs_in"] == 0:
            log.info("nothing to do: no new input files for recipe %s", recipe.name)
            last = 0
        if last >= 1:
            m = rewrite_task(ctx, m)
        if last >= 2:
            m = filter_task(ctx, score_task(ctx, m))
            scores_artifact(ctx, m)
            rw = ctx.recipe.stages.rewrite
            if rw is not None and rw.is_llm and rw.select == "rejected":
                m = recycle_task(ctx, m)  # REWIRE: rewrites of rejects that now pass
            contract_gate(ctx, m)
        if last >= 3:
            tok = tokenize_task(ctx, m)
            contract_gate(ctx, tok)  # a broken contract fails the run before training
        if last >= 4:
            dask_engine.release_local()  # CPU stages are done; give the cores to training
            # one proxy per seed, each its own content-addressed stage (shared across recipes)
            trained = [train_task(ctx, tok, c) for c in recipe.train_config().per_seed()]
            loss_curve_artifact(ctx)
        if last >= 5:
            for t in trained:
                evaluate_task(ctx, tok, t, ingested)
        if after is not None:
            after(ctx)
    except BaseException as e:
        ctx.catalog.finish_run(ctx.run_id, "failed", error=f"{type(e).__name__}: {e}")
        raise
    path = _publish(ctx, "completed")
    ctx.catalog.finish_run(ctx.run_id, "completed", report=path)
    log.info("report: %s", path)
    run = ctx.catalog.show(ctx.run_id)
    return {"run_id": ctx.run_id, "status": run["status"], "report": run["report"],
            "data_root": str(root), "stages": run["stages"]}
