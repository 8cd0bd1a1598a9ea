"""The per-task decontamination report, and the work shared by the stage and the audit.

- ``prepare``: the evaluation items (tasks/decontam/items.py) -> ``index.npz`` (the n-gram hash
  index) and ``items.parquet`` (task, source, id, words, and each item's n-gram positions in the
  index) in a folder.
- ``decide_table``: one table of documents against the index: held-out documents pass untouched
  and unscanned (they are the evaluation's own text); a training document sharing an n-gram is
  dropped (reason ``decontam.<task>``, the first of its tasks in name order) or has the spans
  cut (``action: cut``). Returns the statistics a shard reports.
- ``build_report``: per task — items, items checked (at least n words), items contaminated
  (at least one n-gram found in a training document), by item source; training documents
  affected, by document source.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.decontam import ngrams as ng
from tasks.decontam.items import Item, file_items, harness_items, own_items

SHOW_IDS = 20  # contaminated item ids listed per task


def prepare(out_dir: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Build and write the index of the items ``spec`` names. ``spec``: n, own (None or
    {paths, fraction, max_docs, tasks, max_items, seed}: the held-out split as evaluate reads
    it), paths, fields, harness_tasks, harness_include, harness_limit."""
    from tasks.evaluate import read_raw_heldout

    items: list[Item] = []
    unsupported: list[str] = []
    own = spec.get("own")
    if own is not None:
        held = read_raw_heldout(own["paths"], own["fraction"], own["max_docs"]).to_pylist()
        tasks = list(own["tasks"])
        from tasks import evalsets

        unsupported = [t for t in tasks if t not in evalsets.TASKS]
        items += own_items(held, [t for t in tasks if t not in unsupported],
                           own["max_items"], own["seed"])
    skipped = 0
    if spec.get("paths"):
        got, skipped = file_items(spec["paths"], spec.get("fields") or ["text"])
        items += got
    if spec.get("harness_tasks"):
        items += harness_items(spec["harness_tasks"], spec.get("harness_include") or [],
                               spec.get("harness_limit"))
    return write_index(Path(out_dir), items, spec["n"], skipped, unsupported)


def write_index(out: Path, items: list[Item], n: int, skipped: int = 0,
                unsupported: list[str] | None = None) -> dict[str, Any]:
    from tasks.store import atomic_write_json, write_parquet

    out.mkdir(parents=True, exist_ok=True)
    index, per_item = ng.build_index([i.text for i in items], [i.task for i in items], n)
    index.save(out / "index.npz")
    write_parquet(pa.table({
        "task": pa.array([i.task for i in items], pa.string()),
        "source": pa.array([i.source for i in items], pa.string()),
        "id": pa.array([i.id for i in items], pa.string()),
        "ngrams": pa.array([p.tolist() for p in per_item], pa.list_(pa.int64())),
    }), out / "items.parquet")
    by_task: dict[str, int] = defaultdict(int)
    for i in items:
        by_task[i.task] += 1
    summary = {"n": n, "items": dict(sorted(by_task.items())), "ngrams": int(len(index.hashes)),
               "index_bytes": int(index.hashes.nbytes + index.owners.nbytes),
               "skipped_lines": skipped, "unsupported_tasks": unsupported or []}
    atomic_write_json(out / "prepared.json", summary)
    return summary


_INDEX: dict[str, ng.EvalIndex] = {}


def load_index(path: str) -> ng.EvalIndex:
    """The index, loaded once per worker process (each shard of a stage reuses it)."""
    if path not in _INDEX:
        _INDEX.clear()
        _INDEX[path] = ng.EvalIndex.load(Path(path))
    return _INDEX[path]


