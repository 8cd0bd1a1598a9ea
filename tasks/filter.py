"""The filter stage's per-shard work: score once, decide later (dolma's split).

``score_shard`` adds every document filter's score columns (and the columns corpus rules
compute once, e.g. dedup hashes, MinHash signatures) to a shard and stores them.
``corpus_keys`` gathers, per shard, the small keys each corpus rule needs (never texts);
the rules decide over all shards (``tasks/corpus/``); ``decide_shard`` applies the document
rules' thresholds and the corpus rules' decisions to stored scores — so changing a threshold
never recomputes a score — and writes kept and rejected docs, each rejection naming its
first rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.corpus import get_rule
from tasks.corpus.base import RuleContext, decision_path, when
from tasks.filters import text as tx
from tasks.filters.base import FilterConfig, get_filter
from tasks.schema import DOC_COLUMNS, with_reject
from tasks.store import write_parquet

Rules = Mapping[str, Any]  # corpus rule name (recipe key or import path) -> its Config


def score_table(table: pa.Table, filters: Mapping[str, FilterConfig],
                corpus: Rules | None = None) -> pa.Table:
    """The input table plus all score columns, in recipe order. An edit step (a module with
    ``edit``: ``c4_lines``, ``pii``) replaces ``text``; the steps after it, and the corpus
    rules' columns (dedup hashes), see the edited text."""
    out = table
    for name, cfg in filters.items():
        module = get_filter(name)
        edit = getattr(module, "edit", None)
        if edit is not None:
            text, scores = edit(out, cfg)
            out = out.set_column(out.schema.get_field_index("text"), "text", text)
        else:
            scores = module.score(out, cfg)
        for col_name in scores.column_names:
            out = out.append_column(col_name, scores.column(col_name))
    tx.forget_words()  # the rule sets' shared words of this table (text.shared_words)
    edited = out
    for name, cfg in (corpus or {}).items():
        score = getattr(get_rule(name), "score", None)
        if score is not None:
            cols = score(edited, cfg)
            for col_name in cols.column_names:
                out = out.append_column(col_name, cols.column(col_name))
    return out


def score_shard(in_path: str, out_path: str, filters: Mapping[str, FilterConfig],
                corpus: Rules | None = None) -> dict[str, Any]:
    pf = pq.ParquetFile(in_path)
    tables = [score_table(pa.Table.from_batches([rb]), filters, corpus)
              for rb in pf.iter_batches(batch_size=5_000)]
    if tables:
        t = pa.concat_tables(tables)
    else:  # an empty shard still gets a (typed) scored file
        t = score_table(pf.schema_arrow.empty_table(), filters, corpus)
    write_parquet(t, Path(out_path), row_group_rows=pf.metadata.row_group(0).num_rows
                  if pf.metadata.num_row_groups else None)
    return {"docs_in": len(t), "docs_kept": len(t), "docs_rejected": 0,
            "edits": edit_totals(t, filters)}


def edit_totals(scored: pa.Table, filters: Mapping[str, FilterConfig]) -> dict[str, int]:
    """Totals of the edit steps' count columns (``c4_lines_removed``, ``pii_emails``, ...)."""
    out: dict[str, int] = {}
    for name in filters:
        module = get_filter(name)
        if not hasattr(module, "edit"):
            continue
        for col in module.SCORE_SCHEMA.names:
            if col.endswith("_total"):
                continue
            out[col] = int(pc.sum(scored.column(col)).as_py() or 0)
    return out


