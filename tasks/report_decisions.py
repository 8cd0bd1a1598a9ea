"""Reports of decisions (compare, ablation, refresh): the verdict table, the SNR table, the
forest plot of differences with intervals, as markdown (Prefect artifacts) and HTML."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from tasks.report import _html_table, _md_table, md_code, md_escape

DECISION_COLUMNS = ["model", "task", "metric", "a", "b", "diff", "ci_low", "ci_high", "mde",
                    "items", "seeds", "snr", "verdict"]


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if v != v else round(v, 4)
    return v


def decision_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Comparison rows (tasks/compare.py) trimmed and rounded for tables."""
    return [{c: _fmt(r.get(c, "")) for c in DECISION_COLUMNS} for r in rows]


def snr_table(snr_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"task": r["task"], "metric": r["metric"], "signal": _fmt(r["signal"]),
             "noise": _fmt(r["noise"]), "snr": _fmt(r["snr"]), "seeds": r["seeds"],
             "checkpoints": r["checkpoints"]} for r in snr_rows]


def _panel_order(keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    def rank(k: tuple[str, str]) -> tuple[int, str, str]:
        first = 0 if k == ("heldout", "bpb") else 1 if k[0] == "aggregate" else \
            3 if k[0].startswith("heldout/") else 2
        return (first, k[0], k[1])
    return sorted(set(keys), key=rank)


def decisions_png(rows: list[dict[str, Any]], max_panels: int = 16) -> bytes | None:
    """One panel per task and metric: each model's difference from the baseline with its
    95 % interval (bar), the minimum detectable effect (shaded, around 0) and 0 (line)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _panel_order([(r["task"], r["metric"]) for r in rows])[:max_panels]
    models = list(dict.fromkeys(r.get("model", "B") for r in rows))
    cols = 2 if len(keys) > 1 else 1
    n_rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(6 * cols, 0.6 + 0.45 * len(models) * n_rows
                                                     + 0.9 * n_rows), dpi=100, squeeze=False)
    colours = {"better": "#15803d", "worse": "#b91c1c", "can't tell": "#6b7280"}
    for ax, key in zip(axes.flat, keys, strict=False):
        sel = {r.get("model", "B"): r for r in rows if (r["task"], r["metric"]) == key}
        mde = max((r["mde"] for r in sel.values() if r["mde"] == r["mde"]), default=0.0)
        ax.axvspan(-mde, mde, color="#e5e7eb", label="MDE")
        ax.axvline(0, color="#111", lw=0.8)
        for y, m in enumerate(models):
            r = sel.get(m)
            if r is None:
                continue
            ax.errorbar([r["diff"]], [y], xerr=[[r["diff"] - r["ci_low"]],
                                                [r["ci_high"] - r["diff"]]],
                        fmt="o", capsize=4, color=colours.get(r["verdict"], "#111"))
        ax.set_yticks(range(len(models)), models)
        ax.set_ylim(-0.7, len(models) - 0.3)
        arrow = "lower is better" if key[1] == "bpb" else "higher is better"
        ax.set_title(f"{key[0]} {key[1]}: B - baseline ({arrow})", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def decisions_markdown(title: str, runs: dict[str, str], rows: list[dict[str, Any]],
                       snr_rows: list[dict[str, Any]]) -> str:
    named = "\n".join(f"- {md_code(m)}: run {md_code(rid)}" for m, rid in runs.items())
    return (f"# {md_escape(title)}\n\n{named}\n\n"
            "## Verdicts (B vs the baseline, 95 % intervals)\n\n"
            f"{_md_table(decision_rows(rows))}\n## Signal and noise per task\n\n"
            f"{_md_table(snr_table(snr_rows))}")


def write_decisions_html(title: str, runs: dict[str, str], rows: list[dict[str, Any]],
                         snr_rows: list[dict[str, Any]], path: Path) -> Path:
    """The comparison report: plots with intervals, verdicts, SNR per task."""
    png = decisions_png(rows)
    img = (f'<img alt="differences with intervals" '
           f'src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else
           "<p><em>nothing compared</em></p>")
    named = "".join(f"<li><b>{html.escape(m)}</b>: run <code>{html.escape(rid)}</code></li>"
                    for m, rid in runs.items())
    notes = "".join(f"<li>{html.escape(r['model'] if 'model' in r else 'B')}: "
                    f"{html.escape(r['note'])}</li>" for r in rows if r.get("note"))
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #111; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; font-size: .9rem; }}
th, td {{ border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; }}
th {{ background: #f3f4f6; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<ul>{named}</ul>
<h2>Differences from the baseline</h2>
<p>Per task and metric: the difference B &minus; baseline (dot) with its 95 % interval (bar:
paired over items, resampled with the seeds' spread, t with Welch&ndash;Satterthwaite degrees
of freedom); grey band: the minimum detectable effect. Green: better, red: worse, grey:
can't tell.</p>
{img}
<h2>Verdicts</h2>
{_html_table(decision_rows(rows))}
<ul>{notes}</ul>
<h2>Signal and noise</h2>
<p>signal = spread of the metric across the compared models / mean; noise = std over the last
checkpoints and seeds of one model / mean (Signal and Noise, AI2). A verdict on a low-SNR task is
weak evidence.</p>
{_html_table(snr_table(snr_rows))}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
