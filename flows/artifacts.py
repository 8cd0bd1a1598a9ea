"""Prefect artifacts beyond the run summary (flows/pipeline.py ``_publish``): the filters' score
histograms and the training loss curve, as markdown a person reads in the UI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.artifacts import create_markdown_artifact

from tasks.histograms import score_histograms, sparkline

if TYPE_CHECKING:
    from flows.pipeline import RunContext


def scores_artifact(ctx: RunContext, filtered: dict[str, Any]) -> None:
    """Histograms of every score column over the documents the filter scored."""
    outs = filtered["outputs"]
    files = [ctx.data_root / rel for rel in outs.get("kept", []) + outs.get("rejected", [])]
    create_markdown_artifact(
        key="datamill-scores",
        markdown=f"# Score histograms, run `{ctx.run_id}`\n\nAll documents the filter scored "
                 f"(kept and rejected), stage version `{filtered['version']}`.\n\n"
                 + score_histograms(files),
        description=f"Filter score histograms, run {ctx.run_id}")


def loss_curve_artifact(ctx: RunContext) -> None:
    """The training loss per seed as a sparkline plus first/last/min values."""
    run = ctx.catalog.show(ctx.run_id)
    curves: dict[int, list[tuple[int, float]]] = {}
    for m in run["metrics"]:
        if m["name"] == "loss":
            curves.setdefault(m.get("seed") or 0, []).append((m["step"], m["value"]))
    if not curves:
        return
    lines = [f"# Training loss, run `{ctx.run_id}`", "", "| seed | steps | first | last | min "
             "| curve |", "|---|---:|---:|---:|---:|---|"]
    for seed, pts in sorted(curves.items()):
        pts.sort()
        vals = [v for _, v in pts]
        lines.append(f"| {seed} | {pts[0][0]}–{pts[-1][0]} | {vals[0]:.4f} | {vals[-1]:.4f} | "
                     f"{min(vals):.4f} | `{sparkline(vals)}` |")
    create_markdown_artifact(key="datamill-loss-curve", markdown="\n".join(lines) + "\n",
                             description=f"Training loss curve, run {ctx.run_id}")
