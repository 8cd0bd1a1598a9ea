"""Stage ``preselect``: PreSelect (Shum et al. 2025, "Predictive Data Selection: The Data That
Predicts Is the Data That Teaches").

A document is *predictive* when the models' losses on it rank them the way their downstream
scores do. With N models, downstream scores s_1..s_N and bits per byte C_1(d)..C_N(d) on
document d, the predictive strength is the paper's

    S(d) = (1 / Z) * sum over pairs (i, j) with s_i > s_j of 1[C_i(d) < C_j(d)]

Z = the number of pairs with s_i != s_j (N(N-1)/2 when the scores differ, as in the paper):
the share of model pairs whose loss order on d agrees with their score order, in [0, 1].
Tied losses count as disagreeing; a document with a null loss (no text) has no strength.

The steps, as the paper's: the losses of every model on a seeded sample of the pool
(``sample`` documents: each draws a number from (seed, id), the smallest win); the strength of
each; the ``fraction`` of the sample with the highest strength are positives and as many
with the lowest are negatives (ties broken by a second seeded draw per id); a fastText
classifier trained on them (``tasks/select/fasttext_model.py``, DCLM's labels); its
P(positive) stored on every document as ``preselect_score``. The decision is ``top_k`` on
that column, in the filter stage.

fastText defaults are those of the authors' released training script (epoch 3, lr 0.1,
wordNgrams 2) and fastText's own for the rest (dim 100, ws 5, minCount 1, 2,000,000 buckets,
softmax). The authors' script takes as positives the documents whose order is fully right
(S = 1) and as many of the lowest as negatives; ``fraction`` makes the count explicit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.identity import OPERATIONAL
from tasks.select import fasttext_model as ftm
from tasks.select import loss
from tasks.select.features import draws
from tasks.select.loss import ModelRef
from tasks.stage import Executor, Manifest, Resources, RunInfo, Stage, Upstream
from tasks.store import StageDir, atomic_write_json, merge_counts, shard_key

COLUMN = "preselect_score"


class Config(BaseModel):
    """``with:`` of the stage."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelRef] = Field(min_length=2, description="the models, each with a "
                                   "downstream score (``score``) or a run with evaluations")
    tasks: list[str] = Field(["next_sentence", "final_word"], min_length=1,
                             description="a run's downstream score: the mean of these tasks'")
    metric: str = Field("acc_norm", description="... values of this metric (evaluate stage)")
    sample: int | None = Field(10_000, gt=0, description="pool documents scored under every "
                               "model; null = all")
    fraction: float = Field(0.2, gt=0, le=0.5, description="the share of the sample taken as "
                            "positives (highest strength), and as negatives (lowest)")
    max_tokens: int = Field(1024, ge=1, description="score each document's first max_tokens "
                            "tokens (of the first model's tokenizer)")
    column: str = Field(COLUMN, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                        description="the score column added to every document")
    seed: int = Field(0, description="the sample, ties, shuffling and fastText's seed")
    lr: float = Field(0.1, gt=0, description="fastText -lr")
    dim: int = Field(100, ge=1, description="fastText -dim")
    ws: int = Field(5, ge=1, description="fastText -ws")
    epoch: int = Field(3, ge=1, description="fastText -epoch")
    min_count: int = Field(1, ge=1, description="fastText -minCount")
    word_ngrams: int = Field(2, ge=1, le=5, description="fastText -wordNgrams")
    bucket: int = Field(2_000_000, ge=1, description="fastText -bucket")
    loss: Literal["softmax", "ns", "hs", "ova"] = Field("softmax", description="fastText -loss")
    threads: Annotated[int | None, OPERATIONAL] = Field(
        None, ge=1, description="training threads; null = the worker's CPUs")
    batch_docs: Annotated[int, OPERATIONAL] = Field(
        1024, ge=1, description="documents read (and held) at a time while scoring losses")
    batch_size: Annotated[int, OPERATIONAL] = Field(16, ge=1, description="windows per "
                                                    "forward pass")

    @model_validator(mode="after")
    def _labels(self) -> Config:
        loss.unique_names(self.models)
        return self


