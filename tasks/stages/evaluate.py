"""Stage ``evaluate``: each trained proxy scored on the held-out split (bits per byte overall
and per source, multiple-choice tasks) in a Ray actor; ``baseline`` is the same work for a
refresh's promoted model on this run's data, recorded as its own stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.stage import ActorStage, Executor, Manifest, RunInfo, Upstream
from tasks.store import StageDir


def eval_rows(res: dict[str, Any]) -> list[tuple[str, str, float]]:
    rows = [("heldout", "bpb", res["overall"]["bpb"])]
    rows += [(f"heldout/{src}", "bpb", r["bpb"])
             for src, r in sorted(res.get("by_source", {}).items())]
    for name, r in sorted(res.get("tasks", {}).items()):
        rows += [(name, m, r[m]) for m in ("acc", "acc_norm", "acc_centred", "bpb", "items")
                 if m in r]  # bpb: gold continuation, since code_version 3
    return rows


class Evaluate(ActorStage):
    name = "evaluate"
    code_version = 3  # 2: multiple-choice tasks, per-item scores; 3: gold-continuation bpb
    recipe_key = "stages.evaluate"
    inputs = ("data_dir", "checkpoint")
    outputs = ("results", "items")
    description = "held-out bits per byte (overall, per source), multiple-choice tasks"

    def variants(self, run: RunInfo, up: Upstream) -> list[Any]:
        return up.all("train")  # one evaluation per trained model

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        return run.recipe.stages.evaluate

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        inputs = [up.get("tokenize").version, variant.version]
        if run.recipe.stages.evaluate.heldout == "raw":
            inputs.append(f"raw:{up.get('ingest').version}")
        return inputs

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        cfg = run.recipe.stages.evaluate
        raw = [run.abs(p) for p in up.get("ingest").kept] if cfg.heldout == "raw" else None
        res = ex.actor("tasks.evaluate:evaluate_stage",
                       run.data_root / Path(variant.output("checkpoint")).parent,
                       run.data_root / up.get("tokenize").output("data_dir"), raw,
                       run.recipe.stages.tokenize.heldout_fraction, cfg.max_docs,
                       cfg.batch_size, cfg.tasks, cfg.max_items, cfg.seed, cfg.checkpoints,
                       cfg.average_last, out.path / "items.parquet")
        n = res.pop("docs")
        (out.path / "results.json").write_text(json.dumps(res, indent=2))
        return {"docs_in": n, "docs_kept": n, "docs_rejected": 0,
                "results": res, "outputs": {"results": out.rel(out.path / "results.json"),
                                            "items": out.rel(out.path / "items.parquet")}}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        res = manifest.extra["results"]
        ckpt = str(run.data_root / variant.output("checkpoint"))
        seed = variant.config["seed"]
        run.catalog.record_evals(run.run_id, ckpt, eval_rows(res), seed=seed)
        for c in res.get("checkpoints", []):  # checkpoint noise: each step under its own path
            run.catalog.record_evals(run.run_id, c["path"], eval_rows(c), seed=seed)


class Baseline(Evaluate):
    """Another model (a refresh's promoted one) scored on this run's held-out data."""

    name = "baseline"
    description = "a refresh's promoted model scored on this run's held-out data"

    def __init__(self, trained: list[Manifest]) -> None:
        super().__init__()
        self.trained = trained

    def variants(self, run: RunInfo, up: Upstream) -> list[Any]:
        return list(self.trained)

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        return None
