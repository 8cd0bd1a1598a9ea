"""The run report: one self-contained HTML file (plots embedded as PNG) and markdown pieces
for Prefect artifacts, all built from the catalog's rows for the run."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any


def funnel_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "stage": s["stage"],
            "docs_in": s["docs_in"],
            "docs_kept": s["docs_kept"],
            "docs_rejected": s["docs_rejected"],
            "cached": bool(s.get("cached")),
            "seconds": round(float(s["seconds"] or 0.0), 2),
            "version": s["version"],
        }
        for s in run["stages"]
    ]


def eval_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"seed": e.get("seed", 0), "task": e["task"], "metric": e["metric"],
             "value": round(e["value"], 4)} for e in run["evals"]]


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown_summary(run: dict[str, Any]) -> str:
    rej = [{"stage": r["stage"], "rule": r["rule"], "dropped_first": r["docs"],
            "would_drop_alone": r["docs_alone"]} for r in run["rejections"]]
    return (
        f"# datamill run `{run['run_id']}` — {run['recipe']}\n\n"
        f"## Funnel\n\n{_md_table(funnel_rows(run))}\n"
        f"## Rejections by rule\n\n{_md_table(rej)}\n"
        f"## Evaluation\n\n{_md_table(eval_rows(run))}\n"
    )


def loss_curve_png(metrics: list[dict[str, Any]]) -> bytes | None:
    curves: dict[int, list[tuple[int, float]]] = {}
    for m in metrics:
        if m["name"] == "loss":
            curves.setdefault(m.get("seed") or 0, []).append((m["step"], m["value"]))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for seed, pts in sorted(curves.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"seed {seed}")
    if len(curves) > 1:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (nats/token)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _html_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(run: dict[str, Any], path: Path) -> Path:
    png = loss_curve_png(run["metrics"])
    img = (f'<img alt="loss curve" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
           if png else "<p><em>no training in this run</em></p>")
    rej = [{"stage": r["stage"], "rule": r["rule"], "dropped first": r["docs"],
            "would drop alone": r["docs_alone"]} for r in run["rejections"]]
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>datamill run {html.escape(run['run_id'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #111; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; }}
th {{ background: #f3f4f6; }}
</style></head><body>
<h1>datamill run <code>{html.escape(run['run_id'])}</code></h1>
<p>recipe <b>{html.escape(str(run['recipe']))}</b> · status <b>{html.escape(str(run['status']))}</b>
· started {html.escape(str(run['started_at']))}</p>
<h2>Funnel</h2>
<p>Every stage accounts for its input: docs_in = docs_kept + docs_rejected.</p>
{_html_table(funnel_rows(run))}
<h2>Rejections by rule</h2>
<p>"dropped first": documents this rule rejected first; "would drop alone": documents failing it
at all.</p>
{_html_table(rej)}
<h2>Training loss</h2>
{img}
<h2>Evaluation</h2>
<p>Bits per byte on the held-out split (documents chosen by a hash of their id; never trained
on), overall and per source. Lower is better.</p>
{_html_table(eval_rows(run))}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
