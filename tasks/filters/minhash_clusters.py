"""MinHash near-duplicates, step 3 (``tasks.filters.minhash``'s docstring has the whole
pipeline): candidates that share a band key are verified by estimated Jaccard, and the verified
pairs merged with a vectorised union-find; the survivor of each cluster is its smallest
(shard, row)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_PAIR_CHUNK = 1 << 16  # candidate pairs verified per block

# what ``clusters`` reads: the candidates' keys, and their signatures (an array or a loader)
Candidates = pa.Table | Mapping[str, Any]
SigSource = np.ndarray | Callable[[np.ndarray], np.ndarray] | None


def _matrix(col: Any, dtype: type) -> np.ndarray:
    """A fixed-size-list Arrow column (or a 2-D array) as a 2-D numpy array."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if isinstance(col, pa.FixedSizeListArray):
        if col.null_count:
            raise ValueError("null signature / band keys")
        width = col.type.list_size
        return col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(
            len(col), width)
    arr = np.asarray(col)
    if arr.ndim != 2:
        raise ValueError(f"expected a fixed-size list column or a 2-D array, got {arr.shape}")
    return arr.astype(dtype, copy=False)


def _vector(col: Any, dtype: type) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray | pa.Array):
        col = col.to_numpy(zero_copy_only=False)
    return np.asarray(col).astype(dtype, copy=False)


def _compress(parent: np.ndarray) -> None:
    """Pointer jumping until every node points at its root (in place)."""
    while True:
        gp = parent[parent]
        if np.array_equal(gp, parent):
            return
        parent[:] = gp


