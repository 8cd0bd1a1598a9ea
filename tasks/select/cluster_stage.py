"""Stage ``clusters``: k-means over the ``embed`` stage's embeddings, and the per-document
columns the embedding-space selectors decide on later, in the filter stage.

Every document is kept, with: ``cluster`` (its nearest centroid), ``cluster_dist`` (cosine
distance to it), ``cluster_d_inter`` (its cluster's mean cosine distance to the
``inter_neighbors`` nearest other centroids), ``semdedup_sim`` / ``semdedup_nearest``
(SemDeDup: ``tasks/select/semdedup.py``) and ``kcenter_rank`` (k-center greedy within the
cluster: ``tasks/select/diversity.py``). The corpus rules ``tasks.select.semdedup``,
``tasks.select.density`` and ``tasks.select.diversity`` decide over them; a new epsilon,
budget or tau re-runs only ``filter``.

Steps: fit the centroids on a seeded sample (one task); assign every document, one shard at a
time, writing its embedding to the bucket of its cluster; one task per bucket of clusters
computes the within-cluster columns; the documents are written back with them, one shard at a
time. ``clusters.json`` (an output) has each cluster's size, d_intra, d_inter and a few
example titles, and SemDeDup's drop counts at several epsilons. Place it after ``embed``:

    stages:
      extra:
        - use: tasks.select.embed_stage:Embed
          after: rewrite
        - use: tasks.select.cluster_stage:Clusters
          after: embed
          with: {k: 100}
"""

from __future__ import annotations

import math
import shutil
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from tasks.identity import OPERATIONAL
from tasks.select import cluster_work as cw
from tasks.select.embed_stage import embeddings_for
from tasks.select.kmeans import inter_distance
from tasks.stage import Executor, Manifest, Resources, RunInfo, Stage, Upstream
from tasks.store import StageDir, atomic_write_json, merge_counts, shard_key

COLUMNS = ("cluster", "cluster_dist", "cluster_d_inter", "semdedup_sim", "semdedup_nearest",
           "kcenter_rank")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(100, ge=1, description="clusters (at most the documents in the fit sample)")
    fit_sample: int = Field(100_000, ge=1, description="embeddings the centroids are fit on "
                            "(a seeded uniform sample); every document is then assigned")
    iters: int = Field(50, ge=1, description="k-means iterations at most")
    minibatch: bool = Field(False, description="scikit-learn MiniBatchKMeans instead of "
                            "KMeans (Lloyd) for the fit")
    seed: int = Field(0, description="the fit sample and k-means' seeding")
    keep: Literal["far", "near"] = Field(
        "far", description="SemDeDup's order within a cluster: the document farthest from the "
        "centroid first (the paper's: it survives its near-duplicates), or nearest first")
    inter_neighbors: int = Field(20, ge=1, description="d_inter: nearest other centroids "
                                 "averaged over")
    titles: int = Field(3, ge=0, le=20, description="example titles per cluster in "
                        "clusters.json")
    bucket_docs: Annotated[int, OPERATIONAL] = Field(
        200_000, ge=1, description="documents per bucket of clusters held in one task "
        "(memory: bucket_docs x dim x 4 bytes)")


