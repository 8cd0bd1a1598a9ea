"""SemDeDup (tasks/select/semdedup.py) and the clusters stage (tasks/select/cluster_stage.py)
on planted vectors: near-duplicate pairs found at the stated epsilon with precision and recall
1, the survivor the one farther from the centroid, the blocked pairwise pass equal to the
plain one, and the decision made later by the filter stage's corpus rule. The stage runs with
an in-process executor over embeddings files written under the embed stage's contract (the
real model's embeddings are the integration test's: tests/integration/test_select_clusters.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import filter as filter_stage
from tasks.schema import DOC_SCHEMA
from tasks.select import semdedup
from tasks.select.cluster_stage import COLUMNS, Clusters, Config
from tasks.select.embed import embedding_array
from tasks.select.kmeans import assign, fit_centroids, unit
from tasks.stage import Manifest, RunInfo, Upstream
from tasks.store import StageDir, run_marked

DIM = 32


class Serial:
    """The stage executor in this process (the runner's does the same calls on Dask)."""

    def shards(self, out: StageDir, fn: Any, jobs: Any, desc: str, resources: Any = None
               ) -> list[dict[str, Any]]:
        return [out.shard_done(k) or run_marked(str(out.shard_marker(k)), fn, *a)
                for k, a in jobs]

    def task(self, fn: Any, *args: Any, desc: str = "task") -> Any:
        return fn(*args)

    def map(self, fn: Any, jobs: Any, desc: str) -> list[Any]:
        return [fn(*a) for a in jobs]


def planted(topics: int = 12, per: int = 8, twins: int = 10, seed: int = 0
            ) -> tuple[np.ndarray, list[str], set[frozenset[str]]]:
    """``topics`` groups of ``per`` unit vectors (same-topic cosine about 0.6) and ``twins``
    near-duplicates (cosine about 0.99 to their original): vectors, ids, the planted pairs."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((topics, DIM)))
    x = np.repeat(centers, per, axis=0) + 0.15 * rng.standard_normal((topics * per, DIM))
    ids = [f"t{i // per}-{i % per}" for i in range(len(x))]
    src = rng.choice(len(x), twins, replace=False)
    tw = x[src] + 0.02 * rng.standard_normal((twins, DIM))
    pairs = {frozenset((ids[s], f"twin-{ids[s]}")) for s in src}
    return (unit(np.vstack([x, tw])).astype(np.float32),
            ids + [f"twin-{ids[s]}" for s in src], pairs)


def write_corpus(root: Path, x: np.ndarray, ids: list[str], shards: int = 2
                 ) -> tuple[RunInfo, Upstream]:
    """Docs shards and their embeddings files (the embed stage's contract), and the upstream
    manifests a stage after ``embed`` sees."""
    docs, embs = [], []
    for s, part in enumerate(np.array_split(np.arange(len(ids)), shards)):
        n = len(part)
        t = pa.table({"id": [ids[i] for i in part],
                      "text": pa.array([f"Document {ids[i]}\nbody" for i in part],
                                       pa.large_string()),
                      "source": ["s"] * n, "url": pa.array([None] * n, pa.string()),
                      "fetched_at": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
                      "lang": ["en"] * n, "lang_score": pa.array([None] * n, pa.float32()),
                      "meta": pa.array([None] * n, pa.string())}, schema=DOC_SCHEMA)
        d, e = root / "docs" / f"part-{s:05d}.parquet", root / "emb" / f"part-{s:05d}.parquet"
        d.parent.mkdir(parents=True, exist_ok=True)
        e.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d)
        pq.write_table(pa.table({"id": t.column("id"), "embedding": embedding_array(x[part])}), e)
        docs.append(str(d.relative_to(root)))
        embs.append(str(e.relative_to(root)))
    up = Upstream()
    up.add(Manifest("ingest", "v0", len(ids), len(ids), 0, {"kept": docs}), docs=True)
    up.add(Manifest("embed", "e0", len(ids), len(ids), 0, {"embeddings": embs},
                    extra={"docs_version": "v0", "dim": DIM}), docs=False)
    return RunInfo("r", None, root, None), up


def run_stage(root: Path, x: np.ndarray, ids: list[str], **cfg: Any
              ) -> tuple[dict[str, Any], list[str]]:
    run, up = write_corpus(root, x, ids)
    stage = Clusters(Config(**cfg))
    out = StageDir(root, "clusters", "c0")
    out.path.mkdir(parents=True, exist_ok=True)
    body = stage.run(run, up, out, Serial(), None)
    return body, [str(root / rel) for rel in body["outputs"]["kept"]]


def read(paths: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in paths])


def test_earlier_max_in_blocks_equals_the_plain_computation(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    x = unit(np.random.default_rng(1).standard_normal((50, 8))).astype(np.float32)
    sims = x @ x.T
    want = [np.nan] + [sims[i, :i].max() for i in range(1, 50)]
    arg = [-1] + [int(sims[i, :i].argmax()) for i in range(1, 50)]
    monkeypatch.setattr(semdedup, "BLOCK_FLOATS", 7 * 50)  # 7 rows per block
    best, got = semdedup.earlier_max(x)
    assert np.isnan(best[0]) and np.allclose(best[1:], want[1:], atol=1e-6)
    assert got.tolist() == arg


def test_the_survivor_is_the_one_farther_from_the_centroid_ties_by_input_order() -> None:
    x = unit(np.array([[1, 0.01], [1, 0.0], [0, 1]], np.float32))
    dist = np.array([0.1, 0.3, 0.2])
    sim, nearest = semdedup.semdedup_columns(x, dist, np.array([0, 1, 2]), keep="far")
    # order: b (0.3), c (0.2), a (0.1): a is b's twin and comes after it
    assert np.isnan(sim[1]) and sim[0] > 0.99 and nearest[0] == 1
    assert semdedup.duplicates(sim, 0.05).tolist() == [True, False, False]
    sim, _ = semdedup.semdedup_columns(x, dist, np.array([0, 1, 2]), keep="near")
    assert semdedup.duplicates(sim, 0.05).tolist() == [False, True, False]
    same = semdedup.cluster_order(np.array([0.2, 0.2]), np.array([7, 3]))
    assert same.tolist() == [1, 0]


@pytest.mark.parametrize("keep", ["far", "near"])
def test_an_exact_copy_embedded_with_noise_loses_to_the_earlier_input(keep: str) -> None:
    """One text embedded in two batches differs by ~1e-7 (measured: distances 0.5790289 and
    0.5790291 for a document and its copy); the copy that comes later in the input is the
    one dropped, as exact dedup drops it, whichever distance the noise made larger."""
    v = unit(np.array([[1.0, 0.2], [1.0, 0.2], [0.0, 1.0]], np.float32))
    for noisy in ([0.5790289, 0.5790291, 0.3], [0.5790291, 0.5790289, 0.3]):
        sim, nearest = semdedup.semdedup_columns(v, np.array(noisy), np.array([0, 1, 2]),
                                                 keep=keep)  # type: ignore[arg-type]
        assert semdedup.duplicates(sim, 0.05).tolist() == [False, True, False]
        assert nearest[1] == 0


def test_planted_near_duplicates_found_with_precision_and_recall() -> None:
    x, ids, pairs = planted()
    c = fit_centroids(x, 12, seed=0)
    labels, dist = assign(x, c)
    idx = np.array(ids)
    dropped = set()
    for cl in np.unique(labels):
        at = np.flatnonzero(labels == cl)
        sim, _ = semdedup.semdedup_columns(x[at], dist[at], idx[at])
        dropped |= set(idx[at][semdedup.duplicates(sim, 0.05)])
    found = {p for p in pairs if p & dropped}
    precision = len([d for d in dropped if any(d in p for p in pairs)]) / max(len(dropped), 1)
    recall = len(found) / len(pairs)
    assert precision == 1.0 and recall == 1.0
    assert all(len(p & dropped) == 1 for p in pairs)  # one of each pair survives


def test_stage_stores_columns_and_the_filter_rule_decides_at_epsilon(tmp_path: Path) -> None:
    x, ids, pairs = planted()
    body, kept = run_stage(tmp_path, x, ids, k=12, titles=2)
    assert body["docs_in"] == body["docs_kept"] == len(ids) and body["docs_rejected"] == 0
    t = read(kept)
    assert set(COLUMNS) <= set(t.column_names) and t.column("cluster").null_count == 0
    # the stored nearest id of every dropped twin is its planted partner
    sims = dict(zip(t.column("id").to_pylist(), t.column("semdedup_sim").to_pylist(),
                    strict=True))
    near = dict(zip(t.column("id").to_pylist(), t.column("semdedup_nearest").to_pylist(),
                    strict=True))
    stats = filter_stage.filter_local(kept, str(tmp_path / "f"), {},
                                      {"tasks.select.semdedup": semdedup.Config(epsilon=0.05)})
    rej = read([str(tmp_path / "f" / "rejected" / f"part-{i:05d}.parquet") for i in range(2)])
    dropped = set(rej.column("id").to_pylist())
    assert set(rej.column("reject_reason").to_pylist()) == {semdedup.RULE}
    assert {frozenset((d, near[d])) for d in dropped} == pairs  # precision and recall 1
    assert all(sims[d] > 0.95 for d in dropped)
    assert sum(s["docs_kept"] + s["docs_rejected"] for s in stats) == len(ids)
    # the sweep in the stage's JSON counts the same drops at 0.05
    doc = json.loads((tmp_path / body["outputs"]["clusters"]).read_text())
    assert doc["semdedup_sweep"]["0.05"] == len(pairs) == body["semdedup_sweep"]["0.05"]
    assert sum(c["size"] for c in doc["clusters"]) == len(ids)
    assert all(1 <= len(c["titles"]) <= 2 and c["titles"][0].startswith("Document t")
               for c in doc["clusters"])
    # a larger epsilon drops at least as much: the same stored column, another threshold
    filter_stage.filter_local(kept, str(tmp_path / "g"), {},
                              {"tasks.select.semdedup": semdedup.Config(epsilon=0.6)})
    more = read([str(tmp_path / "g" / "rejected" / f"part-{i:05d}.parquet") for i in range(2)])
    assert dropped < set(more.column("id").to_pylist())


def test_a_document_without_an_embedding_is_kept_unclustered(tmp_path: Path) -> None:
    x, ids, _ = planted(topics=3, per=4, twins=0)
    run, up = write_corpus(tmp_path, x, ids, shards=1)
    emb = tmp_path / up.get("embed").outputs["embeddings"][0]
    pq.write_table(pq.read_table(emb).slice(1), emb)  # the first document lost its embedding
    out = StageDir(tmp_path, "clusters", "c1")
    out.path.mkdir(parents=True)
    body = Clusters(Config(k=3)).run(run, up, out, Serial(), None)
    t = read([str(tmp_path / p) for p in body["outputs"]["kept"]])
    assert body["docs_kept"] == len(ids) and body["clustered"] == len(ids) - 1
    assert t.column("cluster").null_count == 1 and t.column("cluster")[0].as_py() is None
    stats = filter_stage.filter_local([str(tmp_path / p) for p in body["outputs"]["kept"]],
                                      str(tmp_path / "f"), {},
                                      {"tasks.select.semdedup": semdedup.Config()})
    assert stats[0]["docs_kept"] + stats[0]["docs_rejected"] == len(ids)


def test_the_report_shows_clusters_and_what_the_filter_thinned(tmp_path: Path) -> None:
    from tasks.report import more_tables
    from tasks.select.cluster_report import cluster_rows
    from tasks.store import atomic_write_json

    x, ids, pairs = planted()
    body, kept = run_stage(tmp_path, x, ids, k=12, titles=2)
    atomic_write_json(tmp_path / "stages" / "clusters" / "c0" / "manifest.json", body)
    fdir = tmp_path / "stages" / "filter" / "f0"
    filter_stage.filter_local(kept, str(fdir), {},
                              {"tasks.select.semdedup": semdedup.Config(epsilon=0.05)})
    atomic_write_json(fdir / "manifest.json", {"outputs": {"kept": [
        str(p.relative_to(tmp_path)) for p in sorted((fdir / "kept").glob("*.parquet"))]}})
    stages = [{"stage": "clusters", "output_path": str(tmp_path / "stages/clusters/c0")},
              {"stage": "filter", "output_path": str(fdir)}]
    rows = cluster_rows(stages)
    assert sum(r["documents"] for r in rows) == len(ids)
    assert sum(r["documents"] - r["kept by filter"] for r in rows) == len(pairs)
    assert rows[0]["kept by filter"] < rows[0]["documents"]  # the most thinned first
    assert "<h2>Clusters</h2>" in more_tables({"stages": stages})
    assert cluster_rows([{"stage": "filter", "output_path": str(fdir)}]) == []
