"""What the filter stage dropped and kept, rule by rule: a handful of each rule's dropped
documents (excerpt, score, threshold, source, lang), the kept documents nearest its threshold
(rules with a scalar score and threshold) or, for dedup rules, each duplicate's kept twin, and
a seeded random sample of the kept output.

Bounded memory: the filter's kept/ and rejected/ Parquet files are streamed in record
batches of small columns (id, source, lang, reason, the scores); per rule only the best ``n``
candidates are held (a heap); texts are read afterwards, one row group at a time, for the
chosen rows only. The output is plain JSON data (no NaN: a missing value is None).
"""

from __future__ import annotations

import heapq
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BATCH_ROWS = 8_192
EXCERPT_CHARS = 300
_BUILTIN_CORPUS = ("exact_dedup", "url_dedup", "minhash_dedup")
# control characters and bidi overrides: a document must not drive the reader's terminal
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass
class RuleInfo:
    """One rule of the filter stage: which score column and thresholds it decides on (a
    document rule with one min_/max_ threshold parameter per score, or a corpus rule with a
    ``column`` and a ``cut``), or the column that names a duplicate's kept twin."""

    rule: str
    kind: str  # "document" | "corpus" | "other"
    column: str | None = None
    thresholds: list[float] = field(default_factory=list)
    twin_column: str | None = None
    dropped_first: int = 0
    dropped_alone: int | None = None
    note: str | None = None

    @property
    def scalar(self) -> bool:
        return self.column is not None and bool(self.thresholds)


def excerpt(text: str | None, chars: int = EXCERPT_CHARS) -> str:
    """The start of a text on one line: whitespace runs collapsed, control characters shown
    as U+FFFD, cut at ``chars`` with an ellipsis."""
    flat = _CONTROL.sub("\ufffd", " ".join((text or "").split()))
    return flat if len(flat) <= chars else flat[:chars].rstrip() + "…"


def clean(value: Any, chars: int = 200) -> str:
    """A data value (id, source, lang) as one line of inert text, like ``excerpt``."""
    return excerpt("" if value is None else str(value), chars)


def finite(v: Any) -> Any:
    """A JSON-safe scalar: NaN/inf -> None, numpy -> Python, floats rounded to 6 digits."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or v is None or isinstance(v, int | str):
        return v
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return str(v)


# ------------------------------------------------------------------------ the filter stage
def stage_dir(run: dict[str, Any], name: str, data_root: Path | None = None) -> Path | None:
    """The folder of the run's (last) execution of stage ``name``: under ``data_root`` if
    given (the catalog's paths are the writer's), else the catalog's output_path."""
    rows = [s for s in run.get("stages", []) if s.get("stage") == name]
    if not rows:
        return None
    s = rows[-1]
    if data_root is not None:
        p = Path(data_root) / "stages" / name / str(s["version"])
        if p.is_dir():
            return p
    return Path(s["output_path"]) if s.get("output_path") else None


def load_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())  # type: ignore[no-any-return]


def outputs(folder: Path, manifest: dict[str, Any], key: str) -> list[Path]:
    """A manifest's output files (paths relative to the data root, stages/<name>/<version>)."""
    root = folder.parents[2]
    rel = manifest.get("outputs", {}).get(key, [])
    return [root / r for r in ([rel] if isinstance(rel, str) else rel) if (root / r).is_file()]


def _module_name(key: str, corpus: bool) -> tuple[str, Any]:
    try:
        if corpus:
            from tasks.corpus import get_rule
            mod = get_rule(key)
        else:
            from tasks.filters.base import get_filter
            mod = get_filter(key)
        return str(getattr(mod, "NAME", key)), mod
    except Exception:  # a plugin that no longer imports: its rules are listed without scores
        return key, None


def _threshold_fields(cfg: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in cfg.items() if (k.startswith(("min_", "max_"))
            and isinstance(v, int | float) and not isinstance(v, bool))}


def scalar_of(name: str, rule: str, cfg: dict[str, Any], columns: set[str]
              ) -> tuple[str, list[float]] | None:
    """The score column and thresholds of document rule ``<name>.<rule>``: the config's
    ``min_<stat>`` / ``max_<stat>`` fields whose stat is the rule's name (or the rule's
    name plus a suffix, ``bullet_lines`` -> ``bullet_lines_frac``; or the field is the rule,
    ``min_words``), scored in column ``<name>_<stat>`` or ``<name>_n_<stat>``."""
    found: dict[str, list[float]] = {}
    for f, value in _threshold_fields(cfg).items():
        stat = f[4:]
        if not (f == rule or stat == rule or stat.startswith(rule + "_")):
            continue
        col = next((c for c in (f"{name}_{stat}", f"{name}_n_{stat}") if c in columns), None)
        if col is not None:
            found.setdefault(col, []).append(value)
    if len(found) != 1:
        return None
    col, values = next(iter(found.items()))
    return col, sorted(values)