def strength(losses: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """S(d) per row of ``losses`` (documents x models): the share of model pairs with
    different downstream ``scores`` whose loss order agrees (better model, lower loss);
    NaN where a loss is NaN."""
    losses = np.asarray(losses, np.float64)
    scores = np.asarray(scores, np.float64)
    pairs = [(i, j) for i in range(len(scores)) for j in range(len(scores))
             if scores[i] > scores[j]]
    if not pairs:
        raise ValueError("preselect: the models' downstream scores are all equal")
    agree = np.zeros(len(losses))
    for i, j in pairs:
        agree += losses[:, i] < losses[:, j]
    out = agree / len(pairs)
    out[np.isnan(losses).any(axis=1)] = np.nan
    return out


def label(s: np.ndarray, ids: pa.Array, fraction: float, seed: int) -> np.ndarray:
    """1 for the ``fraction`` of documents with the highest strength, 0 for as many with the
    lowest, -1 otherwise (and for no strength); ties by the (seed, id) draws."""
    u = draws(ids, seed, "preselect-ties")
    valid = np.flatnonzero(~np.isnan(s))
    k = min(math.ceil(fraction * len(valid)), len(valid) // 2)
    out = np.full(len(s), -1, np.int8)
    if k == 0:
        return out
    order = valid[np.lexsort((u[valid], -s[valid]))]  # strength descending, then draw
    out[order[:k]] = 1
    out[order[::-1][:k]] = 0
    return out


def downstream(model: ModelRef, resolved: dict[str, Any], tasks: list[str], metric: str
               ) -> float:
    """The model's given score, or the mean of its evaluations' ``metric`` over ``tasks``."""
    if model.score is not None:
        return float(model.score)
    vals = {r["task"]: float(r["value"]) for r in resolved["evals"]
            if r["task"] in tasks and r["metric"] == metric}
    missing = [t for t in tasks if t not in vals or math.isnan(vals[t])]
    if missing:
        raise ValueError(f"preselect: model {resolved['label']!r} has no {metric} for "
                         f"{missing} (give its score, or evaluate it with those tasks)")
    return float(np.mean([vals[t] for t in tasks]))


def write_sample(shards: list[str], rows: list[np.ndarray], dst: Path) -> int:
    """The sampled documents (id, text, source), one shard's rows at a time."""
    cols = ["id", "text", "source"]
    parts = []
    for path, r in zip(shards, rows, strict=True):
        if len(r):
            names = pq.read_schema(path).names
            t = pq.read_table(path, columns=[c for c in cols if c in names])
            parts.append(t.take(pa.array(r, pa.int64())))
    table = pa.concat_tables(parts, promote_options="default") if parts else pa.table(
        {"id": pa.array([], pa.string()), "text": pa.array([], pa.large_string())})
    from tasks.store import write_parquet

    write_parquet(table, dst)
    return len(table)


def train_classifier(sample: str, labels: str, cfg: Config, work_dir: str, model_path: str
                     ) -> dict[str, Any]:
    """fastText on the sample's positives (DCLM's ``__label__hq``) and negatives
    (``__label__cc``), shuffled; the model saved atomically at ``model_path``."""
    staged = ftm.scratch_dir(work_dir) / "staged.txt"
    lab = pq.read_table(labels, columns=["label"]).column("label").to_numpy()
    counts = {1: 0, 0: 0}
    with open(staged, "w", encoding="utf-8") as fh:
        start = 0
        for rb in pq.ParquetFile(sample).iter_batches(batch_size=4096, columns=["text"]):
            part = lab[start:start + len(rb)]
            start += len(rb)
            lines = ftm.one_line(rb.column(0)).to_pylist()
            for y, line in zip(part, lines, strict=True):
                if y in (0, 1) and line:
                    fh.write(f"{ftm.POSITIVE if y == 1 else ftm.NEGATIVE} {line}\n")
                    counts[int(y)] += 1
    if counts[1] == 0 or counts[0] == 0:
        raise ValueError(f"preselect: nothing to train on ({counts[1]} positives, "
                         f"{counts[0]} negatives); a larger sample is needed")
    fit = ftm.train_on_file(staged, cfg, model_path)
    del fit["words"]  # not part of this stage's training record
    return {"positives": counts[1], "negatives": counts[0], **fit}


class PreSelect(Stage):
    name = "preselect"
    group = "filter"  # --until filter runs it; its column is the filter stage's to decide on
    code_version = 1
    recipe_key = "stages.extra (use: tasks.select.preselect:PreSelect)"
    outputs = ("kept", "model", "strength")
    work = ("actor", "shard")
    resources = Resources(cpus=1)
    description = "PreSelect: fastText on documents whose losses rank the models by score"
    Config = Config

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._resolved: dict[str, list[dict[str, Any]]] = {}

    def resolved(self, run: RunInfo) -> list[dict[str, Any]]:
        key = str(run.data_root)
        if key not in self._resolved:
            c: Config = self.params
            models = [loss.resolve(m, run.data_root) for m in c.models]
            for ref, m in zip(c.models, models, strict=True):
                m["score"] = downstream(ref, m, c.tasks, c.metric)
            if len({m["score"] for m in models}) < 2:
                raise ValueError("preselect: the models' downstream scores are all equal")
            self._resolved[key] = models
        return self._resolved[key]

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        c: Config = self.params
        rest = c.model_dump(exclude={"models", "tasks", "metric", "threads", "batch_docs",
                                     "batch_size"})
        return {**rest, "models": [{"label": m["label"], "sha256": m["sha256"],
                                    "score": m["score"]} for m in self.resolved(run)]}

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        c: Config = self.params
        models = self.resolved(run)
        shards = [run.abs(rel) for rel in up.docs.kept]
        sample, scored = out.path / "sample.parquet", out.path / "sample-scored.parquet"
        if not sample.is_file():
            rows = ftm.sample_pool(shards, c.sample, c.seed, "preselect", None, False)
            write_sample(shards, rows, sample)
        ex.actor("tasks.select.loss:score_shards",
                 [(str(sample), str(scored), str(out.path / "_sample.json"))],
                 [{k: m[k] for k in ("label", "column", "checkpoint")} for m in models],
                 c.max_tokens, c.batch_docs, c.batch_size)
        t = pq.read_table(scored, columns=["id"] + [m["column"] for m in models])
        losses = np.column_stack([t.column(m["column"]).to_numpy(zero_copy_only=False)
                                  .astype(np.float64) for m in models]) if len(t) else \
            np.zeros((0, len(models)))
        s = strength(losses, np.array([m["score"] for m in models]))
        labels = label(s, t.column("id"), c.fraction, c.seed)
        labels_path = out.path / "strength.parquet"
        from tasks.store import write_parquet

        write_parquet(pa.table({"id": t.column("id"), "strength": pa.array(s, mask=np.isnan(s)),
                                "label": pa.array(labels)}), labels_path)
        model_path, marker = out.path / "model.bin", out.path / "training.json"
        if marker.is_file() and model_path.is_file():  # trained before a crash
            training = json.loads(marker.read_text())
        else:
            training = ex.task(train_classifier, str(scored), str(labels_path), c,
                               str(out.path / "work"), str(model_path), desc="preselect train")
            atomic_write_json(marker, training)
        jobs = [(shard_key(p), (p, out.part("kept", shard_key(p)), str(model_path), c.column))
                for p in shards]
        stats = ex.shards(out, ftm.score_shard, jobs, "preselect score")
        valid = s[~np.isnan(s)]
        return {**merge_counts(stats), "training": training,
                "outputs": {"kept": [out.rel(a[1]) for _, a in jobs],
                            "model": out.rel(model_path), "strength": out.rel(labels_path)},
                "models": [{k: m[k] for k in ("label", "column", "checkpoint", "sha256",
                                              "score")} for m in models],
                "sample": {"docs": len(t), "with_strength": len(valid),
                           "mean_strength": float(valid.mean()) if len(valid) else None,
                           "perfect": int((valid == 1).sum()),
                           "positives": int((labels == 1).sum()),
                           "negatives": int((labels == 0).sum())},
                "scored": sum(int(x.get("scored", 0)) for x in stats)}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        run.log.info("preselect: models %s; sample %s; training %s",
                     [(m["label"], m["score"]) for m in manifest.extra.get("models", [])],
                     manifest.extra.get("sample"), manifest.extra.get("training"))
        t = manifest.extra.get("training", {})
        rows = [(0, f"preselect.{k}", float(t[k])) for k in ("positives", "negatives",
                                                             "train_seconds", "train_precision")
                if k in t]
        if rows:
            run.catalog.record_metrics(run.run_id, rows)
