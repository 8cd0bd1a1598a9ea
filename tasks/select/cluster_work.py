"""The ``clusters`` stage's work, as plain functions (no Prefect): fit, assign, per-cluster
passes, and the documents written back with their cluster columns.

Memory: the fit holds its sample; ``assign_shard`` one shard's embeddings; ``cluster_bucket``
the embeddings of one bucket of clusters (``bucket_docs`` documents on average: the stage
chooses the number of buckets), and inside it one cluster's pairwise block at a time
(``tasks.select.semdedup.earlier_max``); ``write_shard`` one shard of documents and its small
result columns. Embeddings are keys (float32 x dim per document); no step holds the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.select.diversity import kcenter_ranks
from tasks.select.kmeans import assign, embedding_matrix, fit_from_shards, unit
from tasks.select.semdedup import duplicates, semdedup_columns
from tasks.store import atomic_write_json, write_parquet

# the epsilons whose SemDeDup drop counts the stage reports (the decision is the filter's)
SWEEP_EPS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
TITLE_CHARS = 60


def fit(emb_paths: list[str], total: int, k: int, fit_sample: int, seed: int, iters: int,
        minibatch: bool, dst: str) -> dict[str, Any]:
    """Fit the centroids on a seeded sample and save them (``dst``, .npy)."""
    c = fit_from_shards(emb_paths, total, k, fit_sample, seed, iters, minibatch)
    tmp = Path(dst).with_suffix(".tmp.npy")
    np.save(tmp, c)
    tmp.replace(dst)
    return {"k": len(c), "dim": int(c.shape[1])}


def assign_shard(doc_path: str, emb_path: str, centroids: str, key: str, n_buckets: int,
                 bucket_root: str) -> dict[str, Any]:
    """Each document of a shard with its embedding, nearest centroid and distance, written to
    the bucket of its cluster (cluster mod n_buckets). Documents and embeddings are matched by
    id: a document without an embedding is left out (it gets no cluster)."""
    ids = pq.read_table(doc_path, columns=["id"]).column("id").combine_chunks()
    e = pq.read_table(emb_path, columns=["id", "embedding"])
    e_ids = e.column("id").combine_chunks()
    if e_ids.equals(ids):
        rows = np.arange(len(ids), dtype=np.int64)
    else:  # not one for one: join by id (one embedding per document, the first)
        pos = pc.index_in(e_ids, value_set=ids).fill_null(-1).to_numpy().astype(np.int64)
        keep_e = np.flatnonzero(pos >= 0)
        keep_e = keep_e[np.unique(pos[keep_e], return_index=True)[1]]
        e = e.take(pa.array(keep_e))
        rows = pos[keep_e]
    x = unit(embedding_matrix(e.column("embedding"))) if len(e) else np.zeros((0, 1))
    c = np.load(centroids)
    labels, dist = assign(x, c) if len(x) else (np.zeros(0, np.int32), np.zeros(0, np.float32))
    t = pa.table({"key": pa.array([key] * len(rows), pa.string()),
                  "row": pa.array(rows, pa.int64()), "id": e.column("id"),
                  "cluster": pa.array(labels, pa.int32()), "dist": pa.array(dist, pa.float32()),
                  "embedding": e.column("embedding")})
    bucket = labels % n_buckets
    for b in np.unique(bucket):
        write_parquet(t.filter(pa.array(bucket == b)),
                      Path(bucket_root) / f"b-{int(b):05d}" / f"part-{key}.parquet")
    return {"embedded": len(rows), "docs": len(ids)}


def cluster_bucket(bucket_dir: str, result_dir: str, keep: str) -> dict[str, Any]:
    """Every cluster of one bucket: SemDeDup's ``semdedup_sim`` / nearest earlier document
    and the k-center-greedy rank, written per shard (``result_dir/part-<key>.parquet``);
    returns per-cluster size and d_intra and SemDeDup drop counts at ``SWEEP_EPS``. Skipped
    when ``result_dir/done.json`` exists (a re-run after a crash)."""
    done = Path(result_dir) / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    files = sorted(Path(bucket_dir).glob("part-*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    stats: dict[str, Any] = {"clusters": {}, "sweep": {str(e): 0 for e in SWEEP_EPS}}
    if t is not None and len(t):
        cl = t.column("cluster").to_numpy()
        dist = t.column("dist").to_numpy()
        ids = np.asarray(t.column("id").to_pylist(), dtype=str)
        # input order (shard key, row): SemDeDup's tie-break, the order exact dedup keeps by
        position = np.empty(len(t), np.int64)
        position[pc.sort_indices(t, [("key", "ascending"), ("row", "ascending")])
                 .to_numpy()] = np.arange(len(t))
        x = unit(embedding_matrix(t.column("embedding")))
        sim = np.full(len(t), np.nan, np.float32)
        nearest = np.full(len(t), -1, np.int64)
        rank = np.zeros(len(t), np.int64)
        for c in np.unique(cl):
            at = np.flatnonzero(cl == c)
            s, n = semdedup_columns(x[at], dist[at], position[at], keep)  # type: ignore[arg-type]
            sim[at], nearest[at] = s, np.where(n >= 0, at[np.maximum(n, 0)], -1)
            rank[at] = kcenter_ranks(x[at], dist[at])
            stats["clusters"][str(int(c))] = {"size": len(at),
                                              "d_intra": float(dist[at].mean())}
        for e in SWEEP_EPS:
            stats["sweep"][str(e)] = int(duplicates(sim, e).sum())
        near_id = pa.array([ids[i] if i >= 0 else None for i in nearest], pa.string())
        res = pa.table({"key": t.column("key"), "row": t.column("row"),
                        "cluster": t.column("cluster"), "dist": t.column("dist"),
                        "sim": pa.array(sim, pa.float32(), mask=np.isnan(sim)),
                        "nearest": near_id, "rank": pa.array(rank, pa.int64())})
        keys = res.column("key").to_numpy(zero_copy_only=False)
        for k in np.unique(keys):
            write_parquet(res.filter(pa.array(keys == k)).drop_columns(["key"]),
                          Path(result_dir) / f"part-{k}.parquet")
    atomic_write_json(done, stats)
    return stats


def title(text: str | None) -> str:
    """A document's first non-empty line, cut to 60 characters."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:TITLE_CHARS]
    return ""