def _twin_column(mod: Any, columns: set[str]) -> str | None:
    """The column a dedup rule's duplicates share with their kept twin: a cluster annotation
    (MinHash), else the rule's one hash column."""
    if mod is None:
        return None
    cands = [c for c in getattr(mod, "ANNOTATIONS", {}) if "cluster" in c and "size" not in c]
    cols = tuple(getattr(mod, "COLUMNS", ()))
    if len(cols) == 1 and cols[0] not in getattr(mod, "TRANSIENT_COLUMNS", ()):
        cands.append(cols[0])
    return next((c for c in cands if c in columns), None)


def rule_infos(manifest: dict[str, Any], columns: set[str]) -> list[RuleInfo]:
    """Every rule of the filter stage's manifest, document rules first (recipe order), then
    corpus rules, each with what it decides on."""
    filt = manifest.get("config", {}).get("filter", {}) or {}
    counts = manifest.get("rejections", {})
    corpus_stats = manifest.get("corpus", {})
    corpus = {k: filt[k] for k in _BUILTIN_CORPUS if filt.get(k) is not None}
    corpus.update(filt.get("corpus") or {})
    owners: list[tuple[str, str, Any, dict[str, Any]]] = []  # (prefix, key, module, cfg)
    for key, cfg in (filt.get("filters") or {}).items():
        name, mod = _module_name(key, corpus=False)
        owners.append((name, key, mod, cfg or {}))
    n_doc = len(owners)
    for key, cfg in corpus.items():
        name, mod = _module_name(key, corpus=True)
        owners.append((name, key, mod, cfg or {}))
    out: list[RuleInfo] = []
    seen: set[str] = set()
    for i, (name, key, mod, cfg) in enumerate(owners):
        for rule in sorted(r for r in counts if r.startswith(name + ".")):
            seen.add(rule)
            c = counts[rule]
            info = RuleInfo(rule, "document" if i < n_doc else "corpus",
                            dropped_first=int(c.get("first", 0)), dropped_alone=c.get("alone"))
            if i < n_doc:
                sc = scalar_of(name, rule[len(name) + 1:], cfg, columns)
                if sc is not None:
                    info.column, info.thresholds = sc
            elif rule.endswith(".seen_before"):
                info.note = "kept by an earlier run (the dedup index): no twin in this run"
            elif isinstance(cfg.get("column"), str) and cfg["column"] in columns:
                cut = corpus_stats.get(key, {}).get("cut")
                info.column = cfg["column"]
                info.thresholds = [float(cut)] if isinstance(cut, int | float) else []
            else:
                info.twin_column = _twin_column(mod, columns)
            out.append(info)
    for rule in sorted(set(counts) - seen):
        c = counts[rule]
        out.append(RuleInfo(rule, "other", dropped_first=int(c.get("first", 0)),
                            dropped_alone=c.get("alone")))
    return out


def select_rules(infos: list[RuleInfo], wanted: list[str] | None) -> list[RuleInfo]:
    """Rules named exactly or by their filter's prefix (``gopher_quality``); an unknown name
    is a ValueError listing the rules there are."""
    if not wanted:
        return infos
    out = [r for r in infos if any(r.rule == w or r.rule.startswith(w + ".") for w in wanted)]
    missing = [w for w in wanted if not any(r.rule == w or r.rule.startswith(w + ".")
                                            for r in infos)]
    if missing:
        raise ValueError(f"no rule {', '.join(missing)} in this run; there are: "
                         + ", ".join(r.rule for r in infos))
    return out


