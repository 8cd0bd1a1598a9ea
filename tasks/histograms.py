"""Markdown pictures for the Prefect UI (its markdown artifacts render tables, not images):
histograms of the filters' score columns and a loss-curve sparkline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.report import md_code
from tasks.schema import DOC_COLUMNS

BARS = " ▁▂▃▄▅▆▇█"
SKIP = set(DOC_COLUMNS) | {"reject_stage", "reject_reason"}


def score_columns(files: list[Path]) -> list[str]:
    cols: dict[str, None] = {}
    for f in files:
        for field in pq.read_schema(f):
            if field.name not in SKIP and (pa.types.is_integer(field.type)
                                           or pa.types.is_floating(field.type)):
                cols[field.name] = None
    return list(cols)


def score_histograms(files: list[Path], bins: int = 10, width: int = 30) -> str:
    """One markdown table per score column over all documents the filter scored (kept and
    rejected): bin range, count and a bar. Nulls (rule does not apply) are counted apart."""
    files = [f for f in files if Path(f).is_file()]
    cols = score_columns(files)
    if not cols:
        return "_no score columns_\n"
    out = []
    for col in cols:
        parts = []
        for f in files:
            if col in pq.read_schema(f).names:
                parts.append(pq.read_table(f, columns=[col]).column(col).combine_chunks())
        arr = pa.chunked_array(parts).to_numpy(zero_copy_only=False).astype(np.float64)
        nulls = int(np.isnan(arr).sum())
        vals = arr[~np.isnan(arr)]
        out.append(f"### {md_code(col)}\n")  # a column name: data, not markdown
        if not len(vals):
            out.append(f"all {nulls} null\n")
            continue
        counts, edges = np.histogram(vals, bins=bins)
        top = max(int(counts.max()), 1)
        out += [f"n = {len(vals)}, null = {nulls}, min {vals.min():.4g}, median "
                f"{np.median(vals):.4g}, max {vals.max():.4g}\n", "| bin | docs | |",
                "|---|---:|---|"]
        for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
            out.append(f"| {lo:.4g} – {hi:.4g} | {int(c)} | {'█' * round(width * c / top)} |")
        out.append("")
    return "\n".join(out) + "\n"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo or 1.0
    return "".join(BARS[1 + int((x - lo) / span * (len(BARS) - 2))] for x in v)
