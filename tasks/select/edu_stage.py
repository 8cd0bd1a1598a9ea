"""Stage ``fineweb_edu``: FineWeb-Edu's educational-value score on every document.

An LLM scores a seeded sample with the published 0-5 prompt, a ridge head is fit from the
sample's embeddings (the ``embed`` stage's, which must run right before it) to those scores,
and the head scores every document into a column (``edu_score``, 0-5). The manifest reports
the annotation's requests, tokens and cost and the head's held-out RMSE, MAE and F1 at >= 3.
Decisions are the filter stage's, over the stored column; FineWeb-Edu's ``keep >= 3``
(``round(edu_score) >= 3``) is the document filter ``tasks.select.edu_filter``, so a new
threshold re-runs only the filter:

    stages:
      extra:
        - use: tasks.select.embed_stage:Embed
          after: rewrite
        - use: tasks.select.edu_stage:FinewebEdu
          after: embed
          with:
            llm: {backend: openai, base_url: "http://127.0.0.1:8000/v1", model: my-model}
      filter:
        filters: {tasks.select.edu_filter: {min_score: 3}}

Versioned by the LLM (model, serving location, sampling), the prompt, the sample, the head's
parameters and the embeddings' version. The annotated sample (``annotations.parquet``) and the
head (``head.json``) are kept in the stage folder; a crash resumes from the generation cache.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.select import edu
from tasks.select.annotate import LLMConfig, run_annotation
from tasks.select.embed_stage import embeddings_for
from tasks.stage import Artifact, Executor, Manifest, Resources, RunInfo, Stage, Upstream
from tasks.store import StageDir, atomic_write_json, merge_counts, shard_key

COLUMN = "edu_score"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    llm: LLMConfig = Field(description="the annotating LLM (the rewrite stage's backends)")
    sample: int = Field(1000, ge=2, description="documents the LLM annotates (a seeded "
                        "uniform sample of the pool)")
    seed: int = Field(0, description="which documents are sampled and which are held out")
    heldout_fraction: float = Field(0.2, ge=0, lt=1, description="share of the annotated "
                                    "sample kept out of the fit, to report the head's fit")
    alpha: float | None = Field(None, gt=0, description="ridge L2 penalty of the regression "
                                "head; null = chosen by 5-fold cross-validation (0.001-10)")
    column: str = Field(COLUMN, pattern=r"^edu_[A-Za-z0-9_]+$",
                        description="the score column (edu_...: the edu filter reads it)")


class FinewebEdu(Stage):
    name = "fineweb_edu"
    group = "filter"  # --until filter runs it; its column is the filter stage's to decide on
    code_version = 1
    recipe_key = "stages.extra (use: tasks.select.edu_stage:FinewebEdu)"
    outputs = ("kept", "annotations", "head")
    work = ("corpus", "shard")
    resources = Resources(cpus=1)
    description = "FineWeb-Edu: LLM-annotate a sample, fit a head on embeddings, score all"
    Config = Config

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        from tasks.llm import cache_model
        from tasks.prompts.ratings import FINEWEB_EDU, digest

        c: Config = self.params
        # the model by its serving location too, as the generation cache keys it
        return {"stage": c, "model": cache_model(c.llm.backend_dict()),
                "prompt": digest(FINEWEB_EDU)}

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        ins = [up.docs.version]
        if up.has("embed"):
            ins.append(up.get("embed").version)
        return ins

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        c: Config = self.params
        vecs = [run.abs(p) for p in embeddings_for(up, self.name)]
        shards = [run.abs(rel) for rel in up.docs.kept]
        ann_path = out.path / "annotations.parquet"
        marker = out.path / "annotation.json"
        if marker.is_file() and ann_path.is_file():  # annotated before a crash
            annotation = json.loads(marker.read_text())
        else:
            rows = ex.task(edu.sample_rows, shards, c.sample, c.seed, desc="fineweb_edu sample")
            annotation = run_annotation(edu.annotate_sample, run, ex, c.llm, shards, rows,
                                        c.llm.model_dump(), str(ann_path),
                                        desc="fineweb_edu annotate")
            if not annotation.get("transient_failures"):
                atomic_write_json(marker, annotation)
        head_path = str(out.path / "head.json")
        fit = edu.train_head(str(ann_path), vecs, c.alpha, c.heldout_fraction, c.seed,
                             head_path)
        jobs = [(shard_key(p), (p, v, out.part("kept", shard_key(p)), head_path, c.column))
                for p, v in zip(shards, vecs, strict=True)]
        stats = ex.shards(out, edu.apply_shard, jobs, "fineweb_edu score")
        hist = [sum(s["score_hist"][i] for s in stats) for i in range(6)]
        body = {**merge_counts(stats),
                "outputs": {"kept": [out.rel(a[2]) for _, a in jobs],
                            "annotations": out.rel(ann_path), "head": out.rel(head_path)},
                "llm": annotation, "fit": fit, "column": c.column, "score_hist": hist,
                "share_at_least_3": edu.fraction_at_least(hist)}
        if annotation.get("transient_failures"):
            body["incomplete"] = (f"{annotation['transient_failures']} annotation requests "
                                  "failed transiently; the next run asks for them again")
        return body

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        e = manifest.extra
        llm, fit = e.get("llm", {}), e.get("fit", {})
        held = fit.get("heldout", {})
        run.log.info("fineweb_edu: %s of %s sampled documents scored by the LLM (%s requests, "
                     "%s cache hits, cost %s); head held-out %s; %s of documents >= 3",
                     llm.get("annotated"), llm.get("sampled"), llm.get("requests"),
                     llm.get("cache_hits"), llm.get("cost_run"), held, e.get("share_at_least_3"))
        rows = [(0, f"fineweb_edu.{k}", float(v)) for k, v in
                [("annotated", llm.get("annotated")), ("requests", llm.get("requests")),
                 ("new_tokens_in", llm.get("new_tokens_in")),
                 ("new_tokens_out", llm.get("new_tokens_out")), ("cost_run", llm.get("cost_run")),
                 ("heldout_rmse", held.get("rmse")), ("heldout_f1_at_3", held.get("f1_at_3")),
                 ("share_at_least_3", e.get("share_at_least_3"))] if v is not None]
        run.catalog.record_metrics(run.run_id, rows)
        run.artifacts.append(Artifact(
            key="datamill-fineweb-edu", description=f"FineWeb-Edu annotation and head, run "
            f"{run.run_id}", table=[{"metric": k, "value": v} for _, k, v in rows]))
