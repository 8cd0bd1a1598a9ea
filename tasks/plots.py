"""The run report's figures, drawn with matplotlib (Agg) from a run's outputs, as PNG bytes:

- score histograms: per score column a rule thresholds (tasks/inspect.py rule_infos), and
  per selector column (``*_score``, a corpus rule's column or annotation: ``quality_bucket``),
  the documents stacked as kept / dropped by that column's rule / dropped by another rule, the
  threshold(s) marked;
- corpus size before and after curation: UTF-8 bytes per source and per language of the
  ingest stage's kept documents and the filter's, and the tokenize stage's training tokens
  per source (its manifest); documents carry no token counts before tokenizing;
- held-out bits per byte per source with 95 % intervals (items resampled by the delta
  method plus the seeds' spread, tasks/stats.py), values from the catalog's eval rows.

Bounded memory: Parquet is streamed in record batches of the columns needed (a histogram in
two passes: range, then counts); no document text is held.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import inspect as ins

BINS = 30
MAX_PANELS = 12
MAX_BARS = 12
OWN, OTHER = "dropped by the rule(s) in the title", "dropped by another rule"
COLOURS = {"kept": "#2563eb", OWN: "#dc2626", OTHER: "#f59e0b"}


@dataclass
class Figure:
    key: str  # a Prefect artifact key's tail: lowercase letters, digits, dashes
    title: str
    caption: str
    png: bytes


def label(value: Any, chars: int = 40) -> str:
    """A data value as a matplotlib label: one line, no control characters, no mathtext."""
    return ins.clean(value, chars).replace("$", r"\$")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------ score histograms
def _edges(lo: float, hi: float, pos_lo: float, thresholds: list[float]
           ) -> tuple[np.ndarray, dict[str, Any]]:
    """Bin edges over the values and thresholds, and the x scale: log bins for a heavy
    positive tail (word counts), else linear."""
    lo, hi = min([lo, *thresholds]), max([hi, *thresholds])
    if lo > 0 and hi / lo > 1000:
        return np.geomspace(lo, hi * 1.0001, BINS + 1), {"value": "log"}
    if lo == 0 and 0 < pos_lo < math.inf and hi / pos_lo > 1000:
        return (np.concatenate([[0.0], np.geomspace(pos_lo, hi * 1.0001, BINS)]),
                {"value": "symlog", "linthresh": pos_lo})
    return np.linspace(lo, hi if hi > lo else lo + 1.0, BINS + 1), {"value": "linear"}


def histogram_data(folder: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per thresholded score column (at most MAX_PANELS): its rules, thresholds, bin edges,
    x scale, null count and per-bin counts of kept / dropped by its rules / dropped by
    another rule. Two streaming passes over the filter's output: range, then counts."""
    from tasks.histograms import score_columns

    kept = ins.outputs(folder, manifest, "kept")
    rejected = ins.outputs(folder, manifest, "rejected")
    files = kept + rejected
    numeric = set(score_columns(files))
    infos = ins.rule_infos(manifest, numeric)
    by_col: dict[str, list[ins.RuleInfo]] = {}
    for r in infos:
        if r.scalar and r.column in numeric:
            by_col.setdefault(r.column, []).append(r)  # type: ignore[arg-type]
    for c, rules in selector_columns(manifest, numeric, infos).items():
        by_col.setdefault(c, rules)  # a selector's column no rule thresholds: panel too
    cols = list(by_col)[:MAX_PANELS]
    # pass 1: each column's range (and smallest positive value, for log bins)
    rng = {c: [math.inf, -math.inf, math.inf] for c in cols}
    for _, _, rb in ins.batches(files, cols):
        for c in cols:
            v = ins.floats(rb, c)
            if v is None or not np.isfinite(v).any():
                continue
            v = v[np.isfinite(v)]
            r = rng[c]
            r[0], r[1] = min(r[0], v.min()), max(r[1], v.max())
            if (v > 0).any():
                r[2] = min(r[2], v[v > 0].min())
    binned = {c: _edges(*rng[c], [t for r in by_col[c] for t in r.thresholds])
              for c in cols if math.isfinite(rng[c][0])}
    edges = {c: e for c, (e, _) in binned.items()}
    counts = {c: {k: np.zeros(len(e) - 1) for k in COLOURS} for c, e in edges.items()}
    nulls = dict.fromkeys(edges, 0)
    # pass 2: counts, rejected documents split by whether this column's rule dropped them
    for part, fs in (("kept", kept), ("rejected", rejected)):
        for _, _, rb in ins.batches(fs, [*edges, "reject_reason"]):
            reasons = (ins.column(rb, "reject_reason").to_numpy(zero_copy_only=False)
                       if part == "rejected" else None)
            for c, e in edges.items():
                v = ins.floats(rb, c)
                if v is None:
                    continue
                ok = np.isfinite(v)
                nulls[c] += int((~ok).sum())
                if reasons is None:
                    counts[c]["kept"] += np.histogram(v[ok], e)[0]
                    continue
                own = np.isin(reasons, [r.rule for r in by_col[c]])
                counts[c][OWN] += np.histogram(v[ok & own], e)[0]
                counts[c][OTHER] += np.histogram(v[ok & ~own], e)[0]
    return {c: {"rules": [r.rule for r in by_col[c]], "edges": e, "scale": binned[c][1],
                "thresholds": sorted({t for r in by_col[c] for t in r.thresholds}),
                "nulls": nulls[c], "counts": counts[c]} for c, e in edges.items()}


