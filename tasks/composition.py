"""What a run's data is made of: documents, bytes and tokens per source and per language at
each stage that keeps documents (ingest, filter, ...) and at tokenize, and how many times
training saw each source (epochs). Computed from the stage outputs alone (no Prefect), for
``datamill show`` and the report.

Where each number comes from:

- docs and bytes (UTF-8 of ``text``): counted from the kept Parquet files, streamed by record
  batch (only ``source``, ``lang`` and ``text`` are read).
- tokens at tokenize, per source: measured — the tokenize manifest's ``tokens_by_source`` (the
  training documents' tokens, one EOS each; held-out documents are not tokenized).
- tokens anywhere else (earlier stages, and per language at tokenize): estimated — bytes times
  the source's tokens per byte measured at tokenize (its training documents' tokens over their
  bytes); a source tokenize never saw gets the ratio over all sources. Rows say which
  (``tokens_basis``). Without a tokenize stage, tokens are unknown (None).
- training: tokens available per source = its packed rows x seq_len (tokenize's meta.json
  index); tokens seen = the rows training drew x seq_len, from the epochs the trainer
  recorded in its summary, or, for a run that drew from one pool without recording them, its
  seeded order replayed (``tasks/train/data.py`` DataOrder); epochs = seen / available.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

MEASURED = "measured"
ESTIMATED = "estimated: bytes x the source's tokens per byte at tokenize"
UNKNOWN = "unknown: no tokenize stage"
BY = ("source", "lang")
# the filter's scoring step keeps every document it reads (with score columns): its row set
# would repeat the one before it, at the price of reading the corpus once more
NOT_SHOWN = {"score"}

Counts = dict[tuple[str, str], list[int]]  # (source, lang) -> [docs, bytes]
Ratio = tuple[dict[str, float], float]  # tokens per byte: by source, over all sources


def read_manifest(stage_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(stage_dir) / "manifest.json").read_text())


def data_root_of(stage_dir: str | Path) -> Path:
    """``<data_root>/stages/<stage>/<version>`` -> ``<data_root>``."""
    return Path(stage_dir).parents[2]


def doc_counts(paths: list[Path]) -> Counts:
    """Documents and UTF-8 bytes of ``text`` per (source, lang), streamed by record batch."""
    out: Counts = defaultdict(lambda: [0, 0])
    for path in paths:
        f = pq.ParquetFile(path)
        cols = [c for c in ("source", "lang", "text") if c in f.schema_arrow.names]
        for batch in f.iter_batches(columns=cols, batch_size=8192):
            n = batch.num_rows
            none = pa.nulls(n, pa.string())
            t = pa.table({
                "source": batch.column("source") if "source" in cols else none,
                "lang": batch.column("lang") if "lang" in cols else none,
                "bytes": pc.binary_length(batch.column("text")).cast(pa.int64()),
            })
            agg = t.group_by(["source", "lang"]).aggregate([("bytes", "sum"),
                                                            ("bytes", "count")])
            for src, lang, b, docs in zip(*(agg.column(c).to_pylist() for c in
                                            ("source", "lang", "bytes_sum", "bytes_count")),
                                          strict=True):
                acc = out[(src or "", lang or "")]
                acc[0] += int(docs)
                acc[1] += int(b or 0)
    return dict(out)


def _minus(a: Counts, b: Counts) -> Counts:
    keys = set(a) | set(b)
    return {k: [a.get(k, [0, 0])[i] - b.get(k, [0, 0])[i] for i in (0, 1)] for k in keys}


def _rows(stage: str, counts: Counts, ratio: Ratio | None,
          measured: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Rows per source and per language. ``ratio``: tokens per byte by source and overall
    (None: tokens unknown); ``measured``: exact tokens per source, used instead of the
    estimate."""
    rows = []
    for i, by in enumerate(BY):
        groups: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
        for (src, lang), (docs, nbytes) in counts.items():
            g = groups[(src, lang)[i]]
            g[0] += docs
            g[1] += nbytes
            if ratio is not None:
                g[2] += nbytes * ratio[0].get(src, ratio[1])
        for key, (docs, nbytes, est) in sorted(groups.items()):
            tokens: int | None = round(est) if ratio is not None else None
            basis = ESTIMATED if ratio is not None else UNKNOWN
            if by == "source" and measured is not None and key in measured:
                tokens, basis = int(measured[key]), MEASURED
            rows.append({"stage": stage, "by": by, "key": key, "docs": int(docs),
                         "bytes": int(nbytes), "tokens": tokens, "tokens_basis": basis})
    return rows


