"""Per-document bits per byte under one or more trained models: the scoring behind the
``loss_score``, ``miniplm`` and ``preselect`` stages.

A model is named by a run id (that run's trained proxy, found through the catalog) or by a
``save_pretrained`` folder (``ModelRef``). Its column is ``loss_<label>``: the label sanitised
to letters, digits and ``_``. Scores come from ``tasks.evaluate.bits_per_byte`` — the same
model loading, windows and sums as the held-out evaluation — so a document's value here is
the value the evaluation would give that text.

Each document is cut to a prefix before scoring: the text up to the end of its
``max_tokens``-th token under the *first* model's tokenizer. Every model then scores the same
prefix (models with other tokenizers see about that many tokens), so differences between
columns compare like with like. ``loss_bytes`` is the UTF-8 length of that prefix.
A null or empty text has no bytes: its scores are null (counted as ``unscored``).

Memory: one record batch (``batch_docs`` documents) at a time; ``bits_per_byte`` loads the
model once per call, so once per batch and model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.identity import OPERATIONAL, file_digest

BYTES = "loss_bytes"
CKPT_FILES = ("model.safetensors", "config.json", "tokenizer.json")
_digests: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def sanitise(label: str) -> str:
    """A column-safe label: characters other than letters, digits and ``_`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", label)


def column_of(label: str) -> str:
    return f"loss_{sanitise(label)}"


class ModelRef(BaseModel):
    """A model to score with: ``run`` (a run id: its trained proxy) or ``path`` (a folder)."""

    model_config = ConfigDict(extra="forbid")

    run: str | None = Field(None, description="a run id: the proxy that run trained")
    path: str | None = Field(None, description="or: a save_pretrained folder (model.safetensors"
                             ", config.json, tokenizer.json)")
    seed: int | None = Field(None, description="with run: the proxy of this seed (default: the "
                             "first one the run trained)")
    data_root: Annotated[str | None, OPERATIONAL] = Field(
        None, description="with run: the data root whose catalog knows it (default: this run's)")
    label: str | None = Field(None, description="the column suffix (default: the run id, plus "
                              "_seed<N> with seed; or the folder's name)")
    score: float | None = Field(None, description="preselect: its downstream score (default: "
                                "from the catalog's evaluate results)")

    @model_validator(mode="after")
    def _one(self) -> ModelRef:
        if (self.run is None) == (self.path is None):
            raise ValueError("a model needs exactly one of run and path")
        if self.path is not None and not (Path(self.path) / "config.json").is_file():
            raise ValueError(f"model path {self.path!r} is not a save_pretrained folder "
                             "(no config.json)")
        return self

    def name(self) -> str:
        if self.label is not None:
            return sanitise(self.label)
        if self.run is not None:
            return sanitise(self.run + (f"_seed{self.seed}" if self.seed is not None else ""))
        p = Path(self.path).resolve()  # type: ignore[arg-type]
        return sanitise(p.parent.name if p.name == "checkpoint" else p.name)


def unique_names(models: list[ModelRef]) -> list[ModelRef]:
    names = [m.name() for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model labels must differ once sanitised: {names}")
    return models


def checkpoint_digest(folder: str | Path) -> str:
    """One content hash of a checkpoint (weights, config, tokenizer), cached per file state."""
    folder = Path(folder)
    parts = []
    for name in CKPT_FILES:
        f = folder / name
        if not f.is_file():
            raise ValueError(f"checkpoint {folder} has no {name}")
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        with _lock:
            if key not in _digests:
                _digests[key] = file_digest(f)
            parts.append(f"{name}:{_digests[key]}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _catalog_run(ref: ModelRef, data_root: Path) -> tuple[Path, dict[str, Any], list[dict]]:
    """(train stage folder, its manifest, the run's evals) of ``ref.run``, read from the
    catalog's snapshot (never a write, never a lock on another data root)."""
    from tasks.catalog import Catalog

    root = Path(ref.data_root).expanduser() if ref.data_root else Path(data_root)
    path = root / "catalog.duckdb"
    if not path.is_file():
        raise ValueError(f"model run {ref.run!r}: no catalog at {path}")
    try:
        shown = Catalog(path, snapshot=True).show(ref.run)  # type: ignore[arg-type]
    except LookupError:
        raise ValueError(f"model run {ref.run!r}: no such run in {path}") from None
    versions = list(dict.fromkeys(s["version"] for s in shown["stages"] if s["stage"] == "train"))
    if not versions:
        raise ValueError(f"model run {ref.run!r} trained no model")
    for v in versions:
        folder = root / "stages" / "train" / v
        manifest = json.loads((folder / "manifest.json").read_text())
        if ref.seed is None or manifest.get("config", {}).get("seed") == ref.seed:
            return folder, manifest, shown["evals"]
    raise ValueError(f"model run {ref.run!r} trained no model with seed {ref.seed}")


def resolve(ref: ModelRef, data_root: Path) -> dict[str, Any]:
    """{label, column, checkpoint (absolute), sha256, evals (the final checkpoint's rows)}."""
    if ref.path is not None:
        ckpt, evals = Path(ref.path).expanduser().resolve(), []
    else:
        folder, _, rows = _catalog_run(ref, data_root)
        ckpt = folder / "checkpoint"
        tail = f"/train/{folder.name}/checkpoint"  # the final checkpoint's rows, not noise's
        evals = [r for r in rows if str(r["checkpoint"]).endswith(tail)]
    return {"label": ref.name(), "column": column_of(ref.name()), "checkpoint": str(ckpt),
            "sha256": checkpoint_digest(ckpt), "evals": evals}


def seq_len_of(checkpoint: str | Path) -> int:
    """The context the proxy was trained with (tasks.train sets max_position_embeddings)."""
    cfg = json.loads((Path(checkpoint) / "config.json").read_text())
    return int(cfg["max_position_embeddings"])


def truncate(texts: list[str], tokenizer: Any, max_tokens: int) -> tuple[list[str], int]:
    """Each text cut after the character that ends its ``max_tokens``-th token; how many were
    cut. Offsets are the tokenizer's character offsets into the original text."""
    out, cut = [], 0
    for text, enc in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False),
                          strict=True):
        if len(enc.ids) > max_tokens:
            text = text[:enc.offsets[max_tokens - 1][1]]
            cut += 1
        out.append(text)
    return out, cut


def score_batch(batch: pa.Table, models: list[dict[str, Any]], max_tokens: int,
                batch_size: int, tokenizer: Any) -> tuple[dict[str, pa.Array], dict[str, int]]:
    """The loss columns (and ``loss_bytes``) for one batch of documents."""
    from tasks.evaluate import bits_per_byte

    raw = batch.column("text").to_pylist()
    texts, cut = truncate([t or "" for t in raw], tokenizer, max_tokens)
    n_bytes = [len(t.encode("utf-8")) for t in texts]
    n = len(texts)
    source = batch.column("source") if "source" in batch.column_names else pa.nulls(n)
    docs = pa.table({"id": pa.array([str(i) for i in range(n)]),
                     "text": pa.array(texts, pa.large_string()),
                     "source": pc.fill_null(pc.cast(source, pa.string()), "")})
    cols: dict[str, pa.Array] = {}
    for m in models:
        per = bits_per_byte(Path(m["checkpoint"]), docs, seq_len_of(m["checkpoint"]),
                            batch_size, per_doc=True)["per_doc"]
        cols[m["column"]] = pa.array(
            [nll / math.log(2) / b if b else None for nll, b in
             zip(per["nll_nats"], per["bytes"], strict=True)], pa.float64())
    cols[BYTES] = pa.array(n_bytes, pa.int64())
    return cols, {"truncated": cut, "unscored": sum(1 for b in n_bytes if b == 0)}


def score_file(src: str, dst: str, models: list[dict[str, Any]], max_tokens: int,
               batch_docs: int, batch_size: int,
               difference: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """``src`` with the loss columns added (an existing column of the same name is
    replaced), written atomically to ``dst``; every document kept. ``difference`` = (a, b,
    out) adds ``out`` = a − b (null where either is)."""
    from tokenizers import Tokenizer

    from tasks.store import replace_durably

    tokenizer = Tokenizer.from_file(str(Path(models[0]["checkpoint"]) / "tokenizer.json"))
    pf = pq.ParquetFile(src)
    tmp = Path(dst).with_name(f".{Path(dst).name}.tmp-{os.getpid()}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    stats = {"docs_in": 0, "docs_kept": 0, "docs_rejected": 0, "truncated": 0, "unscored": 0}
    writer: pq.ParquetWriter | None = None
    try:
        for rb in pf.iter_batches(batch_size=batch_docs):
            t = pa.Table.from_batches([rb])
            cols, s = score_batch(t, models, max_tokens, batch_size, tokenizer)
            if difference is not None:
                a, b, name = difference
                cols[name] = pc.subtract(cols[a], cols[b])
            for name, arr in cols.items():
                if name in t.column_names:
                    t = t.drop_columns([name])
                t = t.append_column(name, arr)
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema, compression="zstd")
            writer.write_table(t)
            stats["docs_in"] += len(t)
            stats["truncated"] += s["truncated"]
            stats["unscored"] += s["unscored"]
        if writer is None:  # an empty shard: its schema, with the new columns
            pq.write_table(_with_empty_columns(pf.schema_arrow.empty_table(), models,
                                               difference), tmp, compression="zstd")
    finally:
        if writer is not None:
            writer.close()
    replace_durably(tmp, Path(dst))
    stats["docs_kept"] = stats["docs_in"]
    return stats


def _with_empty_columns(t: pa.Table, models: list[dict[str, Any]],
                        difference: tuple[str, str, str] | None) -> pa.Table:
    names = [m["column"] for m in models] + [BYTES] + ([difference[2]] if difference else [])
    for name in names:
        if name in t.column_names:
            t = t.drop_columns([name])
        t = t.append_column(name, pa.array([], pa.int64() if name == BYTES else pa.float64()))
    return t


def score_shards(jobs: list[tuple[str, str, str]], models: list[dict[str, Any]],
                 max_tokens: int, batch_docs: int, batch_size: int,
                 difference: tuple[str, str, str] | None = None) -> list[dict[str, Any]]:
    """The stages' work inside one Ray actor: each (src, dst, marker) job in turn; a job
    whose marker exists (finished before a crash) is skipped and its stats returned."""
    import torch

    from tasks.store import run_marked

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = []
    for src, dst, marker in jobs:
        if Path(marker).is_file() and Path(dst).is_file():
            out.append(json.loads(Path(marker).read_text()))
            continue
        s = run_marked(marker, score_file, src, dst, models, max_tokens, batch_docs,
                       batch_size, difference)
        out.append({**s, "device": device})
    return out