def _union(parent: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Merge the components of edges (u, v); ``parent`` is compressed before and after.
    Roots always hook onto the smaller root, so a root is its component's smallest node."""
    while len(u):
        ru, rv = parent[u], parent[v]
        apart = ru != rv
        if not apart.any():
            return
        u, v, ru, rv = u[apart], v[apart], ru[apart], rv[apart]
        np.minimum.at(parent, np.maximum(ru, rv), np.minimum(ru, rv))
        _compress(parent)


def clusters(keys: Candidates, sig_of: SigSource = None, threshold: float = 0.8,
             window: int = 16) -> pa.Table:
    """Near-duplicate clusters across all shards.

    ``keys`` (an Arrow table, or a mapping of column name -> array) has one row per candidate
    document, in any order:

    - ``shard`` (int32) and ``row`` (int64): the document's place; (shard, row) pairs are unique
      and define the order survivors are chosen by;
    - ``bands``: its LSH keys, fixed_size_list<uint64>[bands] (or a 2-D uint64 array), as
      ``band_keys`` / ``hash_texts`` make them;
    - ``sig`` (optional): its signature, fixed_size_list<uint32>[num_perm] (or a 2-D array).

    ``sig_of`` overrides ``keys["sig"]``: a 2-D array aligned with the rows of ``keys``, or a
    callable taking positions into ``keys`` (sorted int64 array) and returning their signatures,
    ``(len(positions), num_perm)`` — so a driver can load signatures lazily. Only documents in
    LSH candidate pairs are asked for.

    Candidates share a band key. Within a bucket (documents sharing one key, in (shard, row)
    order) each document is compared with the bucket's first document and with its ``window``
    predecessors (every pair, in buckets of up to ``window + 1`` documents), which bounds the
    work on huge buckets of copies. A candidate pair joins a cluster when its estimated Jaccard
    is ``>= threshold``; pairs already in one cluster are not compared again. Clusters are the
    connected components of those pairs; the result does not depend on the order of ``keys``.

    Returns a table in the row order of ``keys``: ``shard``, ``row``, ``cluster_shard`` and
    ``cluster_row`` (the survivor: the cluster's smallest (shard, row); the document itself when
    it has no near-duplicate), ``cluster_size`` (int64, 1 when alone) and ``dropped`` (bool:
    not the survivor). Schema metadata ``candidate_pairs`` / ``verified_pairs`` count the pairs
    compared and accepted.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    get = keys.column if isinstance(keys, pa.Table) else keys.__getitem__
    shard = _vector(get("shard"), np.int32)
    row = _vector(get("row"), np.int64)
    n = len(shard)
    bands = _matrix(get("bands"), np.uint64) if n else np.zeros((0, 1), np.uint64)
    if len(row) != n or len(bands) != n:
        raise ValueError("shard, row and bands must have one entry per document")

    if sig_of is None:
        has_sig = (isinstance(keys, pa.Table) and "sig" in keys.column_names) or (
            not isinstance(keys, pa.Table) and "sig" in keys)
        if not has_sig:
            raise ValueError("no signatures: pass keys['sig'] or sig_of=")
        sig_of = _matrix(get("sig"), np.uint32) if n else np.zeros((0, 1), np.uint32)
    if callable(sig_of):
        fetch = sig_of
    else:
        sig_matrix = np.asarray(sig_of)
        if sig_matrix.ndim != 2 or len(sig_matrix) != n:
            raise ValueError(f"signatures shape {sig_matrix.shape} does not match {n} documents")

        def fetch(pos: np.ndarray) -> np.ndarray:
            return sig_matrix[pos]

    # work in (shard, row) order: node i is the i-th smallest (shard, row)
    order = np.lexsort((row, shard))
    s_shard, s_row = shard[order], row[order]
    if n > 1 and np.any((s_shard[1:] == s_shard[:-1]) & (s_row[1:] == s_row[:-1])):
        raise ValueError("duplicate (shard, row) in keys")
    parent = np.arange(n, dtype=np.int64)
    n_cand = n_verified = 0

    def verify_and_union(u: np.ndarray, v: np.ndarray) -> None:
        nonlocal n_cand, n_verified
        apart = parent[u] != parent[v]
        u, v = u[apart], v[apart]
        if not len(u):
            return
        code = np.unique(u * n + v)  # u < v; also makes the work order deterministic
        u, v = code // n, code % n
        for c in range(0, len(u), _PAIR_CHUNK):
            cu, cv = u[c:c + _PAIR_CHUNK], v[c:c + _PAIR_CHUNK]
            apart = parent[cu] != parent[cv]  # earlier chunks may have joined some
            cu, cv = cu[apart], cv[apart]
            if not len(cu):
                continue
            want, inv = np.unique(np.concatenate([order[cu], order[cv]]), return_inverse=True)
            sig = np.asarray(fetch(want))
            if sig.ndim != 2 or len(sig) != len(want):
                raise ValueError("signatures callable returned the wrong shape")
            need = threshold * sig.shape[1] - 1e-9
            same = (sig[inv[:len(cu)]] == sig[inv[len(cu):]]).sum(axis=1) >= need
            n_cand += len(cu)
            n_verified += int(same.sum())
            _union(parent, cu[same], cv[same])

    for k in range(bands.shape[1]):
        key = bands[order, k]
        o = np.argsort(key, kind="stable")  # stable: each bucket in (shard, row) order
        ks = key[o]
        new = np.ones(n, dtype=bool)
        new[1:] = ks[1:] != ks[:-1]
        run_start = np.flatnonzero(new)
        run_len = np.diff(np.append(run_start, n))
        if not len(run_len) or run_len.max() < 2:
            continue
        head = np.repeat(run_start, run_len)  # position of each doc's bucket head
        member = ~new
        verify_and_union(o[head[member]], o[member])  # star: every doc vs. its bucket head
        pos = np.arange(n)
        for d in range(1, min(window, int(run_len.max()) - 1) + 1):
            p = pos[d:][pos[:-d] > head[d:]]  # the doc d places back is in the bucket, not head
            if not len(p):
                break
            verify_and_union(o[p - d], o[p])

    root = parent
    size = np.bincount(root, minlength=n)[root] if n else np.zeros(0, np.int64)
    inv_order = np.empty(n, dtype=np.int64)
    inv_order[order] = np.arange(n)
    r = root[inv_order]
    meta = {"candidate_pairs": str(n_cand), "verified_pairs": str(n_verified)}
    return pa.table({
        "shard": pa.array(shard, pa.int32()),
        "row": pa.array(row, pa.int64()),
        "cluster_shard": pa.array(s_shard[r], pa.int32()),
        "cluster_row": pa.array(s_row[r], pa.int64()),
        "cluster_size": pa.array(size[inv_order].astype(np.int64), pa.int64()),
        "dropped": pa.array(r != inv_order),
    }).replace_schema_metadata(meta)


def duplicates(keys: Candidates, sig_of: SigSource = None, threshold: float = 0.8,
               window: int = 16) -> pa.Table:
    """(shard, row) of the documents to drop (every cluster member but the survivor), sorted
    by (shard, row) — the same contract as ``tasks.filters.dedup.duplicates``."""
    c = clusters(keys, sig_of, threshold, window)
    t = c.filter(c.column("dropped")).select(["shard", "row"])
    return t.take(pc.sort_indices(t, [("shard", "ascending"), ("row", "ascending")]))
