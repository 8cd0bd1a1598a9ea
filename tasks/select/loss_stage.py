"""Stage ``loss_score``: each document's bits per byte under one or more trained models,
stored as columns ``loss_<label>`` (``tasks/select/loss.py``), for any rule to decide on.

    stages:
      extra:
        - use: tasks.select.loss_stage:LossScore
          after: rewrite                    # before score: the columns reach the filter stage
          with: {models: [{run: RUN_ID}, {path: /models/other, label: other}], max_tokens: 512}
      filter:
        corpus: {top_k: {column: loss_RUN_ID, percent: 50, higher_is_better: false}}

The work runs in one Ray actor (``ex.actor``: a GPU when the cluster has one, else CPUs),
shard after shard, with a marker per finished shard so a re-run after a crash redoes only the
rest. The stage declares no GPU in ``resources``: that would stop the local Dask cluster
before ``score`` and ``filter``, which still need it.

Versioned by the checkpoints' content (weights, config, tokenizer), not their paths or run
ids, by ``max_tokens`` and by the upstream documents; batch sizes are operational.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.identity import OPERATIONAL
from tasks.select import loss
from tasks.select.loss import ModelRef
from tasks.stage import Executor, Manifest, Resources, RunInfo, Stage, Upstream
from tasks.store import StageDir, merge_counts, shard_key


class Config(BaseModel):
    """``with:`` of the stage."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelRef] = Field(min_length=1, description="the models to score with")
    max_tokens: int = Field(1024, ge=1, description="score each document's first max_tokens "
                            "tokens (of the first model's tokenizer)")
    batch_docs: Annotated[int, OPERATIONAL] = Field(
        1024, ge=1, description="documents read (and held) at a time")
    batch_size: Annotated[int, OPERATIONAL] = Field(16, ge=1, description="windows per "
                                                    "forward pass")

    @model_validator(mode="after")
    def _labels(self) -> Config:
        loss.unique_names(self.models)
        return self


class LossScore(Stage):
    name = "loss_score"
    group = "filter"  # --until filter runs it; its columns are the filter stage's to decide on
    code_version = 1
    recipe_key = "stages.extra (use: tasks.select.loss_stage:LossScore)"
    outputs = ("kept",)
    work = ("actor",)
    resources = Resources(cpus=1)
    description = "bits per byte per document under trained models (Ray actor, GPU if any)"
    Config = Config

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._resolved: dict[str, list[dict[str, Any]]] = {}

    def model_refs(self) -> list[ModelRef]:
        return list(self.params.models)

    def difference(self, models: list[dict[str, Any]]) -> tuple[str, str, str] | None:
        return None  # miniplm: (reference column, teacher column, its score column)

    def resolved(self, run: RunInfo) -> list[dict[str, Any]]:
        """The models' checkpoints and content hashes, looked up once per data root."""
        key = str(run.data_root)
        if key not in self._resolved:
            self._resolved[key] = [loss.resolve(m, run.data_root) for m in self.model_refs()]
        return self._resolved[key]

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        models = [{"label": m["label"], "sha256": m["sha256"]} for m in self.resolved(run)]
        return {"models": models, "max_tokens": self.params.max_tokens}

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        c = self.params
        models = self.resolved(run)
        shards = [run.abs(rel) for rel in up.docs.kept]
        jobs = [(p, out.part("kept", shard_key(p)), str(out.shard_marker(shard_key(p))))
                for p in shards]
        device = "a GPU" if ex.gpus() > 0 else "CPUs"
        run.log.info("%s: %d shards under %s on %s", self.name, len(jobs),
                     [m["label"] for m in models], device)
        stats = ex.actor("tasks.select.loss:score_shards", jobs,
                         [{k: m[k] for k in ("label", "column", "checkpoint")} for m in models],
                         c.max_tokens, c.batch_docs, c.batch_size, self.difference(models))
        counts = merge_counts(stats)
        return {**counts, "outputs": {"kept": [out.rel(j[1]) for j in jobs]},
                "models": [{k: m[k] for k in ("label", "column", "checkpoint", "sha256")}
                           for m in models],
                "max_tokens": c.max_tokens,
                "truncated": sum(int(s.get("truncated", 0)) for s in stats),
                "unscored": sum(int(s.get("unscored", 0)) for s in stats),
                "device": next((s["device"] for s in stats if "device" in s), None)}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        run.log.info("%s: %s documents, %s cut to %s tokens, %s without text; columns %s",
                     self.name, manifest.docs_in, manifest.extra.get("truncated"),
                     manifest.extra.get("max_tokens"), manifest.extra.get("unscored"),
                     [m["column"] for m in manifest.extra.get("models", [])])
