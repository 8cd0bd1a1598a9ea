"""The main flow: the recipe's stages, in order, through the generic runner.

The list is ``tasks.stages.PIPELINE`` (plus a recipe's ``stages.extra``); each stage is run by
``flows/runner.py`` (version, cache, shards on Dask or Ray, manifest, catalog, artifacts).
This file only composes: contract gates between stages, where the run stops (``--until``,
no new input), the engines handed over to training, and the run's report.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.contracts import contract_gate
from flows.runner import AccountingError, RunContext, run_stage
from infra.env import check_flow_params
from infra.env import data_root as resolve_data_root
from tasks import report
from tasks.catalog import Catalog
from tasks.recipe import Recipe, load_recipe
from tasks.remote import Mirror
from tasks.stage import Upstream
from tasks.stages import build, until_names

__all__ = ["AccountingError", "RunContext", "execute", "new_run_id", "run_recipe"]
GATED = ("ingest", "filter", "tokenize")  # contract-checked outputs (after their group)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


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
    for key, description, markdown in report.extra_artifacts(run):  # figures, gallery
        create_markdown_artifact(key=key, markdown=markdown, description=description)
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


def run_stages(ctx: RunContext, until: str | None) -> Upstream:
    """The recipe's stages in order, each group's output gated by its data contract."""
    stages = build(ctx.recipe)
    names = list(dict.fromkeys(s.until_name() for s in stages))
    up = Upstream()
    last = until or names[-1]
    for i, stage in enumerate(stages):
        group = stage.until_name()
        if stage.enabled(ctx.info, up):  # type: ignore[arg-type]
            for m in run_stage(ctx, stage, up):
                up.add(m, docs=stage.produces_docs)
        if stage.name == "ingest" and ctx.recipe.stages.ingest.incremental \
                and up.get("ingest").docs_in == 0:
            get_run_logger().info("nothing to do: no new input files for recipe %s",
                                  ctx.recipe.name)
            last = group
        # a group's gate and --until act where the group ends, even if its last stage is off
        group_ends = i + 1 == len(stages) or stages[i + 1].until_name() != group
        if group_ends and group in GATED:
            gated = up.get("tokenize") if group == "tokenize" else up.docs
            contract_gate(ctx, gated.to_dict())  # a broken contract fails the run here
        if group_ends and group == last:
            break
    return up


def execute(recipe: Recipe, recipe_path: str, until: str | None = None,
            data_root: str | None = None, run_id: str | None = None,
            after: Callable[[RunContext], None] | None = None) -> dict[str, Any]:
    """The run's body, inside a flow run (run_recipe's, or flows/refresh.py's with the recipe
    it derives); ``after(ctx)`` runs once the stages are done, before the run is published."""
    names = until_names(recipe)
    if until is not None and until not in names:
        raise ValueError(f"--until must be one of {names}, not {until!r}")
    root = resolve_data_root(data_root, recipe.data_root)
    if run_id is None:  # a deployment's run: the name _flow_run_name gave it
        from prefect.runtime import flow_run

        run_id = flow_run.name or new_run_id()
    check_flow_params(run_id=run_id, data_root=root)  # they become paths
    ctx = RunContext(run_id, recipe, str(Path(recipe_path).resolve()), root,
                     Catalog(root / "catalog.duckdb"))
    log = get_run_logger()
    log.info("run %s: recipe %s, data root %s", ctx.run_id, recipe.name, root)
    mirror = Mirror.of(root)
    if mirror is not None:  # a bucket-backed root: what the bucket has comes down first
        log.info("data root %s: %d files pulled", mirror.url, mirror.pull())
    ctx.catalog.start_run(ctx.run_id, recipe.name, ctx.recipe_path, recipe.model_dump())
    try:
        run_stages(ctx, until)
        if after is not None:
            after(ctx)
        path = _publish(ctx, "completed")
        ctx.catalog.complete_run(ctx.run_id, path, ctx.info.deferred)  # type: ignore[union-attr]
    except BaseException as e:
        ctx.catalog.finish_run(ctx.run_id, "failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if mirror is not None:
            log.info("data root %s: %d files pushed", mirror.url, mirror.push())
    log.info("report: %s", path)
    run = ctx.catalog.show(ctx.run_id)
    return {"run_id": ctx.run_id, "status": run["status"], "report": run["report"],
            "data_root": str(root), "stages": run["stages"]}
