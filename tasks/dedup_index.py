"""The persistent dedup index: the dedup keys of every document kept so far, across runs.

A refresh run dedups its new snapshot against all earlier ones without recomputing them (the
problem of NeMo Curator #1466). The index is

- **Parquet parts**: the filter stage writes, next to its kept shards, ``index/part-*.parquet``
  with the kept documents' keys only (exact-text hash, URL hash, MinHash band keys and
  signature; never the texts: ~0.6 kB per document with MinHash on, 32 B without);
- **a registry in the DuckDB catalog** (table ``dedup_index``): which filter-stage outputs
  (``stage_version``) belong to the index ``name``, in the order they were added (``seq``), and
  the input version they curated (``upstream``).

Lookups are the dedup corpus rules' (tasks/corpus/): each reads the parts' key columns it
needs and drops what it finds there as ``<rule>.seen_before`` before its in-run dedup.

Re-runs stay no-ops: the parts a filter stage sees are those added *before* the first part
curated from the same input (``snapshot``), so re-running a finished stage finds the same
snapshot, the same content-addressed version, and its cached output — it never dedups its
documents against themselves.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.catalog import Catalog

SEEN_EXACT = "exact_dedup.seen_before"
SEEN_URL = "url_dedup.seen_before"
SEEN_NEAR = "minhash_dedup.seen_before"


def snapshot(catalog: Catalog, name: str, upstream: str) -> list[dict[str, Any]]:
    """The index parts a filter stage over input ``upstream`` dedups against: all parts added
    before the first one curated from ``upstream`` (all parts, when there is none)."""
    out = []
    for seq, version, up, files, docs in catalog.dedup_parts(name):
        if up == upstream:
            break
        out.append({"seq": seq, "stage_version": version, "files": json.loads(files),
                    "docs": docs})
    return out


def register(catalog: Catalog, name: str, stage_version: str, upstream: str,
             files: list[str], docs: int, run_id: str) -> bool:
    """Add a filter stage's kept keys to the index; a no-op if that stage output is in it."""
    return catalog.add_dedup_part(name, stage_version, upstream, json.dumps(files), docs, run_id)


def register_args(name: str, stage_version: str, upstream: str, files: list[str], docs: int,
                  run_id: str) -> tuple[Any, ...]:
    """``Catalog.add_dedup_part``'s arguments, for a registration deferred to the run's end."""
    return (name, stage_version, upstream, json.dumps(files), docs, run_id)
