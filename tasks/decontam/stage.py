"""Stage ``decontaminate``: training documents that share a word n-gram (13 by default) with
an evaluation item are dropped, or have the shared spans cut.

It goes after ``filter`` (``after: filter``; it belongs to the ``filter`` group, so the filter's
data contract checks its output and ``--until filter`` runs it) and before ``tokenize``:

    stages:
      extra:
        - use: tasks.decontam.stage:Decontaminate
          after: filter
          with: {paths: [evals/*.jsonl], action: drop}

Why a stage and not a document filter: datamill's own evaluation items are built from the
whole held-out split (``tasks/evalsets.py``), which only a stage sees. The stage builds the
index once (one task: ``index.npz`` — the items' distinct n-gram hashes, 16 bytes each — and
``items.parquet``), then every shard loads it once per worker and streams its documents past
it. Held-out documents (``tokenize.heldout_fraction``, the same id hash as ``tokenize``) pass
untouched: they are the evaluation's text, never trained on. Dropped documents name the first
task (in name order) they share an n-gram with: ``decontam.<task>``. The per-task report
(``report.json``, the manifest's ``contamination``, the catalog's ``decontam.*`` metrics) says
how many items of each task were found in training text and how many documents that touched.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.decontam import report as rp
from tasks.identity import ByContent, file_digest
from tasks.schema import with_reject
from tasks.select.reference import digest_paths, expand
from tasks.stage import Executor, Manifest, Resources, RunInfo, Stage, Upstream
from tasks.store import StageDir, atomic_write_json, merge_counts, shard_key, write_parquet


def digest_dirs(dirs: list[str]) -> str:
    """One hash of every file under the folders (harness task YAML and its data)."""
    parts = sorted(f"{p.relative_to(d)}:{file_digest(str(p))}" for d in map(Path, dirs)
                   for p in d.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class Config(BaseModel):
    """``with:`` of the stage."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(13, ge=1, le=64, description="words per n-gram (GPT-3: 13)")
    action: Literal["drop", "cut"] = Field(
        "drop", description="drop a matching training document, or cut the matching spans")
    own_tasks: bool = Field(True, description="datamill's own held-out items: the heldout "
                            "documents and the evaluate stage's multiple-choice items")
    paths: Annotated[list[str], ByContent(digest_paths)] = Field(
        default_factory=list, description="evaluation files: JSONL or text (one item per "
        "line), globs allowed; counted by content")
    text_fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1,
                              description="JSONL fields joined into an item's text")
    harness_tasks: list[str] = Field(default_factory=list, description="lm-evaluation-"
                                     "harness tasks that load offline")
    harness_include: Annotated[list[str], ByContent(digest_dirs)] = Field(
        default_factory=list, description="folders of harness task YAML")
    harness_limit: int | None = Field(None, ge=1, description="items per harness task")
    margin_chars: int = Field(0, ge=0, description="cut: characters also removed on each "
                              "side of a span (GPT-3: 200)")
    max_cuts: int | None = Field(None, ge=0, description="cut: a document with more spans "
                                 "is dropped (decontam.too_many_cuts; GPT-3: 10)")

    @model_validator(mode="after")
    def _some(self) -> Config:
        if not (self.own_tasks or self.paths or self.harness_tasks):
            raise ValueError("decontaminate needs evaluation items: own_tasks, paths or "
                             "harness_tasks")
        if self.paths:
            expand(self.paths)  # a missing file is a recipe error
        return self


def own_spec(run: RunInfo, up: Upstream, docs: list[str]) -> dict[str, Any]:
    """The held-out split as the evaluate stage will read it."""
    ev, tok = run.recipe.stages.evaluate, run.recipe.stages.tokenize
    paths = [run.abs(p) for p in up.get("ingest").kept] if ev.heldout == "raw" else docs
    return {"paths": paths, "fraction": tok.heldout_fraction, "max_docs": ev.max_docs,
            "tasks": list(ev.tasks), "max_items": ev.max_items, "seed": ev.seed}


def decontam_shard(in_path: str, kept_path: str, rejected_path: str, index_path: str,
                   fraction: float, action: str, margin: int, max_cuts: int | None
                   ) -> dict[str, Any]:
    """One shard: kept and rejected documents written, statistics returned."""
    index = rp.load_index(index_path)
    t = pq.read_table(in_path)
    kept, rejected, reasons, stats = rp.decide_table(t, index, fraction, action, margin,
                                                     max_cuts)
    write_parquet(kept, Path(kept_path))
    write_parquet(with_reject(rejected, "decontaminate", reasons), Path(rejected_path))
    return stats


class Decontaminate(Stage):
    name = "decontaminate"
    group = "filter"
    code_version = 1
    recipe_key = "stages.extra (use: tasks.decontam.stage:Decontaminate)"
    outputs = ("kept", "rejected", "report")
    work = ("shard",)
    resources = Resources(cpus=1)
    description = "evaluation items' word n-grams found in training documents: drop or cut"
    Config = Config

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        c: Config = self.params
        if not c.own_tasks:
            return c
        ev, tok = run.recipe.stages.evaluate, run.recipe.stages.tokenize
        return {"decontaminate": c, "heldout_fraction": tok.heldout_fraction,
                "evaluate": {k: getattr(ev, k) for k in
                             ("tasks", "max_items", "seed", "max_docs", "heldout")}}

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        inputs = [up.docs.version]
        if self.params.own_tasks and run.recipe.stages.evaluate.heldout == "raw":
            inputs.append(f"raw:{up.get('ingest').version}")
        return inputs

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        c: Config = self.params
        docs = [run.abs(rel) for rel in up.docs.kept]
        spec = {"n": c.n, "own": own_spec(run, up, docs) if c.own_tasks else None,
                "paths": c.paths, "fields": c.text_fields, "harness_tasks": c.harness_tasks,
                "harness_include": c.harness_include, "harness_limit": c.harness_limit}
        index_dir = out.path / "index"
        if (index_dir / "prepared.json").is_file():  # built before a crash
            prepared = json.loads((index_dir / "prepared.json").read_text())
        else:
            prepared = ex.task(rp.prepare, str(index_dir), spec, desc="decontaminate index")
        fraction = run.recipe.stages.tokenize.heldout_fraction
        jobs = [(shard_key(p), (p, out.part("kept", shard_key(p)),
                                out.part("rejected", shard_key(p)),
                                str(index_dir / "index.npz"), fraction, c.action,
                                c.margin_chars, c.max_cuts)) for p in docs]
        stats = ex.shards(out, decontam_shard, jobs, "decontaminate")
        report = rp.build_report(index_dir, rp.merge_stats(stats))
        report["action"] = c.action
        atomic_write_json(out.path / "report.json", report)
        return {**merge_counts(stats), "contamination": report, "prepared": prepared,
                "outputs": {"kept": [out.rel(a[1]) for _, a in jobs],
                            "rejected": [out.rel(a[2]) for _, a in jobs],
                            "report": out.rel(out.path / "report.json"),
                            "index": out.rel(index_dir / "index.npz")}}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        rows = [(0, f"decontam.{task}.{k}", float(r[k]))
                for task, r in manifest.extra.get("contamination", {}).get("tasks", {}).items()
                for k in ("items", "items_checked", "items_contaminated", "docs_affected")]
        if rows:
            run.catalog.record_metrics(run.run_id, rows)