def stage_composition(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows {stage, by: source|lang, key, docs, bytes, tokens, tokens_basis} for each stage of
    the run (catalog ``stages`` rows: stage, output_path) that keeps documents, up to the one
    tokenize read, then tokenize's training documents. Stages whose output is gone are left
    out."""
    manifests = []
    for s in stages:
        try:
            manifests.append((s["stage"], read_manifest(s["output_path"]),
                              data_root_of(s["output_path"])))
        except (OSError, ValueError):
            continue
    tok = next(((m, root) for name, m, root in manifests if name == "tokenize"), None)
    tok_input = tok[0].get("inputs", [None])[0] if tok is not None else None
    counts: dict[str, Counts] = {}  # by stage version
    by_files: dict[tuple[str, ...], Counts] = {}
    shown: list[tuple[str, str]] = []
    for name, m, root in manifests:
        kept = (m.get("outputs") or {}).get("kept")
        if not isinstance(kept, list) or (name in NOT_SHOWN and m["version"] != tok_input):
            continue
        key = tuple(kept)
        if key not in by_files:  # a pass-through stage (rewrite: null) keeps the same files
            try:
                by_files[key] = doc_counts([root / p for p in kept])
            except OSError:
                continue
            shown.append((name, m["version"]))
        counts[m["version"]] = by_files[key]
        if m["version"] == tok_input:
            break  # what tokenize read: later document stages fed no training
    ratio: Ratio | None = None
    tok_rows: list[dict[str, Any]] = []
    if tok is not None and tok_input in counts:
        m, root = tok
        held = doc_counts(sorted((root / m["outputs"]["data_dir"] / "heldout")
                                 .glob("part-*.parquet")))
        train = {k: v for k, v in _minus(counts[tok_input], held).items() if v[0] > 0}
        measured = {k: int(v) for k, v in m.get("tokens_by_source", {}).items()}
        by_src: dict[str, int] = defaultdict(int)
        for (src, _lang), (_docs, nbytes) in train.items():
            by_src[src] += nbytes
        total = sum(by_src.values())
        ratio = ({s: measured[s] / b for s, b in by_src.items() if b > 0 and s in measured},
                 sum(measured.values()) / total if total else 0.0)
        tok_rows = _rows("tokenize", train, ratio, measured)
    out = []
    for name, version in shown:
        out += _rows(name, counts[version], ratio)
    return out + tok_rows


RECORDED = "recorded by the trainer"
REPLAYED = "replayed: the trainer's seeded order, one pool"
NOT_RECORDED = "not recorded (a mixture trained before epochs were recorded)"


def _rows_by_source(meta: dict[str, Any], prefix: str = "") -> dict[str, int]:
    """Packed training rows per source, from tokenize's meta.json index."""
    out: dict[str, int] = defaultdict(int)
    for shard in meta["train_shards"]:
        for src, (lo, hi) in shard.get("sources", {"": [0, shard["n_seq"]]}).items():
            out[prefix + src] += hi - lo
    return dict(out)


def _replay_uniform(meta: dict[str, Any], seed: int, draws: int) -> dict[str, int]:
    """Rows drawn per source by the one-pool order (tasks/train/data.py DataOrder: a seeded
    permutation of all rows per epoch, rows numbered shard by shard as meta.json lists them):
    whole epochs, then the next permutation's first rows."""
    from tasks.train.data import DataOrder

    names: list[str] = []
    parts = []
    for shard in meta["train_shards"]:
        owner = np.full(shard["n_seq"], -1, dtype=np.int64)
        for src, (lo, hi) in shard.get("sources", {"": [0, shard["n_seq"]]}).items():
            if src not in names:
                names.append(src)
            owner[lo:hi] = names.index(src)
        parts.append(owner)
    owner = np.concatenate(parts)
    epochs, rest = divmod(draws, len(owner))
    count = epochs * np.bincount(owner, minlength=len(names))
    count += np.bincount(owner[DataOrder(len(owner), seed, epoch=epochs).perm[:rest]],
                         minlength=len(names))
    return {src: int(c) for src, c in zip(names, count, strict=True)}


def training_exposure(train_stage: str | Path, data_dir: str | Path) -> list[dict[str, Any]]:
    """Rows {seed, source, rows, tokens_available, tokens_seen, epochs, basis} for one train
    stage folder and the tokenize data dir it trained on: the epochs the trainer recorded
    (``summary.epochs``), else, for a run that drew from one pool, its order replayed."""
    m = read_manifest(train_stage)
    cfg, summary = m.get("config") or {}, m.get("summary") or {}
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    seq_len = int(meta["seq_len"])
    rows = _rows_by_source(meta)
    plan = (summary.get("data_plan") or {}).get("sources") or {}
    rows.update({s: int(v["rows"]) for s, v in plan.items() if "rows" in v})
    drawn: dict[str, int] | None = None
    basis = NOT_RECORDED
    if isinstance(summary.get("epochs"), dict):
        drawn = {s: round(e * rows.get(s, 0)) for s, e in summary["epochs"].items()}
        basis = RECORDED
    elif not (cfg.get("source_weights") or cfg.get("anneal_source_weights")
              or summary.get("replay_data")) and summary.get("steps"):
        per_step = int(cfg.get("batch_size", 0)) * int(cfg.get("grad_accum", 1))
        drawn = _replay_uniform(meta, int(cfg.get("seed", 0)), int(summary["steps"]) * per_step)
        basis = REPLAYED
    out = []
    for src, n in sorted(rows.items()):
        seen = drawn.get(src, 0) * seq_len if drawn is not None else None
        out.append({"seed": cfg.get("seed", 0), "source": src, "rows": n,
                    "tokens_available": n * seq_len, "tokens_seen": seen,
                    "epochs": seen / (n * seq_len) if seen is not None and n else None,
                    "basis": basis})
    return out


def composition(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's composition from its catalog ``stages`` rows: ``stages`` (stage_composition's
    rows) and ``training`` (training_exposure's rows, one set per seed)."""
    training: list[dict[str, Any]] = []
    tok = next((s for s in stages if s["stage"] == "tokenize"), None)
    if tok is not None:
        try:
            data_dir = data_root_of(tok["output_path"]) / \
                read_manifest(tok["output_path"])["outputs"]["data_dir"]
            for s in stages:
                if s["stage"] == "train":
                    training += training_exposure(s["output_path"], data_dir)
        except (OSError, ValueError, KeyError):
            training = []  # outputs gone: the document rows still say what was kept
    return {"stages": stage_composition(stages), "training": training}
