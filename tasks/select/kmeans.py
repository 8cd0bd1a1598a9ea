"""k-means over stored document embeddings (L2-normalised float32 keys, never texts).

The centroids are fit on a seeded sample of at most ``fit_sample`` vectors (scikit-learn's
``KMeans``, Lloyd, one initialisation, k-means++ seeding; ``MiniBatchKMeans`` when asked) and
every document is then assigned to its nearest centroid in a streaming pass, one shard at a
time. On unit vectors squared Euclidean distance is ``2 - 2 cos``, so Euclidean k-means groups
by cosine; the fitted centroids are normalised afterwards and a document's distance to its
cluster is the cosine distance ``1 - cos(x, c)``. Why scikit-learn and not faiss:
docs/selection.md (measured with ``python -m tasks.select.kmeans_bench``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.select.features import draws

BLOCK = 8192  # rows per matrix product: bounds the (rows x k) similarity block


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_centroids(x: np.ndarray, k: int, seed: int = 0, iters: int = 50,
                  minibatch: bool = False, batch: int = 4096) -> np.ndarray:
    """``min(k, len(x))`` unit centroids fit on ``x`` (rows assumed L2-normalised)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = np.asarray(x, np.float32)
    k = max(1, min(k, len(x)))
    if minibatch:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, max_iter=iters,
                             batch_size=batch, n_init=1)
    else:
        km = KMeans(n_clusters=k, random_state=seed, max_iter=iters, n_init=1,
                    algorithm="lloyd")
    km.fit(x)
    return unit(km.cluster_centers_)


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid by cosine (ties: the lower id) and its cosine distance."""
    labels = np.empty(len(x), np.int32)
    dist = np.empty(len(x), np.float32)
    for s in range(0, len(x), BLOCK):
        sims = np.asarray(x[s:s + BLOCK], np.float32) @ centroids.T
        best = sims.argmax(axis=1)
        labels[s:s + BLOCK] = best
        dist[s:s + BLOCK] = 1.0 - sims[np.arange(len(best)), best]
    return labels, np.clip(dist, 0.0, 2.0)


def inter_distance(centroids: np.ndarray, neighbors: int) -> np.ndarray:
    """Per centroid, the mean cosine distance to its ``neighbors`` nearest other centroids
    (density-based pruning's d_inter); 0 when there is no other centroid."""
    k = len(centroids)
    if k < 2:
        return np.zeros(k, np.float64)
    d = 1.0 - (centroids @ centroids.T).astype(np.float64)
    np.fill_diagonal(d, np.inf)
    m = max(1, min(neighbors, k - 1))
    return np.sort(d, axis=1)[:, :m].mean(axis=1).clip(0.0)


def embedding_matrix(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed_size_list<float32>[dim] column as an (n, dim) float32 array (no copy when it
    can be avoided)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    dim = col.type.list_size
    if col.null_count:
        raise ValueError("embedding column has nulls")
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, np.float32).reshape(-1, dim)


def sample_shard(path: str, rate: float, seed: int) -> np.ndarray:
    """The embeddings of one shard whose (seed, id) draw is below ``rate``: a seeded uniform
    sample that does not depend on how the corpus is sharded."""
    t = pq.read_table(path, columns=["id", "embedding"])
    if not len(t):
        return np.zeros((0, t.schema.field("embedding").type.list_size), np.float32)
    pick = draws(t.column("id"), seed, "kmeans") < rate
    return unit(embedding_matrix(t.column("embedding").filter(pa.array(pick))))


def fit_from_shards(paths: Sequence[str], total: int, k: int, fit_sample: int, seed: int,
                    iters: int, minibatch: bool) -> np.ndarray:
    """Centroids fit on a sample of about ``fit_sample`` of the ``total`` stored embeddings,
    read one shard at a time (memory: the sample, never the corpus)."""
    rate = 1.0 if total <= fit_sample else fit_sample / total
    parts = [sample_shard(p, rate, seed) for p in paths]
    x = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    if not len(x):
        raise ValueError("no embeddings to cluster")
    return fit_centroids(x, k, seed=seed, iters=iters, minibatch=minibatch)