def write_shard(doc_path: str, dst: str, result_dirs: list[str], key: str,
                d_inter: list[float], n_titles: int) -> dict[str, Any]:
    """The shard's documents, every one kept, with ``cluster``, ``cluster_dist``,
    ``cluster_d_inter``, ``semdedup_sim``, ``semdedup_nearest`` and ``kcenter_rank`` (null
    for a document without an embedding); plus the first titles of each cluster here."""
    pf = pq.ParquetFile(doc_path)
    t = pf.read()
    n = len(t)
    parts = [pq.read_table(p) for d in result_dirs if (p := Path(d) / f"part-{key}.parquet")
             .is_file()]
    r = pa.concat_tables(parts) if parts else None
    rows = r.column("row").to_numpy() if r is not None else np.zeros(0, np.int64)
    have = np.zeros(n, bool)
    have[rows] = True

    def scatter(col: str, typ: pa.DataType, fill: Any) -> pa.Array:
        vals = np.full(n, fill, dtype=typ.to_pandas_dtype())
        if r is not None:
            src = r.column(col)
            vals[rows] = src.fill_null(fill).to_numpy(zero_copy_only=False)
            mask = ~have
            mask[rows] |= src.is_null().to_numpy(zero_copy_only=False)
        else:
            mask = ~have
        return pa.array(vals, typ, mask=mask)

    cluster = scatter("cluster", pa.int32(), 0)
    table = np.asarray(d_inter, np.float64)
    cl = cluster.fill_null(0).to_numpy(zero_copy_only=False)
    inter = pa.array(table[cl] if len(table) else np.zeros(n), pa.float64(), mask=~have)
    nearest = [None] * n
    if r is not None:
        for i, v in zip(rows, r.column("nearest").to_pylist(), strict=True):
            nearest[i] = v
    t = (t.append_column("cluster", cluster)
         .append_column("cluster_dist", scatter("dist", pa.float32(), 0.0))
         .append_column("cluster_d_inter", inter)
         .append_column("semdedup_sim", scatter("sim", pa.float32(), 0.0))
         .append_column("semdedup_nearest", pa.array(nearest, pa.string()))
         .append_column("kcenter_rank", scatter("rank", pa.int64(), 0)))
    write_parquet(t, Path(dst), row_group_rows=pf.metadata.row_group(0).num_rows
                  if pf.metadata.num_row_groups else None)
    # the first n_titles documents of each cluster in this shard, in row order
    idx = np.flatnonzero(have)
    idx = idx[np.argsort(cl[idx], kind="stable")]
    starts = np.r_[0, np.flatnonzero(np.diff(cl[idx])) + 1] if len(idx) else np.zeros(0, int)
    pos = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
    first = idx[pos < n_titles]
    titles: dict[str, list[str]] = {}
    for i, text in zip(first, t.column("text").take(pa.array(first, pa.int64())).to_pylist(),
                       strict=True):
        titles.setdefault(str(int(cl[i])), []).append(title(text))
    return {"docs_in": n, "docs_kept": n, "docs_rejected": 0,
            "clustered": int(have.sum()), "titles": titles}
