"""The ``datamill-ablation`` flow: several recipes side by side, each trained with its seeds,
compared with the first (the baseline).

Each recipe runs through the main flow (``run_recipe``, a subflow) against one data root, so
every stage two recipes have in common — same config, same inputs — has one content address and
runs once: the others are cache hits. Then every recipe is compared with the baseline on the
items all of them scored (tasks/compare.py): per task and metric the difference, an interval
paired over items with the seeds' spread, the minimum detectable effect, a verdict, and the
task's signal-to-noise ratio across all the recipes. Verdicts go to the catalog's ``decisions``
table (grouped by the ablation id), an HTML report with plots of the intervals, and Prefect
artifacts.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.pipeline import new_run_id, run_recipe
from infra.env import check_flow_params
from infra.env import data_root as resolve_data_root
from tasks import report_decisions as report
from tasks.catalog import Catalog
from tasks.compare import decide, evaluate_paths, unique_labels
from tasks.recipe import load_recipe


def _ablation_name() -> str:
    from prefect.runtime import flow_run

    return flow_run.parameters.get("ablation_id") or "ablation-" + new_run_id()


def model_names(recipe_names: list[str]) -> list[str]:
    """Recipe names, made unique (the same recipe twice is a valid null ablation)."""
    return unique_labels(recipe_names)


@flow(name="datamill-ablation", flow_run_name=_ablation_name, log_prints=True)
def ablation(recipes: list[str], data_root: str | None = None, boot: int = 2000,
             min_snr: float | None = None, ablation_id: str | None = None) -> dict[str, Any]:
    """Run ``recipes`` (the first is the baseline) and decide, per task and metric, whether
    each other recipe is better, worse, or can't tell. Returns the decisions and report path."""
    if len(recipes) < 2:
        raise ValueError("an ablation needs at least two recipes (the first is the baseline)")
    loaded = [load_recipe(r) for r in recipes]  # every recipe valid before anything runs
    root = resolve_data_root(data_root, loaded[0].data_root)
    ablation_id = ablation_id or "ablation-" + new_run_id()
    check_flow_params(ablation_id=ablation_id, data_root=root)  # they become paths
    log = get_run_logger()
    names = model_names([r.name for r in loaded])
    runs: dict[str, dict[str, Any]] = {}
    for name, path in zip(names, recipes, strict=True):
        log.info("ablation %s: recipe %s (%s)", ablation_id, name, path)
        runs[name] = run_recipe(path, data_root=str(root), run_id=new_run_id())
    shared = {n: sum(bool(s.get("cached")) for s in r["stages"]) for n, r in runs.items()}
    evals = {n: evaluate_paths(r["stages"]) for n, r in runs.items()}
    missing = [n for n, ps in evals.items() if not ps]
    if missing:
        raise ValueError(f"recipe(s) {missing} ran no evaluate stage")
    run_ids = {n: r["run_id"] for n, r in runs.items()}
    title = f"datamill ablation {ablation_id}: baseline {names[0]}"
    res = decide(Catalog(root / "catalog.duckdb"), evals, run_ids, title,
                 root / "ablations" / ablation_id / "report.html", n_boot=boot,
                 min_snr=min_snr, ablation=ablation_id)
    path = res["report"]
    create_table_artifact(key="datamill-decisions", table=report.decision_rows(res["rows"]),
                          description=f"Verdicts vs baseline {names[0]}, {ablation_id}")
    create_table_artifact(key="datamill-snr", table=report.snr_table(res["snr"]),
                          description=f"Signal and noise per task, {ablation_id}")
    create_markdown_artifact(
        key="datamill-ablation",
        markdown=report.decisions_markdown(title, run_ids, res["rows"], res["snr"])
        + f"\nStages reused from cache per recipe: {shared}\n\nHTML report: `{path}`\n",
        description=f"datamill ablation {ablation_id}")
    for r in res["rows"]:
        if (r["task"], r["metric"]) == ("heldout", "bpb"):
            log.info("%s vs %s: heldout bpb %+.4f [%+.4f, %+.4f] -> %s", r["model"], names[0],
                     r["diff"], r["ci_low"], r["ci_high"], r["verdict"])
    log.info("report: %s", path)
    return {"ablation": ablation_id, "baseline": names[0], "runs": run_ids,
            "cached_stages": shared, "rows": res["rows"], "snr": res["snr"],
            "dropped": res["dropped"], "report": str(path), "data_root": str(root),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
