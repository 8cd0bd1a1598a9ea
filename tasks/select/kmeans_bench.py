"""k-means backends on this machine: faiss-cpu vs scikit-learn, on synthetic unit vectors.

    python -m tasks.select.kmeans_bench --n 20000 --dim 384 --k 100 --backend sklearn

Run once per backend (``faiss``, ``sklearn``, ``minibatch``), each in a fresh process so its
peak resident memory (``ru_maxrss``) is its own. Prints one JSON line: fit wall and CPU
seconds (CPU seconds are steadier on a shared machine), assignment seconds, peak RSS and the
mean cosine distance to the assigned centroid (lower = tighter). Needs numpy, pyarrow,
xxhash and the backend's package (faiss-cpu is not a datamill dependency)."""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def synthetic(n: int, dim: int, groups: int, seed: int) -> np.ndarray:
    """``n`` L2-normalised float32 vectors around ``groups`` random directions."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((groups, dim)).astype(np.float32)
    x = centers[rng.integers(0, groups, n)] + 0.6 * rng.standard_normal((n, dim), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run(backend: str, x: np.ndarray, k: int, iters: int, seed: int, threads: int
        ) -> tuple[np.ndarray, float, float]:
    t, cpu = time.perf_counter(), time.process_time()
    if backend == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, spherical=True,
                          max_points_per_centroid=len(x))
        km.train(x)
        c = km.centroids
    else:
        from threadpoolctl import threadpool_limits

        from tasks.select.kmeans import fit_centroids

        with threadpool_limits(threads):
            c = fit_centroids(x, k, seed=seed, iters=iters,
                              minibatch=backend == "minibatch")
    return np.asarray(c, np.float32), time.perf_counter() - t, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", choices=["faiss", "sklearn", "minibatch"], required=True)
    a = p.parse_args()
    x = synthetic(a.n, a.dim, a.k, seed=0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c, fit_s, fit_cpu = run(a.backend, x, a.k, a.iters, 0, a.threads)
    t = time.perf_counter()
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    sims = x @ c.T
    dist = 1.0 - sims.max(axis=1)
    assign_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"backend": a.backend, "n": a.n, "dim": a.dim, "k": a.k,
                      "iters": a.iters, "threads": a.threads, "fit_s": round(fit_s, 2),
                      "fit_cpu_s": round(fit_cpu, 2),
                      "assign_s": round(assign_s, 3), "peak_rss_mb": round(peak / 1024),
                      "data_rss_mb": round(base / 1024),
                      "mean_cos_dist": round(float(dist.mean()), 4)}))


if __name__ == "__main__":
    main()
