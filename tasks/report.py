"""The run report: one self-contained HTML file (plots embedded as PNG) and markdown pieces
for Prefect artifacts, all built from the catalog's rows for the run."""

from __future__ import annotations

import base64
import html
import io
import re
import string
from pathlib import Path
from typing import Any

# every ASCII punctuation character may be backslash-escaped in CommonMark; escaping them all
# (":" and "." too) also defeats GFM's bare-URL autolinks
_MD_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_MD_ENTITY = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
DROPPED = "tokenize.tokens_dropped"  # the tokenize stage's catalog metric (".<source>" each)


def md_escape(value: Any) -> str:
    """A data value (a source name, a task, a rule...) as literal markdown text: no link, image,
    HTML or table cell it could open renders. Numbers are left as they are."""
    if isinstance(value, int | float):
        return str(value)
    text = " ".join(str(value).splitlines())  # a table row stays one row
    return _MD_PUNCT.sub(lambda m: _MD_ENTITY.get(m[0], "\\" + m[0]), text)


def md_code(value: Any) -> str:
    """A data value as inline code; with a backtick or a line break in it (which could end the
    code span), as escaped plain text instead."""
    text = str(value)
    return md_escape(text) if "`" in text or len(text.splitlines()) > 1 else f"`{text}`"


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


def dropped_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Tokens the tokenize stage dropped in packing, per source and in all (its metrics)."""
    per, total = [], []
    for m in run["metrics"]:
        if m["name"] == DROPPED:
            total = [{"source": "all sources", "tokens_dropped": int(m["value"])}]
        elif m["name"].startswith(DROPPED + "."):
            per.append({"source": m["name"][len(DROPPED) + 1:], "tokens_dropped": int(m["value"])})
    return sorted(per, key=lambda r: r["source"]) + total


DROPPED_NOTE = ("Each source's tokens left below one row of seq_len after packing all shards "
                "(at most seq_len - 1 per source).")


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(md_escape(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(md_escape(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown_summary(run: dict[str, Any]) -> str:
    rej = [{"stage": r["stage"], "rule": r["rule"], "dropped_first": r["docs"],
            "would_drop_alone": r["docs_alone"]} for r in run["rejections"]]
    dropped = dropped_rows(run)
    return (
        f"# datamill run {md_code(run['run_id'])} — {md_escape(run['recipe'])}\n\n"
        f"## Funnel\n\n{_md_table(funnel_rows(run))}\n"
        f"## Rejections by rule\n\n{_md_table(rej)}\n"
        + (f"## Tokens dropped in packing\n\n{DROPPED_NOTE}\n\n{_md_table(dropped)}\n"
           if dropped else "")
        + f"## Evaluation\n\n{_md_table(eval_rows(run))}\n"
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


GALLERY_N, GALLERY_RANDOM = 3, 5  # documents per rule and list; kept documents at random
GALLERY_NOTE = ("Per rule, documents it dropped first (a seeded random sample) with their score "
                "and the rule's threshold, and the kept documents nearest that threshold; "
                "dedup rules show each duplicate's kept twin instead (n/a: no scalar score). "
                "Text is an excerpt. The same as `datamill inspect RUN`.")


def extras(run: dict[str, Any]) -> dict[str, Any]:
    """The gallery (tasks/inspect.py) and the figures (tasks/plots.py) of a run, computed once
    per run dict (the HTML report and the Prefect artifacts share them). A part that fails is
    left out and named in ``errors``: a figure never fails the run."""
    if "_extras" in run:
        return run["_extras"]  # type: ignore[no-any-return]
    from tasks import inspect, plots

    ex: dict[str, Any] = {"gallery": None, "figures": [], "errors": []}
    try:
        ex["gallery"] = inspect.inspect_run(run, n=GALLERY_N, random_kept=GALLERY_RANDOM)
    except LookupError:
        pass  # no filter stage in this run
    except Exception as e:  # noqa: BLE001 - shown in the report instead
        ex["errors"].append(f"gallery: {type(e).__name__}: {e}")
    try:
        ex["figures"] = plots.figures(run)
    except Exception as e:  # noqa: BLE001
        ex["errors"].append(f"figures: {type(e).__name__}: {e}")
    run["_extras"] = ex
    return ex


def _gallery_rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in docs:
        row = {"id": d["id"], "source": d["source"], "lang": d["lang"] or "n/a"}
        if "score" in d:
            row.update(score="n/a" if d["score"] is None else d["score"],
                       threshold="n/a" if d["threshold"] is None else d["threshold"])
        if "twin_id" in d:
            row["kept twin"] = d["twin_id"] or "n/a"
        out.append({**row, "excerpt": d["excerpt"]})
    return out


def _gallery_parts(g: dict[str, Any]) -> list[tuple[str, Any]]:
    """The gallery as (kind, value) parts: ("h", rule), ("p", text), ("rows", rows)."""
    parts: list[tuple[str, Any]] = []
    idle = [r["rule"] for r in g["rules"] if not r["dropped_first"]]
    for r in g["rules"]:
        if not r["dropped_first"]:
            continue
        head = f"{r['kind']} rule, dropped first: {r['dropped_first']}"
        if r["score_column"]:
            head += (f"; score {r['score_column']}, threshold "
                     + (" / ".join(f"{t:g}" for t in r["thresholds"]) or "n/a"))
        parts += [("h", r["rule"]), ("p", head), ("p", "dropped:"),
                  ("rows", _gallery_rows(r["dropped"]))]
        if r["nearest_kept"] is None:
            parts.append(("p", f"kept nearest the threshold: n/a ({r['note']})"))
        else:
            parts += [("p", "kept, nearest the threshold:"),
                      ("rows", _gallery_rows(r["nearest_kept"]))]
    if idle:
        parts.append(("p", "no document dropped first by: " + ", ".join(idle)))
    if g["random_kept"]:
        parts += [("h", f"kept documents at random (seed {g['options']['seed']})"),
                  ("rows", _gallery_rows(g["random_kept"]))]
    return parts


def gallery_html(g: dict[str, Any] | None) -> str:
    if g is None:
        return ""
    out = ["<h2>Gallery: what each rule dropped and kept</h2>",
           f"<p>{html.escape(GALLERY_NOTE)}</p>", '<div class="gallery">']
    for kind, v in _gallery_parts(g):
        out.append(f"<h3><code>{html.escape(v)}</code></h3>" if kind == "h" else
                   f"<p>{html.escape(v)}</p>" if kind == "p" else _html_table(v))
    return "\n".join([*out, "</div>"]) + "\n"


def gallery_markdown(g: dict[str, Any]) -> str:
    out = [f"# Gallery, run {md_code(g['run_id'])}\n", md_escape(GALLERY_NOTE) + "\n"]
    for kind, v in _gallery_parts(g):
        out.append(f"## {md_code(v)}\n" if kind == "h" else
                   md_escape(v) + "\n" if kind == "p" else _md_table(v))
    return "\n".join(out)


def _img(title: str, png: bytes) -> str:
    return (f'<img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def figures_html(ex: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "".join(f"<h2>{html.escape(f.title)}</h2>\n<p>{html.escape(f.caption)}</p>\n"
                   f"{_img(f.title, f.png)}\n" for f in ex["figures"] if f.key in keys)


def extra_artifacts(run: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, description, markdown) of the Prefect artifacts beyond the summary: the gallery
    and one per figure, its PNG inline as a data URI (the UI renders it; no file server)."""
    ex = extras(run)
    rid = run["run_id"]
    out = [(f"datamill-{f.key}", f"{f.title}, run {rid}",
            f"# {md_escape(f.title)}\n\n{md_escape(f.caption)}\n\n"
            f"![{md_escape(f.title)}](data:image/png;base64,{base64.b64encode(f.png).decode()})"
            "\n") for f in ex["figures"]]
    if ex["gallery"] is not None:
        out.append(("datamill-gallery", f"What each filter rule dropped and kept, run {rid}",
                    gallery_markdown(ex["gallery"])))
    return out


