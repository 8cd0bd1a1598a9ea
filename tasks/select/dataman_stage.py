"""Stage ``dataman``: DataMan's LLM ratings of every document (``tasks/select/dataman.py``).

Adds ``dataman_score`` (overall, 1-5), ``dataman_domain`` and the 13 criteria's columns to
every document; decisions are the filter stage's, over the stored columns, so changing them
never asks the LLM again:

    stages:
      extra:
        - use: tasks.select.dataman_stage:DataMan
          after: rewrite
          with:
            llm: {backend: openai, base_url: "http://127.0.0.1:8000/v1", model: my-model}
      filter:
        filters: {tasks.select.dataman_filter: {min_score: 4}}     # a threshold, or
        corpus: {tasks.select.dataman_topk: {percent: 30}}        # top 30 % per domain

``llm`` is any OpenAI-compatible server, or ``backend: local`` with a model path (the
released DataMan rater, whose terse replies the parser reads, where the user has it).
Versioned by the LLM (model, serving location, sampling), the prompt and the upstream docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.select import dataman
from tasks.select.annotate import LLMConfig, run_annotation
from tasks.stage import Artifact, Executor, Manifest, Resources, RunInfo, Stage, Upstream
from tasks.store import StageDir, merge_counts, shard_key


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    llm: LLMConfig = Field(description="the rating LLM (the rewrite stage's backends)")


class DataMan(Stage):
    name = "dataman"
    group = "filter"  # --until filter runs it; its columns are the filter stage's to decide on
    code_version = 1
    recipe_key = "stages.extra (use: tasks.select.dataman_stage:DataMan)"
    outputs = ("kept",)
    work = ("shard",)
    resources = Resources(cpus=1)
    description = "DataMan: LLM quality ratings (13 criteria + overall) and domain per document"
    Config = Config

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        from tasks.llm import cache_model
        from tasks.prompts.ratings import DATAMAN, digest

        c: Config = self.params
        return {"stage": c, "model": cache_model(c.llm.backend_dict()), "prompt": digest(DATAMAN)}

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        c: Config = self.params
        jobs = [{"key": shard_key(rel), "src": run.abs(rel),
                 "kept": out.part("kept", shard_key(rel)),
                 "marker": str(out.shard_marker(shard_key(rel)))} for rel in up.docs.kept]
        for j in jobs:
            Path(j["marker"]).parent.mkdir(parents=True, exist_ok=True)
        res = run_annotation(dataman.rate_shards, run, ex, c.llm, jobs, c.llm.model_dump(),
                             desc="dataman rate")
        shards, llm = res["shards"], res["llm"]
        domains: dict[str, int] = {}
        for s in shards:
            for d, n in s["domains"].items():
                domains[d] = domains.get(d, 0) + n
        body = {**merge_counts(shards), "outputs": {"kept": [out.rel(j["kept"]) for j in jobs]},
                "llm": llm, "domains": dict(sorted(domains.items(), key=lambda kv: -kv[1])),
                "score_hist": [sum(s["score_hist"][i] for s in shards) for i in range(6)],
                "unparsed": sum(s["unparsed"] for s in shards),
                "failed": sum(s["failed"] for s in shards)}
        if llm["transient_failures"]:
            body["incomplete"] = (f"{llm['transient_failures']} rating requests failed "
                                  "transiently; the next run asks for them again")
        return body

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        e = manifest.extra
        llm = e.get("llm", {})
        run.log.info("dataman: %d documents rated (%s unparsed, %s failed); %s requests, %s "
                     "cache hits, cost %s; domains %s", manifest.docs_in, e.get("unparsed"),
                     e.get("failed"), llm.get("requests"), llm.get("cache_hits"),
                     llm.get("cost_run"), e.get("domains"))
        rows = [(0, f"dataman.{k}", float(v)) for k, v in
                [("unparsed", e.get("unparsed")), ("failed", e.get("failed")),
                 ("requests", llm.get("requests")), ("new_tokens_in", llm.get("new_tokens_in")),
                 ("new_tokens_out", llm.get("new_tokens_out")), ("cost_run", llm.get("cost_run"))]
                if v is not None]
        run.catalog.record_metrics(run.run_id, rows)
        run.artifacts.append(Artifact(
            key="datamill-dataman", description=f"DataMan ratings, run {run.run_id}",
            table=[{"domain": d, "documents": n} for d, n in e.get("domains", {}).items()]))