class Clusters(Stage):
    name = "clusters"
    group = "filter"  # its columns are the filter stage's to decide on
    code_version = 2  # 2: SemDeDup ties by input order, distances to 5 decimals
    recipe_key = "stages.extra (use: tasks.select.cluster_stage:Clusters)"
    inputs = ("docs", "embeddings")
    outputs = ("kept", "clusters", "centroids")
    work = ("corpus", "shard")
    resources = Resources(cpus=1)
    description = ("k-means over the embeddings; SemDeDup similarities, density and "
                   "k-center columns for the filter stage")
    Config = Config

    def __init__(self, params: Any = None) -> None:
        super().__init__(params if params is not None else Config())

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        return [up.docs.version, up.get("embed").version] if up.has("embed") \
            else [up.docs.version]

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        c: Config = self.params
        embs = [run.abs(f) for f in embeddings_for(up, self.name)]
        docs = [run.abs(rel) for rel in up.docs.kept]
        keys = [shard_key(p) for p in docs]
        total = sum(pq.ParquetFile(p).metadata.num_rows for p in embs)
        if not total:
            raise ValueError("clusters: the embed stage wrote no embeddings")
        centroids = out.path / "centroids.npy"
        if not centroids.is_file():  # else: fit before a crash
            ex.task(cw.fit, embs, total, c.k, c.fit_sample, c.seed, c.iters, c.minibatch,
                    str(centroids), desc="clusters fit")
        cents = np.load(centroids)
        k = len(cents)
        d_inter = inter_distance(cents, c.inter_neighbors)
        n_buckets = max(1, min(k, math.ceil(total / c.bucket_docs)))
        buckets, results = out.path / "work" / "buckets", out.path / "work" / "results"
        ex.shards(out, cw.assign_shard,
                  [(f"assign-{key}", (d, e, str(centroids), key, n_buckets, str(buckets)))
                   for key, d, e in zip(keys, docs, embs, strict=True)], "clusters assign")
        bdirs = [(str(buckets / f"b-{b:05d}"), str(results / f"b-{b:05d}"), c.keep)
                 for b in range(n_buckets)]
        per_bucket = ex.map(cw.cluster_bucket, bdirs, "clusters semdedup+kcenter")
        shutil.rmtree(buckets, ignore_errors=True)  # copies of the embeddings: scratch
        jobs = [(key, (d, out.part("kept", key), [r for _, r, _ in bdirs], key,
                       d_inter.tolist(), c.titles)) for key, d in zip(keys, docs, strict=True)]
        stats = ex.shards(out, cw.write_shard, jobs, "clusters write")
        summary = _summary(per_bucket, stats, d_inter, c.titles)
        atomic_write_json(out.path / "clusters.json", {"k": k, "dim": int(cents.shape[1]),
                                                       "config": c.model_dump(), **summary})
        return {**merge_counts(stats),
                "outputs": {"kept": [out.rel(a[1]) for _, a in jobs],
                            "clusters": out.rel(out.path / "clusters.json"),
                            "centroids": out.rel(centroids)},
                "k": k, "clustered": sum(int(s.get("clustered", 0)) for s in stats),
                "clusters_nonempty": len(summary["clusters"]),
                "semdedup_sweep": summary["semdedup_sweep"]}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        e = manifest.extra
        run.log.info("clusters: %s of %s documents in %s clusters (k=%s); SemDeDup drops by "
                     "epsilon: %s", e.get("clustered"), manifest.docs_in,
                     e.get("clusters_nonempty"), e.get("k"), e.get("semdedup_sweep"))


def _summary(per_bucket: list[dict[str, Any]], shards: list[dict[str, Any]],
             d_inter: np.ndarray, n_titles: int) -> dict[str, Any]:
    """clusters.json's body: clusters largest first, each with its size, d_intra, d_inter and
    its first titles in shard order; SemDeDup drop counts per epsilon."""
    clusters: dict[int, dict[str, Any]] = {}
    sweep: dict[str, int] = {}
    for b in per_bucket:
        for cid, s in b["clusters"].items():
            clusters[int(cid)] = {"cluster": int(cid), "size": s["size"],
                                  "d_intra": round(s["d_intra"], 6),
                                  "d_inter": round(float(d_inter[int(cid)]), 6), "titles": []}
        for eps, n in b["sweep"].items():
            sweep[eps] = sweep.get(eps, 0) + int(n)
    for s in shards:  # in shard order: the corpus's first documents of each cluster
        for cid, ts in (s.get("titles") or {}).items():
            got = clusters[int(cid)]["titles"]
            got += ts[:max(0, n_titles - len(got))]
    rows = sorted(clusters.values(), key=lambda r: (-r["size"], r["cluster"]))
    return {"clusters": rows, "semdedup_sweep": sweep,
            "clustered": sum(r["size"] for r in rows)}