def first_failure(
    scores: pa.Table, filters: Mapping[str, FilterConfig]
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Per row, the name of the first failing rule ('' if none), and per-rule counts:
    ``alone`` = docs that rule would drop by itself, ``first`` = docs it dropped first."""
    reason = np.full(len(scores), "", dtype=object)
    counts: dict[str, dict[str, int]] = {}
    for name, cfg in filters.items():
        for rule, fails in get_filter(name).rules(scores, cfg).items():
            _mark(reason, counts, rule,
                  pc.fill_null(fails, False).to_numpy(zero_copy_only=False).astype(bool))
    return reason, counts


def _mark(reason: np.ndarray, counts: dict[str, dict[str, int]], rule: str,
          mask: np.ndarray) -> None:
    newly = mask & (reason == "")
    reason[newly] = rule
    c = counts.setdefault(rule, {"alone": 0, "first": 0})
    c["alone"] += int(mask.sum())
    c["first"] += int(newly.sum())


def _rule_columns(rule: Any, cfg: Any) -> tuple[str, ...]:
    cols = getattr(rule, "columns", None)
    return tuple(cols(cfg)) if cols is not None else tuple(rule.COLUMNS)


def _read_scores(path: str, filters: Mapping[str, FilterConfig], extra: Sequence[str]
                 ) -> pa.Table:
    names = pq.read_schema(path).names
    prefixes = tuple(f"{get_filter(n).NAME}_" for n in filters)
    cols = [c for c in names if c.startswith(prefixes) and c not in DOC_COLUMNS]
    cols += [c for c in dict.fromkeys(extra) if c in names and c not in cols]  # rules may share
    return pq.read_table(path, columns=[*cols, "lang"] if "lang" not in cols else cols)


def corpus_keys(scored_path: str, shard: int, filters: Mapping[str, FilterConfig],
                corpus: Rules, keys_dirs: Sequence[str], work_dir: str) -> dict[str, int]:
    """Gather, for each corpus rule, this shard's keys of the rows in play (those passing
    the document rules, or every row for a rule stated ``before`` them) into
    ``keys_dirs[i]/part-<shard>.parquet``. Small columns only, never the texts."""
    rules = [(get_rule(n), c) for n, c in corpus.items()]
    extra = [c for r, cfg in rules for c in _rule_columns(r, cfg)]
    t = _read_scores(scored_path, filters, extra)
    reason, _ = first_failure(t, filters)
    passing = np.flatnonzero(reason == "")
    every = np.arange(len(t), dtype=np.int64)
    ctx = RuleContext(n_shards=0, work_dir=Path(work_dir))
    out = {}
    for (rule, cfg), d in zip(rules, keys_dirs, strict=True):
        rows = every if when(rule, cfg) == "before" else passing
        keys = rule.keys(t, shard, rows, cfg, ctx)
        write_parquet(keys, decision_path(d, shard))
        out[rule.NAME] = len(keys)
    return out


def decide_shard(scored_path: str, kept_path: str, rejected_path: str,
                 filters: Mapping[str, FilterConfig], corpus: Rules | None = None,
                 decision_dirs: Sequence[str] = (), shard: int = 0,
                 index_path: str | None = None) -> dict[str, Any]:
    """Apply the document rules' thresholds and the corpus rules' decisions (read from
    ``decision_dirs[i]/part-<shard>.parquet``, one dir per rule in ``corpus`` order) and
    write kept / rejected docs. Rules stated ``before`` the document rules name their drops
    first, the others after them, in recipe order. A rule's ``annotate`` adds columns to
    every document (MinHash: cluster id and size). ``index_path``: also write the kept docs'
    dedup keys there (a part of the persistent dedup index, tasks/dedup_index.py)."""
    t = pq.read_table(scored_path)
    rules = [(get_rule(n), c) for n, c in (corpus or {}).items()]
    index_cols = [c for r, _ in rules for c in getattr(r, "INDEX_COLUMNS", ())]
    keys = t.select([c for c in index_cols if c in t.column_names])
    # columns that served their purpose in the corpus step (MinHash signatures)
    transient = {c for r, _ in rules for c in getattr(r, "TRANSIENT_COLUMNS", ())}
    t = t.drop_columns([c for c in t.column_names if c in transient])
    doc_reason, counts = first_failure(t, filters)
    mods = [r for r, _ in rules]
    phases = [when(r, c) for r, c in rules]
    decisions = []
    for d in decision_dirs:
        p = decision_path(d, shard)
        decisions.append(pq.read_table(p) if p.is_file() else None)
    reason = np.full(len(t), "", dtype=object)
    for phase in ("before", "doc", "after"):
        if phase == "doc":
            has = doc_reason != ""
            reason[has & (reason == "")] = doc_reason[has & (reason == "")]
            continue
        for rule_when, dec in zip(phases, decisions, strict=True):
            if rule_when != phase or dec is None:
                continue
            rows = dec.column("row").to_numpy()
            names = np.asarray(dec.column("rule").to_pylist(), dtype=object)
            for name in sorted({n for n in names if n is not None}):
                mask = np.zeros(len(t), dtype=bool)
                mask[rows[names == name]] = True
                _mark(reason, counts, name, mask)
    if "before" in phases:  # document rules' "first" counts, again
        for rule_name in {r for r in doc_reason if r}:
            counts[rule_name]["first"] = int((reason == rule_name).sum())
    for rule, dec in zip(mods, decisions, strict=True):
        annotate = getattr(rule, "annotate", None)
        if annotate is not None:
            for col, arr in annotate(t, shard, dec, np.flatnonzero(doc_reason == "")).items():
                t = t.append_column(col, arr)
    keep = reason == ""
    write_parquet(t.filter(pa.array(keep)), Path(kept_path))
    if index_path is not None:
        write_parquet(keys.filter(pa.array(keep)), Path(index_path))
    rej = with_reject(t.filter(pa.array(~keep)), "filter",
                      pa.array(reason[~keep].tolist(), pa.string()))
    write_parquet(rej, Path(rejected_path))
    return {"docs_in": len(t), "docs_kept": int(keep.sum()),
            "docs_rejected": int((~keep).sum()), "rejections": counts}


def filter_local(scored: Sequence[str], out_dir: str, filters: Mapping[str, FilterConfig],
                 corpus: Rules | None = None, index_parts: list[dict[str, Any]] | None = None
                 ) -> list[dict[str, Any]]:
    """The whole decision (keys -> corpus rules -> per-shard decide) in this process, for a
    unit test or a notebook; the filter stage runs the same functions on Dask. Writes
    ``out_dir/{kept,rejected}/part-<shard>.parquet``; returns each shard's stats."""
    corpus = dict(corpus or {})
    base = Path(out_dir) / "corpus"
    names = list(corpus)
    keys_dirs = [str(base / f"{i}" / "keys") for i in range(len(names))]
    dec_dirs = [str(base / f"{i}" / "decisions") for i in range(len(names))]
    for i, p in enumerate(scored):
        corpus_keys(p, i, filters, corpus, keys_dirs, str(base / "work"))
    for i, name in enumerate(names):
        ctx = RuleContext(n_shards=len(scored), work_dir=base / f"{i}" / "work",
                          index_parts=list(index_parts or []))
        Path(dec_dirs[i]).mkdir(parents=True, exist_ok=True)
        get_rule(name).decide([str(decision_path(keys_dirs[i], s)) for s in range(len(scored))],
                              Path(dec_dirs[i]), corpus[name], ctx)
    return [decide_shard(p, str(Path(out_dir) / "kept" / f"part-{i:05d}.parquet"),
                         str(Path(out_dir) / "rejected" / f"part-{i:05d}.parquet"), filters,
                         corpus, dec_dirs, i) for i, p in enumerate(scored)]