def selector_columns(manifest: dict[str, Any], numeric: set[str], infos: list[ins.RuleInfo]
                     ) -> dict[str, list[ins.RuleInfo]]:
    """Selector columns with no threshold of their own, each with the rules that decide on
    it: every numeric ``*_score`` (dclm_fasttext_score, dsir_score, ...), the columns a corpus
    rule names (``column``, ``columns``) and a non-dedup corpus rule's annotations
    (``quality_bucket``); an annotation's own rules are its rule's (``dsir.not_sampled``)."""
    from tasks.corpus import get_rule

    filt = manifest.get("config", {}).get("filter", {}) or {}
    out: dict[str, list[ins.RuleInfo]] = {c: [] for c in sorted(numeric)
                                          if c.endswith("_score")}
    for key, cfg in (filt.get("corpus") or {}).items():
        cfg = cfg or {}
        named = [cfg.get("column"), *(cfg.get("columns") or [])]
        for c in named:
            if isinstance(c, str) and c in numeric:
                out.setdefault(c, [])
        try:
            mod = get_rule(key)
        except Exception:  # a plug-in that no longer imports: no annotations known
            continue
        name = str(getattr(mod, "NAME", key))
        if name.endswith("_dedup"):
            continue
        for c in getattr(mod, "ANNOTATIONS", {}):
            if c in numeric:
                out[c] = [r for r in infos if r.rule.startswith(name + ".")]
    return out


