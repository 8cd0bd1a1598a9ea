"""Stage ``dclm_fasttext``: DCLM's fastText quality classifier (Li et al. 2024, DataComp-LM).

Trains a supervised fastText model — the reference set's documents against a seeded sample of
the pool — once, inside the stage, and adds its score, P(reference-like), to every document
as a column (``dclm_fasttext_score``). Decisions come later, in the filter stage, over the
stored column: ``corpus: {top_k: {column: dclm_fasttext_score, percent: 10}}`` keeps DCLM's
top 10 %. Changing that keeps the score: only ``filter`` runs again.

The stage trains because the negatives come from the pool, which only a stage sees whole.
It goes before ``score`` (``after: rewrite``) so the column reaches the filter stage:

    stages:
      extra:
        - use: tasks.select.fasttext_stage:DclmFastText
          after: rewrite
          with: {reference: {paths: [ref/*.jsonl]}}

Versioned by the reference files' content, every training parameter and the pool's version;
the model is saved in the stage folder (``model.bin``) and another recipe reuses it with
``model: <that path>`` (no training; the model file is versioned by its content).
Defaults are DCLM's: ``baselines/train_fasttext_classifier.py`` (lr 0.1, dim 100, ws 5,
epoch 5, minCount 1) run with ``--wordNgrams 2`` (``baselines/README.md``, mlfoundations/dclm),
and fastText's own defaults otherwise (2,000,000 hash buckets, softmax loss).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.identity import BY_CONTENT, OPERATIONAL, file_digest
from tasks.select import fasttext_model as ftm
from tasks.select.reference import Reference
from tasks.stage import Executor, Manifest, Resources, RunInfo, Stage, Upstream
from tasks.store import StageDir, atomic_write_json, merge_counts, shard_key

COLUMN = "dclm_fasttext_score"


class Config(BaseModel):
    """``with:`` of the stage: a reference set to train on, or a trained model."""

    model_config = ConfigDict(extra="forbid")

    reference: Reference | None = Field(None, description="positives: files or a source")
    model: Annotated[str | None, BY_CONTENT] = Field(
        None, description="a trained model (.bin): no training; versioned by content")
    column: str = Field(COLUMN, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                        description="the score column added to every document")
    negatives: int | None = Field(None, gt=0, description="pool documents sampled as "
                                  "negatives; null = as many as positives")
    seed: int = Field(0, description="negative sampling, shuffling and fastText's seed")
    lr: float = Field(0.1, gt=0, description="fastText -lr (DCLM: 0.1)")
    dim: int = Field(100, ge=1, description="fastText -dim (DCLM: 100)")
    ws: int = Field(5, ge=1, description="fastText -ws (DCLM: 5)")
    epoch: int = Field(5, ge=1, description="fastText -epoch (DCLM: 5)")
    min_count: int = Field(1, ge=1, description="fastText -minCount (DCLM: 1)")
    word_ngrams: int = Field(2, ge=1, le=5, description="fastText -wordNgrams (DCLM: 2, "
                             "unigrams + bigrams)")
    bucket: int = Field(2_000_000, ge=1, description="fastText -bucket: n-gram hash buckets "
                        "(fastText's default; the model holds bucket x dim floats)")
    loss: Literal["softmax", "ns", "hs", "ova"] = Field("softmax", description="fastText -loss")
    threads: Annotated[int | None, OPERATIONAL] = Field(
        None, ge=1, description="training threads; null = the worker's CPUs")

    @model_validator(mode="after")
    def _one(self) -> Config:
        if (self.reference is None) == (self.model is None):
            raise ValueError("dclm_fasttext needs exactly one of reference or model")
        if self.model is not None and not Path(self.model).is_file():
            raise ValueError(f"dclm_fasttext: no such model file {self.model!r}")
        return self


class DclmFastText(Stage):
    name = "dclm_fasttext"
    group = "filter"  # --until filter runs it; its column is the filter stage's to decide on
    code_version = 1
    recipe_key = "stages.extra (use: tasks.select.fasttext_stage:DclmFastText)"
    outputs = ("kept", "model")
    work = ("corpus", "shard")
    resources = Resources(cpus=1)
    description = "DCLM fastText classifier: train on a reference set vs the pool, score once"
    Config = Config

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        c: Config = self.params
        if c.model is not None:  # training parameters are not used: not versioned
            return {"model": {"sha256": file_digest(c.model)}, "column": c.column}
        return c

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        c: Config = self.params
        shards = [run.abs(rel) for rel in up.docs.kept]
        outputs: dict[str, Any] = {}
        if c.model is not None:
            model_path = str(Path(c.model).resolve())
            training: dict[str, Any] = {"model": c.model, "sha256": file_digest(c.model)}
        else:
            model_path = str(out.path / "model.bin")
            marker = out.path / "training.json"
            if marker.is_file() and Path(model_path).is_file():  # trained before a crash
                training = json.loads(marker.read_text())
            else:
                training = ex.task(ftm.train_model, shards, c, str(out.path / "work"),
                                   model_path, desc="dclm_fasttext train")
                atomic_write_json(marker, training)
            outputs["model"] = out.rel(model_path)
        jobs = [(shard_key(p), (p, out.part("kept", shard_key(p)), model_path, c.column))
                for p in shards]
        stats = ex.shards(out, ftm.score_shard, jobs, "dclm_fasttext score")
        outputs["kept"] = [out.rel(a[1]) for _, a in jobs]
        counts = merge_counts(stats)
        return {**counts, "outputs": outputs, "training": training,
                "scored": sum(int(s.get("scored", 0)) for s in stats)}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        t = manifest.extra.get("training", {})
        run.log.info("dclm_fasttext: %s; %s of %s documents scored", t,
                     manifest.extra.get("scored"), manifest.docs_in)
        rows = [(0, f"dclm_fasttext.{k}", float(t[k]))
                for k in ("positives", "negatives", "train_seconds", "train_precision")
                if k in t]
        if rows:
            run.catalog.record_metrics(run.run_id, rows)
