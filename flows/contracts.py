"""Data-contract gates in the flow: tasks/contracts.py's great-expectations suites on a stage's
output, recorded in the catalog (``contracts`` table) and the Prefect UI (a table artifact per
stage, an error log line); a violation raises ContractError, failing the run before training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.contracts import ContractError, ContractReport, Limits, check_documents, check_tokens

if TYPE_CHECKING:
    from flows.pipeline import RunContext


@task(name="contracts", cache_policy=NO_CACHE)
def contract_gate(ctx: RunContext, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Check one stage output; returns the report's summary, raises ContractError."""
    cfg = ctx.recipe.contracts
    if not cfg.enabled:
        return None
    log = get_run_logger()
    stage, version = manifest["stage"], manifest["version"]
    limits = Limits(cfg.min_text_chars,
                    cfg.max_text_chars or ctx.recipe.stages.ingest.max_doc_chars)
    suite = "tokens" if stage == "tokenize" else \
        f"documents[{limits.min_text_chars},{limits.max_text_chars}]"
    # stage outputs are content-addressed and immutable: one that passed its contract (with
    # the same limits, which are part of the suite name) needs no second look on a cache hit
    if ctx.catalog.contract_held(stage, version, suite):
        log.info("%s %s: contract %s held before (cached output)", stage, version, suite)
        return {"stage": stage, "ok": True, "cached": True}
    if stage == "tokenize":
        report: ContractReport = check_tokens(ctx.data_root / manifest["outputs"]["data_dir"])
    else:
        files = [ctx.data_root / rel for rel in manifest["outputs"]["kept"]]
        report = check_documents(stage, files, limits)
    report.suite = suite
    rows = report.rows_for_table()
    ctx.catalog.record_contracts(ctx.run_id, stage, version, suite, report.rows, rows)
    create_table_artifact(
        key=f"datamill-contracts-{stage}",
        table=[{"expectation": r["expectation"], "column": r["column"] or "",
                "ok": "yes" if r["success"] else "NO", "offending rows": r["offending"],
                "observed": r["observed"] or ""} for r in rows],
        description=f"Data contract on {stage} {version} ({report.rows} rows, "
                    f"{report.files} files): {'holds' if report.ok else 'BROKEN'}")
    if not report.ok:
        log.error("%s", report.message())
        raise ContractError(report)
    log.info("%s", report.message())
    return {"stage": stage, "ok": True, "checks": len(rows), "rows": report.rows}
