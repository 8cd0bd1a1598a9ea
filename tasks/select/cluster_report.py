"""The clusters of a run, for the report: each cluster's size before the filter stage (the
``clusters`` stage's ``clusters.json``) and after it (the ``cluster`` column of the filter
stage's kept documents, read one column at a time), its d_intra and d_inter, and example
titles; thinned clusters first (lowest share kept)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tasks.composition import data_root_of
from tasks.select.quotas import coverage


def _manifest(stage: dict[str, Any]) -> dict[str, Any]:
    return json.loads((Path(stage["output_path"]) / "manifest.json").read_text())


def kept_counts(root: Path, kept: list[str]) -> dict[int, int]:
    """Documents per cluster among the given kept shards (the ``cluster`` column only)."""
    counts: dict[int, int] = {}
    for rel in kept:
        pf = pq.ParquetFile(root / rel)
        if "cluster" not in pf.schema_arrow.names:
            continue
        for rb in pf.iter_batches(columns=["cluster"]):
            col = rb.column(0).drop_null().to_numpy()
            for c, n in zip(*np.unique(col, return_counts=True), strict=True):
                counts[int(c)] = counts.get(int(c), 0) + int(n)
    return counts


def cluster_rows(stages: list[dict[str, Any]], limit: int = 30) -> list[dict[str, Any]]:
    """One row per cluster (at most ``limit``, the most thinned first) from a run's catalog
    stage rows; empty when the run has no clusters stage or its files are gone."""
    cl = next((s for s in stages if s["stage"] == "clusters"), None)
    if cl is None:
        return []
    try:
        m = _manifest(cl)
        root = data_root_of(cl["output_path"])
        doc = json.loads((root / m["outputs"]["clusters"]).read_text())
        f = next((s for s in stages if s["stage"] == "filter"), None)
        after = kept_counts(root, _manifest(f)["outputs"]["kept"]) if f is not None else None
    except (OSError, ValueError, KeyError, StopIteration):
        return []
    before = {c["cluster"]: c["size"] for c in doc["clusters"]}
    order = {r["cluster"]: i for i, r in
             enumerate(coverage(before, after)["thinned"])} if after is not None else {}
    rows = sorted(doc["clusters"], key=lambda c: (order.get(c["cluster"], len(order)),
                                                   -c["size"], c["cluster"]))
    return [{"cluster": c["cluster"], "documents": c["size"],
             "kept by filter": "" if after is None else after.get(c["cluster"], 0),
             "d_intra": round(c["d_intra"], 3), "d_inter": round(c["d_inter"], 3),
             "example titles": " | ".join(c["titles"])} for c in rows[:limit]]