def decide_table(t: pa.Table, index: ng.EvalIndex, fraction: float, action: str = "drop",
                 margin: int = 0, max_cuts: int | None = None
                 ) -> tuple[pa.Table, pa.Table, pa.Array, dict[str, Any]]:
    """(kept documents, rejected documents, their reasons, statistics) for one table."""
    from tasks.tokenize import heldout_mask

    ids = t.column("id").combine_chunks()
    held = heldout_mask(ids, fraction) if len(t) else np.zeros(0, bool)
    texts = t.column("text").to_pylist()
    sources = t.column("source").to_pylist()
    train_rows = np.flatnonzero(~held)
    matches = ng.scan([texts[r] for r in train_rows], index)
    reason = np.full(len(t), "", dtype=object)
    counts: dict[str, dict[str, int]] = {}
    affected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    hits: set[int] = set()
    new_text = list(texts)
    cut_docs = cut_spans = 0
    for j, m in matches.items():
        row = int(train_rows[j])
        hits.update(int(x) for x in np.unique(m.hits))
        names = ng.task_names(m.owners, index.tasks)
        for name in names:
            affected[name][sources[row]] += 1
            if action == "drop":
                c = counts.setdefault(f"decontam.{name}", {"first": 0, "alone": 0})
                c["alone"] += 1
        if action == "drop":
            reason[row] = f"decontam.{names[0]}"
            counts[reason[row]]["first"] += 1
            continue
        text, spans = ng.cut(texts[row], m.starts, index.n, margin)
        rule = ("decontam.too_many_cuts" if max_cuts is not None and spans > max_cuts
                else "decontam.emptied" if not ng.WORD.search(text) else "")
        if rule:
            reason[row] = rule
            c = counts.setdefault(rule, {"first": 0, "alone": 0})
            c["first"] += 1
            c["alone"] += 1
            continue
        new_text[row] = text
        cut_docs += 1
        cut_spans += spans
    if cut_docs:
        col = t.schema.get_field_index("text")
        t = t.set_column(col, t.schema.field(col), pa.array(new_text, t.schema.field(col).type))
    keep = reason == ""
    stats = {"docs_in": len(t), "docs_kept": int(keep.sum()),
             "docs_rejected": int((~keep).sum()), "rejections": counts,
             "heldout_docs": int(held.sum()), "scanned": len(train_rows),
             "hits": sorted(hits), "affected": {k: dict(v) for k, v in affected.items()}}
    if action == "cut":
        stats["edits"] = {"decontam.cut_docs": cut_docs, "decontam.cut_spans": cut_spans}
    return (t.filter(pa.array(keep)), t.filter(pa.array(~keep)),
            pa.array(reason[~keep].tolist(), pa.string()), stats)


def merge_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The shards' hits, affected documents, held-out and scanned counts, summed."""
    hits: set[int] = set()
    affected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    held = scanned = 0
    for s in stats:
        hits.update(s.get("hits", []))
        held += int(s.get("heldout_docs", 0))
        scanned += int(s.get("scanned", 0))
        for task, by_src in s.get("affected", {}).items():
            for src, k in by_src.items():
                affected[task][src] += int(k)
    return {"hits": hits, "heldout_docs": held, "scanned": scanned,
            "affected": {k: dict(sorted(v.items())) for k, v in affected.items()}}


def build_report(index_dir: Path, merged: dict[str, Any]) -> dict[str, Any]:
    """Per task: items, checked, contaminated (by item source, first ids), the mean share of
    a contaminated item's n-grams found, documents affected (by document source)."""
    import json

    items = pq.read_table(index_dir / "items.parquet").to_pylist()
    prepared = json.loads((index_dir / "prepared.json").read_text())
    hits = np.array(sorted(merged["hits"]), np.int64)
    tasks: dict[str, dict[str, Any]] = {}
    for it in items:
        r = tasks.setdefault(it["task"], {
            "items": 0, "items_checked": 0, "items_contaminated": 0,
            "contaminated_by_source": defaultdict(int), "contaminated_ids": [],
            "overlap": []})
        r["items"] += 1
        grams = np.asarray(it["ngrams"], np.int64)
        if len(grams) == 0:
            continue
        r["items_checked"] += 1
        found = np.isin(grams, hits).sum()
        if found:
            r["items_contaminated"] += 1
            r["contaminated_by_source"][it["source"]] += 1
            r["overlap"].append(found / len(grams))
            if len(r["contaminated_ids"]) < SHOW_IDS:
                r["contaminated_ids"].append(it["id"])
    for name, r in tasks.items():
        by_doc = merged["affected"].get(name, {})
        r["contaminated_by_source"] = dict(sorted(r["contaminated_by_source"].items()))
        ov = r.pop("overlap")
        r["mean_overlap"] = float(np.mean(ov)) if ov else None
        r["docs_affected"] = int(sum(by_doc.values()))
        r["docs_affected_by_source"] = by_doc
    return {"n": prepared["n"], "ngrams": prepared["ngrams"],
            "index_bytes": prepared["index_bytes"], "skipped_lines": prepared["skipped_lines"],
            "unsupported_tasks": prepared["unsupported_tasks"],
            "heldout_docs": merged["heldout_docs"], "scanned_docs": merged["scanned"],
            "tasks": dict(sorted(tasks.items()))}