def score_histograms(folder: Path, manifest: dict[str, Any]) -> bytes | None:
    """One panel per thresholded score column, stacked, thresholds dashed; None without."""
    data = histogram_data(folder, manifest)
    if not data:
        return None
    plt = _pyplot()
    n = len(data)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.9 * nrows), dpi=90,
                             squeeze=False)
    for ax, (c, h) in zip(axes.flat, data.items(), strict=False):
        e = h["edges"]
        bottom = np.zeros(len(e) - 1)
        for k, colour in COLOURS.items():  # stacked: one filled step artist per part
            ax.stairs(bottom + h["counts"][k], e, baseline=bottom.copy(), fill=True,
                      color=colour, label=k)
            bottom += h["counts"][k]
        for t in h["thresholds"]:
            ax.axvline(t, color="#111", ls="--", lw=1)
        ax.set_xscale(**h["scale"])
        rules = ", ".join(r.split(".", 1)[-1] for r in h["rules"])
        # y given: matplotlib then skips measuring every tick label to place the title
        ax.set_title(label(f"{c} ({rules})" if rules else c, 60), fontsize=8, y=1.0)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="y", nbins=4)
        if h["scale"]["value"] == "linear":
            ax.locator_params(axis="x", nbins=5)
        if h["nulls"]:
            ax.text(0.98, 0.95, f"{h['nulls']} null", transform=ax.transAxes, ha="right",
                    va="top", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    # fixed margins: tight_layout would measure every tick label of every panel (slow)
    height = 2.9 * nrows
    fig.subplots_adjust(left=0.05, right=0.98, top=1 - 0.3 / height, bottom=0.75 / height,
                        hspace=0.45, wspace=0.22)
    return _png(fig)


# ------------------------------------------------------------------- corpus size per stage
def corpus_bytes(files: list[Path]) -> dict[str, dict[str, list[int]]]:
    """{"source": {name: [docs, bytes]}, "lang": {...}}: UTF-8 bytes of the texts, streamed
    one record batch (of source, lang and text) at a time."""
    out: dict[str, dict[str, list[int]]] = {"source": {}, "lang": {}}
    for _, _, rb in ins.batches(files, ["source", "lang", "text"]):
        t = pa.table({"source": pc.fill_null(ins.column(rb, "source"), "(none)"),
                      "lang": pc.fill_null(ins.column(rb, "lang"), "(none)"),
                      "bytes": pc.binary_length(ins.column(rb, "text"))})
        for key in ("source", "lang"):
            for row in t.group_by(key).aggregate([("bytes", "sum"), ("bytes", "count")]
                                                 ).to_pylist():
                acc = out[key].setdefault(row[key], [0, 0])
                acc[0] += int(row["bytes_count"])
                acc[1] += int(row["bytes_sum"] or 0)
    return out


def _top(named: dict[str, float], keep: int = MAX_BARS) -> list[str]:
    names = sorted(named, key=lambda k: (-named[k], k))
    return names[:keep]


def volumes(run: dict[str, Any], data_root: Path | None = None) -> bytes | None:
    """Bytes per source and per language at ingest (kept) and after the filter, and the
    tokenize stage's training tokens per source. None without an ingest and a filter stage."""
    sizes, tokens = {}, {}
    for stage in ("ingest", "filter"):
        folder = ins.stage_dir(run, stage, data_root)
        if folder is None or not (folder / "manifest.json").is_file():
            return None
        sizes[stage] = corpus_bytes(ins.outputs(folder, ins.load_manifest(folder), "kept"))
    tok = ins.stage_dir(run, "tokenize", data_root)
    if tok is not None and (tok / "manifest.json").is_file():
        tokens = ins.load_manifest(tok).get("tokens_by_source", {}) or {}
    plt = _pyplot()
    panels = [("source", "UTF-8 MB per source"), ("lang", "UTF-8 MB per language")]
    fig, axes = plt.subplots(1, 3 if tokens else 2, figsize=(13 if tokens else 9, 4.2),
                             dpi=90, squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        before = {k: v[1] for k, v in sizes["ingest"][key].items()}
        names = _top(before)
        y = np.arange(len(names))
        for off, stage, colour in ((-0.2, "ingest", "#94a3b8"), (0.2, "filter", "#2563eb")):
            vals = [sizes[stage][key].get(nm, [0, 0])[1] / 1e6 for nm in names]
            ax.barh(y + off, vals, height=0.4, color=colour,
                    label=f"{stage} kept" if stage == "filter" else "ingest (before)")
        ax.set_yticks(y, [label(nm, 24) for nm in names], fontsize=7)
        ax.invert_yaxis()
        more = len(before) - len(names)
        ax.set_title(title + (f" (top {len(names)}, {more} more)" if more else ""), fontsize=9,
                     y=1.0)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7)
    if tokens:
        ax = axes.flat[2]
        names = _top({k: float(v) for k, v in tokens.items()})
        ax.barh(np.arange(len(names)), [tokens[nm] for nm in names], color="#16a34a")
        ax.set_yticks(np.arange(len(names)), [label(nm, 24) for nm in names], fontsize=7)
        ax.invert_yaxis()
        ax.set_title("training tokens per source (tokenize)", fontsize=9, y=1.0)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------ bits per byte per source
def heldout_items(folder: Path) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(split, "bpb") -> item id -> (bits, bytes) of an evaluate stage's final model, for the
    split 'heldout' and each 'heldout/<source>'."""
    import pyarrow.parquet as pq

    t = pq.read_table(folder / "items.parquet", filters=[("task", "=", "heldout"),
                                                          ("metric", "=", "bpb")])
    final = (pc.fill_null(pc.equal(t.column("checkpoint"), "final"), True)
             if "checkpoint" in t.column_names else None)
    if final is not None:
        t = t.filter(final)
    out: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for r in t.select(["item_id", "source", "num", "den"]).to_pylist():
        for split in ("heldout", f"heldout/{r['source']}"):
            out.setdefault((split, "bpb"), {})[r["item_id"]] = (r["num"], r["den"])
    return out


def bpb_rows(run: dict[str, Any], data_root: Path | None = None) -> list[dict[str, Any]]:
    """Per held-out split ('heldout', 'heldout/<source>'): the catalog's bits per byte (mean
    over seeds, final models) and a 95 % interval over the documents (delta method on the
    evaluate stage's per-item bits and bytes) plus the seeds' spread; interval None when
    neither is known (one seed and no items)."""
    from tasks.stats import interval, seed_variance, t_quantile

    vals: dict[str, list[float]] = defaultdict(list)
    for e in run.get("evals", []):
        ck = str(e.get("checkpoint") or "")
        if e["metric"] == "bpb" and str(e["task"]).startswith("heldout") \
                and "/checkpoints/step-" not in ck and math.isfinite(e["value"]):
            vals[e["task"]].append(float(e["value"]))
    items = [heldout_items(f) for s in run.get("stages", []) if s.get("stage") == "evaluate"
             and (f := ins.stage_dir({"stages": [s]}, "evaluate", data_root)) is not None
             and (f / "items.parquet").is_file()]
    rows = []
    for task in sorted(vals, key=lambda t: (t != "heldout", t)):
        v = vals[task]
        row = {"split": task, "bpb": float(np.mean(v)), "seeds": len(v), "low": None,
               "high": None, "docs": None}
        per = [it.get((task, "bpb"), {}) for it in items]
        ids = sorted(set.intersection(*[set(p) for p in per])) if per and all(per) else []
        if len(ids) >= 2:
            num = np.array([[p[i][0] for i in ids] for p in per])
            den = np.array([[p[i][1] for i in ids] for p in per])
            tot_n, tot_d = num.sum(0), den.sum(0)
            ratio = tot_n.sum() / tot_d.sum()
            resid = tot_n - ratio * tot_d
            var = len(ids) / (len(ids) - 1) * float((resid ** 2).sum()) / tot_d.sum() ** 2
            low, high, *_ = interval(row["bpb"], var, len(ids) - 1,
                                     [seed_variance(num, den)])
            row.update(low=low, high=high, docs=len(ids))
        elif len(v) >= 2:
            half = t_quantile(0.975, len(v) - 1) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
            row.update(low=row["bpb"] - half, high=row["bpb"] + half)
        rows.append(row)
    return rows


def bpb_chart(rows: list[dict[str, Any]]) -> bytes | None:
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.38 * len(rows)), dpi=90)
    y = np.arange(len(rows))
    vals = [r["bpb"] for r in rows]
    err = np.array([[r["bpb"] - r["low"], r["high"] - r["bpb"]] if r["low"] is not None
                    else [0.0, 0.0] for r in rows]).T
    ax.barh(y, vals, color=["#111827" if r["split"] == "heldout" else "#2563eb" for r in rows],
            xerr=err, capsize=3, ecolor="#dc2626")
    names = ["all sources" if r["split"] == "heldout" else r["split"].split("/", 1)[1]
             for r in rows]
    ax.set_yticks(y, [label(nm, 30) for nm in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("bits per byte on the held-out split (lower is better)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def figures(run: dict[str, Any], data_root: Path | None = None) -> list[Figure]:
    """The report's figures this run has data for (the loss curve is tasks/report.py's)."""
    out = []
    folder = ins.stage_dir(run, "filter", data_root)
    if folder is not None and (folder / "manifest.json").is_file():
        png = score_histograms(folder, ins.load_manifest(folder))
        if png:
            out.append(Figure("score-histograms", "Score distributions", HIST_NOTE, png))
    png = volumes(run, data_root)
    if png:
        out.append(Figure("corpus-size", "Corpus before and after curation", SIZE_NOTE, png))
    # the evaluate stage's chart: its catalog rows, intervals from its per-item scores
    evaluated = any(s.get("stage") == "evaluate" for s in run.get("stages", []))
    png = bpb_chart(bpb_rows(run, data_root)) if evaluated else None
    if png:
        out.append(Figure("bpb-by-source", "Bits per byte per source", BPB_NOTE, png))
    return out


HIST_NOTE = ("Every document the filter scored, per score column a rule thresholds and per "
             "selector column (classifier scores, DSIR weights, quality buckets): kept "
             "(blue), dropped first by the rule(s) named in the panel's title (red), dropped "
             "first by another rule (amber). Dashed lines: the thresholds. Null scores (the "
             "rule does not apply) are counted apart.")
SIZE_NOTE = ("UTF-8 megabytes of the documents the ingest stage kept (before curation) and "
             "of those the filter kept (after), per source and per language; and the "
             "training tokens per source the tokenize stage packed (documents have no token "
             "counts before tokenizing).")
BPB_NOTE = ("Bits per byte of the proxy model on the held-out split, overall and per source "
            "(mean over seeds). Error bars: 95 % intervals over the held-out documents "
            "(delta method on per-document bits and bytes) plus the seeds' spread; none for a "
            "split of fewer than 2 documents scored by one seed.")
