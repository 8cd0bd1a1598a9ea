"""The ``datamill-refresh`` flow: a recipe's recurring refresh (nightly, from a schedule).

1. Take a lock for the recipe under the data root; if another refresh holds it, wait up to
   ``lock_wait_s`` and otherwise finish cleanly without writing (never two writers).
2. Derive the run's recipe from the user's: ``ingest.incremental`` (only input files not yet
   consumed), the persistent ``filter.dedup_index`` (dedup against everything kept before),
   and ``train.init_from`` = the recipe's **promoted** run (re-warming + replay, training's
   continual pre-training); with nothing promoted, training starts from scratch.
3. Run it through the pipeline's stages (flows/pipeline.py ``execute``: contracts gate each
   output before training); no new input file => a quick completed "nothing to do" run.
4. Score the promoted model on this run's held-out data (stage ``baseline``), compare it with
   the refreshed model (tasks/compare.py: paired bootstrap, verdicts), and promote the new model
   unless a deciding metric is "worse" (or unless one is "better", with ``promote_if: better``).
   The first refresh is promoted once it completes. The decision, its rule and statistics go
   to the catalog (``promotions``, ``decisions``) and a Prefect artifact.
5. With ``refresh.export``, a promoted run is exported (tasks/export/refresh.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.pipeline import RunContext, execute, new_run_id
from flows.runner import run_stage
from infra.env import check_flow_params
from infra.env import data_root as resolve_data_root
from tasks.catalog import Catalog
from tasks.export.refresh import export_promoted
from tasks.recipe import Recipe, load_recipe
from tasks.report import md_escape
from tasks.stage import Manifest, Upstream
from tasks.stages.evaluate import Baseline


@contextmanager
def refresh_lock(root: Path, recipe: str, wait_s: float = 0.0) -> Iterator[bool]:
    """An exclusive flock on ``<root>/locks/refresh-<recipe>.lock``; yields whether it is held.
    The kernel drops it when the holder dies, so a crashed refresh never blocks the next one.
    (flock is per host; across hosts, the deployment's concurrency limit serialises runs.)"""
    path = root / "locks" / f"refresh-{recipe}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - held for the with-block
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.5)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.time()}))
        fh.flush()
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def dedup_index_name(recipe: Recipe) -> str:
    return (recipe.refresh.dedup_index or recipe.stages.filter.dedup_index
            or f"refresh-{recipe.name}")


def derive(recipe: Recipe, promoted: dict[str, Any] | None) -> Recipe:
    """The recipe a refresh runs: deltas in, dedup against the index, continue the promoted."""
    raw = recipe.model_dump()
    raw["stages"]["ingest"]["incremental"] = True
    raw["stages"]["filter"]["dedup_index"] = dedup_index_name(recipe)
    train = raw["stages"]["train"]
    if promoted is not None:
        train["init_from"] = promoted["run_id"]
        if recipe.refresh.replay is not None:
            train["replay"] = recipe.refresh.replay
    return Recipe.model_validate(raw)


def decide(rows: list[dict[str, Any]], metrics: list[str], rule: str) -> tuple[bool, str]:
    """Promote unless a deciding row is "worse" (rule not_worse), or only if one is "better"
    and none "worse" (rule better). Rows are B = refreshed vs A = promoted. A multiple-choice
    task's accuracy or bits per byte decides by the higher measured SNR (tasks/snr.py)."""
    from tasks.snr import deciding_metrics

    metrics, chosen = deciding_metrics(rows, metrics)
    deciding = [r for r in rows if f"{r['task']}/{r['metric']}" in metrics]
    if not deciding:
        return False, f"no comparison row for {metrics}: not promoted"
    said = ", ".join(f"{r['task']}/{r['metric']} {r['verdict']} (B-A {r['diff']:+.4f}, 95% CI "
                     f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}])" for r in deciding)
    said = "".join(f"{c}; " for c in chosen) + said  # which metric decided, and why
    worse = [r for r in deciding if r["verdict"] == "worse"]
    better = [r for r in deciding if r["verdict"] == "better"]
    if worse:
        return False, f"worse than the promoted model: {said}"
    if rule == "better" and not better:
        return False, f"not better than the promoted model (promote_if: better): {said}"
    return True, f"{'better' if better else 'not worse'} than the promoted model: {said}"


def _manifest(stage_dir: str | Path) -> Manifest:
    return Manifest.from_dict(json.loads((Path(stage_dir) / "manifest.json").read_text()))