# ------------------------------------------------------------------------ streaming picks
class TopN:
    """The ``n`` offers with the smallest key (ties: file, then row), in a bounded heap."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._heap: list[tuple[float, int, int, dict[str, Any]]] = []

    def offer(self, key: float, fi: int, row: int, payload: dict[str, Any]) -> None:
        item = (-key, -fi, -row, payload)  # (fi, row) is unique: payloads are never compared
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)
        elif self.n and item[:3] > self._heap[0][:3]:
            heapq.heapreplace(self._heap, item)

    def items(self) -> list[tuple[int, int, dict[str, Any]]]:
        """(file, row, payload), smallest key first."""
        return [(-f, -r, p) for _, f, r, p in sorted(self._heap, reverse=True)]


def batches(files: list[Path], columns: list[str]) -> Any:
    """(file index, first row, record batch) over ``files``, reading only ``columns``."""
    for fi, f in enumerate(files):
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        start = 0
        for rb in pf.iter_batches(batch_size=BATCH_ROWS,
                                  columns=[c for c in dict.fromkeys(columns) if c in names]):
            yield fi, start, rb
            start += rb.num_rows


def column(rb: pa.RecordBatch, name: str) -> pa.Array | None:
    i = rb.schema.get_field_index(name)
    return rb.column(i) if i >= 0 else None


def _mask(rb: pa.RecordBatch, source: str | None, lang: str | None) -> np.ndarray:
    """Rows of the batch with this source and language (``en`` also matches ``en-US``)."""
    m = np.ones(rb.num_rows, dtype=bool)
    for name, value in (("source", source), ("lang", lang)):
        if value is None:
            continue
        col = column(rb, name)
        if col is None:
            return np.zeros(rb.num_rows, dtype=bool)
        hit = pc.equal(col, value)
        if name == "lang":
            hit = pc.or_(hit, pc.starts_with(col, value + "-"))
        m &= pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
    return m


def floats(rb: pa.RecordBatch, name: str | None) -> np.ndarray | None:
    col = column(rb, name) if name else None
    if col is None or not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return None
    return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)  # null -> NaN


def _nearest(scores: np.ndarray, thresholds: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the distance to the nearest threshold and that threshold."""
    t = np.asarray(thresholds, dtype=np.float64)
    d = np.abs(scores[:, None] - t[None, :])
    k = np.argmin(np.where(np.isnan(d), np.inf, d), axis=1)
    return d[np.arange(len(scores)), k], t[k]