def more_tables(run: dict[str, Any]) -> str:
    """Epochs per source seen by training (tasks/composition.py) and where the time went
    (tasks/profile.py), as HTML sections; a table that cannot be built is left out."""
    from tasks.composition import composition
    from tasks.profile import profile_rows

    out = []
    try:
        training = composition(run["stages"])["training"]
    except (OSError, ValueError, KeyError):
        training = []
    if training:
        out.append("<h2>Epochs per source</h2>\n<p>How many times training saw each source's "
                   "tokens (tokens seen / tokens available).</p>\n" + _html_table(training))
    from tasks.train.stability import gap_rows

    if gaps := gap_rows(run.get("metrics", [])):
        out.append("<h2>Old-domain loss (stability gap)</h2>\n<p>A continued run's loss on fixed "
                   "rows of the init run's data, measured from step 0: its highest value (the "
                   "gap) and the step it is back within 1 % of the start.</p>\n"
                   + _html_table(gaps))
    prof = profile_rows(run["stages"])
    if prof:
        out.append("<h2>Where the time goes</h2>\n<p>Per shard step: wall and CPU seconds summed "
                   "over shards, bytes read and written by the workers' processes.</p>\n"
                   + _html_table(prof))
    from tasks.select.cluster_report import cluster_rows

    clusters = cluster_rows(run["stages"])
    if clusters:
        out.append("<h2>Clusters</h2>\n<p>The clusters stage's k-means clusters (embeddings): "
                   "documents, kept by the filter stage, d_intra, d_inter, example titles; "
                   "the most thinned first.</p>\n" + _html_table(clusters))
    return "\n".join(out)


def write_html(run: dict[str, Any], path: Path) -> Path:
    png = loss_curve_png(run["metrics"])
    img = _img("loss curve", png) if png else "<p><em>no training in this run</em></p>"
    ex = extras(run)
    errors = "".join(f"<p><em>not drawn: {html.escape(e)}</em></p>" for e in ex["errors"])
    rej = [{"stage": r["stage"], "rule": r["rule"], "dropped first": r["docs"],
            "would drop alone": r["docs_alone"]} for r in run["rejections"]]
    drops = dropped_rows(run)
    dropped = (f"<h2>Tokens dropped in packing</h2>\n<p>{html.escape(DROPPED_NOTE)}</p>\n"
               f"{_html_table(drops)}\n" if drops else "")
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>datamill run {html.escape(run['run_id'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #111; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; }}
th {{ background: #f3f4f6; }} img {{ max-width: 100%; }}
.gallery td {{ font-size: .85rem; vertical-align: top; }} .gallery h3 {{ margin-bottom: .2rem; }}
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
{figures_html(ex, ("score-histograms", "corpus-size"))}{dropped}<h2>Training loss</h2>
{img}
<h2>Evaluation</h2>
<p>Bits per byte on the held-out split (documents chosen by a hash of their id; never trained
on), overall and per source. Lower is better.</p>
{_html_table(eval_rows(run))}
{figures_html(ex, ("bpb-by-source",))}{more_tables(run)}{gallery_html(ex["gallery"])}{errors}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