def _promote_step(ctx: RunContext, promoted: dict[str, Any] | None, rule: str,
                  out: dict[str, Any]) -> None:
    """After the stages: baseline evaluation, comparison, decision, catalog, artifact."""
    from tasks.compare import compare

    log = get_run_logger()
    stages = ctx.catalog.show(ctx.run_id)["stages"]
    trains = [s for s in stages if s["stage"] == "train"]
    if not trains:
        out.update(promoted=False, reason="nothing to do: no new input")
        return
    ckpts = [str(Path(t["output_path"]) / "checkpoint") for t in trains]
    cfg = ctx.recipe.refresh
    rows: list[dict[str, Any]] = []
    if promoted is None:
        ok, reason = True, "first refresh of this recipe: nothing promoted yet, promoted " \
                           "because it completed"
    else:
        tok = _manifest(next(s["output_path"] for s in stages if s["stage"] == "tokenize"))
        ingested = _manifest(next(s["output_path"] for s in stages if s["stage"] == "ingest"))
        base_run = ctx.catalog.show(promoted["run_id"])
        base_trains = [_manifest(s["output_path"]) for s in base_run["stages"]
                       if s["stage"] == "train"]
        up = Upstream()
        up.add(ingested, docs=True)
        up.add(tok, docs=False)
        base_evals = [ctx.data_root / m.output("items")
                      for m in run_stage(ctx, Baseline(base_trains), up)]
        new_evals = [Path(s["output_path"]) / "items.parquet" for s in stages
                     if s["stage"] == "evaluate"]
        rows = compare([p.parent for p in base_evals], [p.parent for p in new_evals],
                       n_boot=cfg.boot)
        ctx.catalog.record_decisions(promoted["run_id"], ctx.run_id, rows)
        ok, reason = decide(rows, cfg.metrics, rule)
    # recorded with the run's completion, in one transaction: never a failed run's model
    ctx.info.on_complete("record_promotion", ctx.recipe.name, ctx.run_id,  # type: ignore[union-attr]
                         promoted["run_id"] if promoted else None, ok, rule, reason, ckpts,
                         rows)
    (log.info if ok else log.warning)("%s: %s", "PROMOTED" if ok else "not promoted", reason)
    out.update(promoted=ok, reason=reason, rule=rule, checkpoints=ckpts,
               baseline_run=promoted["run_id"] if promoted else None)
    md = [f"# Promotion: {'promoted' if ok else 'NOT promoted'}", "",
          f"- recipe: `{ctx.recipe.name}`, run `{ctx.run_id}`",
          f"- compared with the promoted run: `{promoted['run_id'] if promoted else 'none'}`",
          f"- rule: `{rule}` on {', '.join(cfg.metrics)}", f"- {md_escape(reason)}", ""]
    if rows:
        md += ["| task | metric | promoted (A) | refreshed (B) | B-A | 95% CI | verdict |",
               "|---|---|---|---|---|---|---|"]
        md += [f"| {md_escape(r['task'])} | {md_escape(r['metric'])} | {r['a']:.4f} | "
               f"{r['b']:.4f} | "
               f"{r['diff']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['verdict']} |"
               for r in rows]
        create_table_artifact(
            key="datamill-eval-compare",
            table=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                   for r in rows],
            description=f"Refreshed (B) vs promoted (A) on run {ctx.run_id}'s held-out data: "
                        "paired bootstrap 95% intervals")
    create_markdown_artifact(key="datamill-promotion", markdown="\n".join(md),
                             description=f"Promotion decision, run {ctx.run_id}")


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    return flow_run.parameters.get("run_id") or new_run_id()


@flow(name="datamill-refresh", flow_run_name=_flow_run_name, log_prints=True)
def refresh(recipe_path: str, data_root: str | None = None, run_id: str | None = None,
            require_better: bool = False, lock_wait_s: float = 0.0) -> dict[str, Any]:
    """Refresh a recipe: new input only, dedup against all kept before, continue the promoted
    model, compare, promote. ``require_better`` overrides the recipe's ``refresh.promote_if``;
    ``lock_wait_s``: how long to wait for a running refresh of the recipe before exiting."""
    recipe = load_recipe(recipe_path)
    root = resolve_data_root(data_root, recipe.data_root)
    check_flow_params(run_id=run_id, data_root=root)  # they become paths (locks, runs)
    log = get_run_logger()
    if run_id is None:
        from prefect.runtime import flow_run

        run_id = flow_run.name or new_run_id()
    t0 = time.perf_counter()
    with refresh_lock(root, recipe.name, lock_wait_s) as held:
        if not held:
            msg = (f"another refresh of {recipe.name!r} holds {root}/locks/"
                   f"refresh-{recipe.name}.lock: this run exits without writing")
            log.warning("%s", msg)
            create_markdown_artifact(key="datamill-promotion", markdown=f"# Skipped\n\n{msg}\n",
                                     description=f"Refresh {run_id} skipped")
            return {"run_id": run_id, "status": "skipped", "reason": msg}
        promoted = Catalog(root / "catalog.duckdb").promoted(recipe.name)
        rule = "better" if require_better else recipe.refresh.promote_if
        log.info("refresh %s of %s: continuing %s, dedup index %r, promote if %s", run_id,
                 recipe.name, promoted["run_id"] if promoted else "nothing (from scratch)",
                 dedup_index_name(recipe), rule)
        decision: dict[str, Any] = {}
        summary = execute(derive(recipe, promoted), recipe_path, data_root=str(root),
                          run_id=run_id,
                          after=lambda ctx: _promote_step(ctx, promoted, rule, decision))
        summary["export"] = export_promoted(recipe.refresh.export, root, summary, decision, log)
    summary["promotion"] = decision
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary
