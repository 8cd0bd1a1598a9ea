"""FineWeb-Edu's annotate -> embed -> regress (Penedo et al. 2024, "The FineWeb Datasets").

1. ``annotate_sample``: an LLM scores a seeded sample of the pool with the published additive
   0-5 educational-value prompt (``tasks/prompts/ratings.py``); answers go through the
   generation cache (resumable, see ``tasks/select/annotate.py``). The sample is bottom-k by
   ``xxh3(seed, id)``, so it does not depend on how the pool is sharded.
2. ``fit_head``: a ridge regression (a linear head, closed form) from the documents' sentence
   embeddings to the LLM's score. FineWeb-Edu's classifier is a linear regression head on an
   embedding model; here the embedding is frozen and the head is fit exactly. Ridge rather
   than least squares because the sample (hundreds to thousands) is small against the
   dimension (384): the L2 penalty keeps the weights stable; it is deterministic and needs
   no optimiser; the penalty is chosen by 5-fold cross-validation unless the recipe sets it.
   The held-out part of the sample (``heldout_fraction``, by id hash) is never
   fit; its RMSE, MAE and F1 of "score >= 3" are the head's reported fit.
3. ``apply_shard``: the head on every document's embedding, clipped to [0, 5], as a column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.select import embed as emb
from tasks.select.annotate import Annotator, LLMConfig
from tasks.store import atomic_write_json, write_parquet

PROMPT = "fineweb_edu"
THRESHOLD = 3  # FineWeb-Edu keeps int_score >= 3; the held-out F1 is of that decision


def sample_rows(shards: list[str], n: int, seed: int) -> list[np.ndarray]:
    """Per shard, the rows (sorted) of a seeded uniform sample of ``n`` documents."""
    from tasks.select.fasttext_model import sample_pool

    return sample_pool(shards, n, seed, PROMPT, None, False)


def annotate_sample(shards: list[str], rows: list[np.ndarray], cfg_json: dict[str, Any],
                    out_path: str, cache_dir: str, api_key: str | None = None
                    ) -> dict[str, Any]:
    """Ask the LLM to score the sampled documents; write ``out_path`` (shard, row, id,
    ``llm_score``: null when the reply had no score or the request failed) and return the
    annotation's stats (requests, cache hits, tokens, cost, failures)."""
    from tasks.prompts.ratings import FINEWEB_EDU, parse_edu

    cfg = LLMConfig(**cfg_json)
    parts = []
    unparsed = 0
    with Annotator(cfg, FINEWEB_EDU, PROMPT, cache_dir, api_key) as ann:
        for i, (path, r) in enumerate(zip(shards, rows, strict=True)):
            if not len(r):
                continue
            t = pq.read_table(path, columns=["id", "text"]).take(pa.array(r, pa.int64()))
            replies = ann.ask(t.column("text").to_pylist())
            scores = [parse_edu(x) for x in replies]
            unparsed += sum(1 for x, s in zip(replies, scores, strict=True)
                            if x is not None and s is None)
            parts.append(pa.table({"shard": pa.array(np.full(len(r), i, np.int32)),
                                   "row": pa.array(r, pa.int64()),
                                   "id": pc.cast(t.column("id"), pa.string()),
                                   "llm_score": pa.array(scores, pa.int8())}))
        stats = ann.stats()
        stats["transient_failures"] = len(ann.transient)
        stats["failed_requests"] = len(ann.failed)
    schema = pa.schema([("shard", pa.int32()), ("row", pa.int64()), ("id", pa.string()),
                        ("llm_score", pa.int8())])
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    write_parquet(table, Path(out_path))
    stats.update({"sampled": len(table), "unparsed": unparsed,
                  "annotated": int(pc.count(table.column("llm_score")).as_py())})
    return stats


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and intercept minimising ||x w + b - y||^2 + alpha ||w||^2 (b not penalised)."""
    mx, my = x.mean(axis=0), float(y.mean())
    xc = (x - mx).astype(np.float64)
    a = xc.T @ xc + alpha * np.eye(x.shape[1])
    w = np.linalg.solve(a, xc.T @ (y - my))
    return w, my - float(mx @ w)


ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0)


def choose_alpha(x: np.ndarray, y: np.ndarray, folds: int = 5) -> float:
    """The ridge penalty of ``ALPHAS`` with the lowest k-fold RMSE (folds by position; the
    caller's rows are in id-hash order, not sorted by score). Unit-norm embeddings have small
    eigenvalues (about n / dim), so a fixed penalty can swamp a small sample."""
    k = min(folds, len(y))
    if k < 2:
        return ALPHAS[-1]
    fold = np.arange(len(y)) % k
    best, best_err = ALPHAS[-1], np.inf
    for a in ALPHAS:
        err = 0.0
        for f in range(k):
            tr, te = fold != f, fold == f
            w, b = fit_ridge(x[tr], y[tr], a)
            err += float(np.sum((predict(x[te], w, b) - y[te]) ** 2))
        if err < best_err - 1e-12:
            best, best_err = a, err
    return best


def predict(x: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return np.clip(x.astype(np.float64) @ w + b, 0.0, 5.0)


def fit_report(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE and the F1 of "score >= 3" (FineWeb-Edu's decision) on rounded predictions."""
    if not len(y):
        return {"n": 0}
    t, p = y >= THRESHOLD, np.round(pred) >= THRESHOLD
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
    return {"n": int(len(y)), "rmse": round(float(np.sqrt(np.mean((pred - y) ** 2))), 4),
            "mae": round(float(np.mean(np.abs(pred - y))), 4),
            "f1_at_3": None if f1 is None else round(f1, 4),
            "positives": int(t.sum())}


def train_head(annotations: str, embeddings: list[str], alpha: float | None, heldout: float,
               seed: int, head_path: str) -> dict[str, Any]:
    """Fit the head on the annotated sample's embeddings (its held-out part excluded; the
    penalty chosen by cross-validation on the fitted part when ``alpha`` is None), save it as
    JSON (``weights``, ``bias``, ``alpha``) and return the held-out and training fit."""
    from tasks.select.features import draws

    a = pq.read_table(annotations).filter(pc.is_valid(pc.field("llm_score")))
    if len(a) < 2:
        raise ValueError(f"fineweb_edu: only {len(a)} annotated documents have a score: "
                         "too few to fit a head (check the LLM's replies and sample size)")
    xs, ys, ids = [], [], []
    for shard in sorted(set(a.column("shard").to_pylist())):
        part = a.filter(pc.equal(a.column("shard"), shard))
        got_ids, x = emb.read_embeddings(embeddings[shard], part.column("row").to_numpy())
        if got_ids != part.column("id").to_pylist():
            raise ValueError(f"fineweb_edu: embeddings {embeddings[shard]} do not match the "
                             "documents' ids: the embed stage read other documents")
        xs.append(x)
        ys.append(part.column("llm_score").to_numpy().astype(np.float64))
        ids += got_ids
    x, y = np.concatenate(xs), np.concatenate(ys)
    test = draws(pa.array(ids, pa.string()), seed, "heldout") < heldout
    if test.all() or (~test).sum() < 2:  # too small to hold out: fit on all, report none
        test = np.zeros(len(y), bool)
    if alpha is None:
        alpha = choose_alpha(x[~test], y[~test])
    w, b = fit_ridge(x[~test], y[~test], alpha)
    head = {"weights": [float(v) for v in w], "bias": b, "alpha": alpha, "dim": int(x.shape[1])}
    atomic_write_json(Path(head_path), head)
    return {"train": fit_report(y[~test], predict(x[~test], w, b)),
            "heldout": fit_report(y[test], predict(x[test], w, b)),
            "alpha": alpha, "label_counts": {str(k): int((y == k).sum()) for k in range(6)}}


def load_head(path: str) -> tuple[np.ndarray, float]:
    h = json.loads(Path(path).read_text())
    return np.asarray(h["weights"], np.float64), float(h["bias"])


def apply_shard(src: str, embeddings: str, dst: str, head_path: str, column: str
                ) -> dict[str, Any]:
    """The documents of ``src`` with ``column`` = the head's score of their embedding (0-5),
    streamed batch by batch alongside the embeddings file (same rows, checked by id)."""
    docs, vecs = pq.ParquetFile(src), pq.ParquetFile(embeddings)
    if docs.metadata.num_rows != vecs.metadata.num_rows:
        raise ValueError(f"fineweb_edu: {src} has {docs.metadata.num_rows} rows, its "
                         f"embeddings {vecs.metadata.num_rows}")
    w, b = load_head(head_path)
    parts = []
    hist = np.zeros(6, np.int64)
    for db, vb in zip(docs.iter_batches(batch_size=emb.READ_ROWS),
                      vecs.iter_batches(batch_size=emb.READ_ROWS), strict=True):
        if db.column("id").to_pylist() != vb.column("id").to_pylist():
            raise ValueError(f"fineweb_edu: {embeddings} is not in {src}'s row order")
        s = predict(emb.as_matrix(vb.column("embedding")), w, b)
        hist += np.bincount(np.round(s).astype(np.int64), minlength=6)[:6]
        t = pa.Table.from_batches([db])
        parts.append(t.append_column(column, pa.array(s.astype(np.float32), pa.float32())))
    t = pa.concat_tables(parts) if parts else docs.schema_arrow.empty_table().append_column(
        column, pa.array([], pa.float32()))
    write_parquet(t, Path(dst), row_group_rows=docs.metadata.row_group(0).num_rows
                  if docs.metadata.num_row_groups else None)
    return {"docs_in": len(t), "docs_kept": len(t), "docs_rejected": 0,
            "score_hist": [int(v) for v in hist]}


def fraction_at_least(hist: list[int], k: int = THRESHOLD) -> float | None:
    """Share of documents whose rounded score is >= k (what ``keep >= k`` keeps)."""
    n = sum(hist)
    return round(sum(hist[k:]) / n, 4) if n else None
