"""Diversity (tasks/select/diversity.py): k-center greedy covers every planted cluster, tiny
ones too; the stored per-cluster rank starts at the document nearest the centroid; the
cluster-balanced rule gives every cluster an equal share (a small one keeps all), keeps the
lowest ranks, reports coverage before and after, and accounts for every document."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from test_select_density import docs_with

from tasks import filter as filter_stage
from tasks.corpus.base import RuleContext
from tasks.select import diversity
from tasks.select.kmeans import unit

RULE = "tasks.select.diversity"


def planted_clusters(sizes: tuple[int, ...], dim: int = 16, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated clusters of the given sizes (unit vectors) and each row's cluster."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((len(sizes), dim)))
    label = np.repeat(np.arange(len(sizes)), sizes)
    x = centers[label] + 0.1 * rng.standard_normal((len(label), dim))
    return unit(x), label


def test_k_center_greedy_covers_every_planted_cluster() -> None:
    sizes = (400, 200, 60, 5, 2, 1)
    x, label = planted_clusters(sizes)
    order, radius = diversity.k_center_greedy(x, len(sizes))
    assert set(label[order].tolist()) == set(range(len(sizes)))
    assert np.isinf(radius[0]) and (np.diff(radius[1:]) <= 1e-9).all()  # radii shrink
    # the whole order: every point once
    full, _ = diversity.k_center_greedy(x)
    assert sorted(full.tolist()) == list(range(len(x)))


def test_kcenter_ranks_start_nearest_the_centroid() -> None:
    x, _ = planted_clusters((30,))
    dist = 1 - x @ unit(x.mean(axis=0, keepdims=True))[0]
    rank = diversity.kcenter_ranks(x, dist)
    assert rank[np.argmin(dist)] == 0 and sorted(rank.tolist()) == list(range(30))


def _shard(tmp: Path) -> str:
    ids, cl, rank = [], [], []
    for c, n in enumerate((10, 10, 2)):
        for i in range(n):
            ids.append(f"c{c}-{i:02d}")
            cl.append(c)
            rank.append((i * 7) % n)  # a permutation of 0..n-1 in each cluster
    return docs_with(tmp / "docs.parquet", ids, cluster=pa.array(cl, pa.int32()),
                     kcenter_rank=pa.array(rank, pa.int64()))


def test_cluster_balanced_quota_keeps_the_lowest_ranks(tmp_path: Path) -> None:
    path = _shard(tmp_path)
    stats = filter_stage.filter_local([path], str(tmp_path / "f"), {},
                                      {RULE: diversity.Config(k=12)})
    assert stats[0]["docs_kept"] == 12 and stats[0]["docs_rejected"] == 10
    kept = pq.read_table(tmp_path / "f" / "kept" / "part-00000.parquet")
    per = {c: kept.filter(pa.compute.equal(kept.column("cluster"), c)) for c in range(3)}
    # equal shares: the 2-document cluster keeps both; the other 10 split 5 / 5
    assert [len(per[c]) for c in range(3)] == [5, 5, 2]
    assert all(sorted(per[c].column("kcenter_rank").to_pylist()) == [0, 1, 2, 3, 4]
               for c in (0, 1))


def test_decide_reports_coverage_before_and_after(tmp_path: Path) -> None:
    path = _shard(tmp_path)
    t = pq.read_table(path)
    ctx = RuleContext(n_shards=1, work_dir=tmp_path / "w")
    for order in ("kcenter", "random"):
        cfg = diversity.Config(percent=25, order=order)
        pq.write_table(diversity.keys(t, 0, np.arange(len(t)), cfg, ctx), tmp_path / "k.parquet")
        out = tmp_path / f"d-{order}"
        out.mkdir()
        got = diversity.decide([str(tmp_path / "k.parquet")], out, cfg, ctx)
        # ceil(22 x 25 %) = 6: 2 per cluster, every cluster still covered
        assert got["kept"] == 6 and got["quota"] == {0: 2, 1: 2, 2: 2}
        assert got["clusters_before"] == got["clusters_after"] == 3
        assert {r["cluster"] for r in got["thinned"]} == {0, 1}


def test_the_documented_recipe_validates_and_every_key_has_its_default() -> None:
    import re

    import yaml

    from tasks.recipe import parse_recipe
    from tasks.select import density, semdedup
    from tasks.select.cluster_stage import Clusters
    from tasks.select.cluster_stage import Config as ClustersConfig

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "selection.md").read_text()
    section = doc.split("## Embedding-space selection", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert snippet, "docs/selection.md: no recipe snippet in the embedding-space section"
    raw = yaml.safe_load(snippet.group(1))
    raw.update(name="clusters-doc", input={"paths": [str(root / "data/sample/sample.jsonl")],
                                            "format": "jsonl"})
    r = parse_recipe(raw)
    assert isinstance(r.stages.extra[1].build(), Clusters)
    assert isinstance(r.stages.filter.corpus["tasks.select.semdedup"], semdedup.Config)
    for sub, model in (("### SemDeDup", semdedup.Config), ("### Density", density.Config),
                       ("### Diversity", diversity.Config), ("", ClustersConfig)):
        part = section.split(sub, 1)[1].split("\n### ", 1)[0] if sub else \
            section.split("\n### ", 1)[0]
        for name, field in model.model_fields.items():
            m = re.search(rf"^\| `{name}` \| ([^|]+) \|", part, re.M)
            assert m, (sub, name)
            default = field.get_default(call_default_factory=True)
            assert m.group(1).strip() == ("`null`" if default is None else f"`{default}`"), \
                (sub, name, m.group(1))