def _smallest(keys: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    return idx[np.argsort(keys[idx], kind="stable")[:n]] if n else idx[:0]


def _doc(rb: pa.RecordBatch, i: int) -> dict[str, Any]:
    return {k: (c[i].as_py() if (c := column(rb, k)) is not None else None)
            for k in ("id", "source", "lang")}


def _texts(files: list[Path], rows: set[tuple[int, int]], chars: int
           ) -> dict[tuple[int, int], str]:
    """Excerpts of the given (file, row) documents, reading one row group's texts at a time."""
    out: dict[tuple[int, int], str] = {}
    for fi in sorted({f for f, _ in rows}):
        pf = pq.ParquetFile(files[fi])
        want = sorted(r for f, r in rows if f == fi)
        start = 0
        for g in range(pf.metadata.num_row_groups):
            size = pf.metadata.row_group(g).num_rows
            here = [r for r in want if start <= r < start + size]
            if here:
                text = pf.read_row_group(g, columns=["text"]).column(0)
                for r in here:
                    out[(fi, r)] = excerpt(text[r - start].as_py(), chars)
            start += size
    return out


def _twins(files: list[Path], name: str, values: list[Any]) -> dict[Any, str]:
    """For each value of column ``name``, the id of a kept document that has it."""
    found: dict[Any, str] = {}
    if not values:
        return found
    for _, _, rb in batches(files, ["id", name]):
        col = column(rb, name)
        if col is None:
            continue
        hit = pc.fill_null(pc.is_in(col, value_set=pa.array(values, col.type)), False)
        for i in np.flatnonzero(hit.to_numpy(zero_copy_only=False)):
            found.setdefault(col[i].as_py(), column(rb, "id")[i].as_py())
    return found


def _finish(picks: list[tuple[int, int, dict[str, Any]]], texts: dict[tuple[int, int], str]
            ) -> list[dict[str, Any]]:
    return [{**{k: finite(v) for k, v in p.items() if k != "twin"},
             "excerpt": texts.get((fi, row), "")} for fi, row, p in picks]


def inspect_run(run: dict[str, Any], data_root: Path | None = None,
                rules: list[str] | None = None, source: str | None = None,
                lang: str | None = None, n: int = 5, random_kept: int = 0, seed: int = 0,
                chars: int = EXCERPT_CHARS) -> dict[str, Any]:
    """Per rule of the run's filter stage: up to ``n`` dropped documents (a seeded random
    sample of those it dropped first) and the ``n`` kept documents nearest its threshold (or
    None: no scalar score); plus ``random_kept`` kept documents drawn with ``seed``. Only
    documents of ``source`` / ``lang`` when given. Raises LookupError without a filter
    stage, ValueError for an unknown rule."""
    folder = stage_dir(run, "filter", data_root)
    if folder is None or not (folder / "manifest.json").is_file():
        raise LookupError(f"run {run.get('run_id')} has no filter stage output to inspect")
    m = load_manifest(folder)
    kept, rejected = outputs(folder, m, "kept"), outputs(folder, m, "rejected")
    columns = {c for f in kept + rejected for c in pq.read_schema(f).names}
    infos = select_rules(rule_infos(m, columns), rules)
    by_rule = {r.rule: r for r in infos}
    dropped = {r.rule: TopN(n) for r in infos}
    matching = dict.fromkeys(by_rule, 0)
    extra = [c for r in infos for c in (r.column, r.twin_column) if c]
    for fi, start, rb in batches(rejected, ["id", "source", "lang", "reject_reason", *extra]):
        mask = _mask(rb, source, lang)
        reasons = column(rb, "reject_reason").to_numpy(zero_copy_only=False)
        keys = np.random.default_rng([seed, 0, fi, start]).random(rb.num_rows)
        for name in set(reasons[mask].tolist()) & by_rule.keys():
            info = by_rule[name]
            idx = np.flatnonzero(mask & (reasons == name))
            matching[name] += len(idx)
            scores = floats(rb, info.column) if info.scalar else None
            twin = column(rb, info.twin_column) if info.twin_column else None
            for i in _smallest(keys, idx, n):
                doc: dict[str, Any] = {**_doc(rb, i), "score": None, "threshold": None}
                if scores is not None:
                    _, t = _nearest(scores[i:i + 1], info.thresholds)
                    doc.update(score=scores[i], threshold=t[0])
                if info.twin_column:
                    doc["twin"] = twin[i].as_py() if twin is not None else None
                    doc["twin_id"] = None
                dropped[name].offer(float(keys[i]), fi, start + int(i), doc)
    scalar = [r for r in infos if r.scalar]
    nearest = {r.rule: TopN(n) for r in scalar}
    sample = TopN(random_kept)
    if scalar or random_kept:
        for fi, start, rb in batches(kept, ["id", "source", "lang",
                                             *[r.column or "" for r in scalar]]):
            mask = _mask(rb, source, lang)
            for info in scalar:
                scores = floats(rb, info.column)
                if scores is None:
                    continue
                dist, thr = _nearest(scores, info.thresholds)
                for i in _smallest(dist, np.flatnonzero(mask & ~np.isnan(dist)), n):
                    nearest[info.rule].offer(float(dist[i]), fi, start + int(i), {
                        **_doc(rb, i), "score": scores[i], "threshold": thr[i],
                        "distance": dist[i]})
            if random_kept:
                keys = np.random.default_rng([seed, 1, fi, start]).random(rb.num_rows)
                for i in _smallest(keys, np.flatnonzero(mask), random_kept):
                    sample.offer(float(keys[i]), fi, start + int(i), _doc(rb, i))
    # each shown duplicate's kept twin: the kept document sharing its hash / cluster
    for info in infos:
        if info.twin_column:
            picks = dropped[info.rule].items()
            values = [p["twin"] for _, _, p in picks if p.get("twin") is not None]
            ids = _twins(kept, info.twin_column, values)
            for _, _, p in picks:
                p["twin_id"] = ids.get(p.get("twin"))
    rej_rows = {(fi, r) for t in dropped.values() for fi, r, _ in t.items()}
    kept_rows = {(fi, r) for t in [*nearest.values(), sample] for fi, r, _ in t.items()}
    rej_text, kept_text = _texts(rejected, rej_rows, chars), _texts(kept, kept_rows, chars)
    out_rules = []
    for info in infos:
        note = info.note
        if not info.scalar and note is None:
            note = ("dedup: no score or threshold; each duplicate's kept twin is shown"
                    if info.twin_column else "no scalar score and threshold")
        out_rules.append({
            "rule": info.rule, "kind": info.kind, "score_column": info.column,
            "thresholds": [finite(t) for t in info.thresholds],
            "dropped_first": info.dropped_first, "dropped_alone": info.dropped_alone,
            "matching": matching[info.rule], "note": note,
            "dropped": _finish(dropped[info.rule].items(), rej_text),
            "nearest_kept": (_finish(nearest[info.rule].items(), kept_text)
                             if info.scalar else None)})
    return {"run_id": run.get("run_id"), "stage": "filter", "version": m.get("version"),
            "docs_in": m.get("docs_in"), "docs_kept": m.get("docs_kept"),
            "docs_rejected": m.get("docs_rejected"),
            "options": {"rules": rules, "source": source, "lang": lang, "n": n,
                        "random_kept": random_kept, "seed": seed},
            "rules": out_rules, "random_kept": _finish(sample.items(), kept_text)}
