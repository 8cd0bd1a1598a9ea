"""Density-based pruning (tasks/select/density.py) and the quotas it shares with the
diversity rule (tasks/select/quotas.py): the quotas match a hand computation, a cluster's
quota is capped at its size and the rest shared again, the hardest documents are kept first,
and the filter stage accounts for every document."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tasks import filter as filter_stage
from tasks.corpus.base import RuleContext
from tasks.schema import DOC_SCHEMA
from tasks.select import density
from tasks.select.quotas import allocate, coverage, softmax

RULE = "tasks.select.density"


def docs_with(path: Path, ids: list[str], **cols: Any) -> str:
    """A docs shard (the documents schema) with extra columns (name -> list)."""
    n = len(ids)
    t = pa.table({"id": ids, "text": pa.array([f"text of {i}" for i in ids], pa.large_string()),
                  "source": ["s"] * n, "url": pa.array([None] * n, pa.string()),
                  "fetched_at": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
                  "lang": ["en"] * n, "lang_score": pa.array([None] * n, pa.float32()),
                  "meta": pa.array([None] * n, pa.string())}, schema=DOC_SCHEMA)
    for name, values in cols.items():
        t = t.append_column(name, pa.array(values))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)
    return str(path)


def three_clusters(tmp: Path, sizes: tuple[int, ...] = (20, 20, 20)) -> tuple[str, list[float]]:
    """Clusters 0, 1, 2 with d_intra 0.2, 0.4, 0.6 (each document at d_intra +- 0.05,
    alternating) and d_inter 0.5: complexity 0.1, 0.2, 0.3."""
    ids, cl, dist, inter = [], [], [], []
    for c, n in enumerate(sizes):
        for i in range(n):
            ids.append(f"c{c}-{i:02d}")
            cl.append(c)
            dist.append(0.2 * (c + 1) + (0.05 if i % 2 == 0 else -0.05))
            inter.append(0.5)
    return docs_with(tmp / "docs.parquet", ids, cluster=pa.array(cl, pa.int32()),
                     cluster_dist=pa.array(dist, pa.float32()), cluster_d_inter=inter), dist


def test_softmax_quotas_match_a_hand_computation() -> None:
    # complexity 0.1, 0.2, 0.3 at tau 0.1: weights e^1 : e^2 : e^3 = 0.0900 : 0.2447 : 0.6652
    complexity, quota = density.cluster_quotas(np.array([0.2, 0.4, 0.6]),
                                               np.array([0.5, 0.5, 0.5]),
                                               np.array([20, 20, 20]), 30, tau=0.1)
    assert np.allclose(complexity, [0.1, 0.2, 0.3])
    e = [math.e, math.e ** 2, math.e ** 3]
    assert np.allclose(softmax(complexity, 0.1), [v / sum(e) for v in e])
    # 30 x weights = 2.70, 7.34, 19.96 -> floors 2, 7, 19 (28); the 2 left go to the largest
    # fractions (.96 then .70): 3, 7, 20
    assert quota.tolist() == [3, 7, 20]
    # cluster 2 holds only 12: it keeps them all and 18 are shared by e^1 : e^2 -> 4.84,
    # 13.16 -> 4, 13 (+12 = 29); the 1 left goes to .84: 5, 13, 12
    _, capped = density.cluster_quotas(np.array([0.2, 0.4, 0.6]), np.array([0.5] * 3),
                                       np.array([20, 20, 12]), 30, tau=0.1)
    assert capped.tolist() == [5, 13, 12]


def test_allocate_never_exceeds_sizes_and_spends_the_budget() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(0, 30, 8)
        w = rng.random(8)
        b = int(rng.integers(0, sizes.sum() + 10))
        q = allocate(w, sizes, b)
        assert (q <= sizes).all() and (q >= 0).all()
        assert q.sum() == min(b, sizes.sum())
    assert allocate(np.ones(3), np.array([1, 10, 10]), 9).tolist() == [1, 4, 4]


def test_the_rule_keeps_the_quota_hardest_first(tmp_path: Path) -> None:
    path, dist = three_clusters(tmp_path)
    stats = filter_stage.filter_local([path], str(tmp_path / "f"), {},
                                      {RULE: density.Config(percent=50, tau=0.1)})
    kept = pq.read_table(tmp_path / "f" / "kept" / "part-00000.parquet")
    rej = pq.read_table(tmp_path / "f" / "rejected" / "part-00000.parquet")
    assert stats[0]["docs_kept"] == 30 and stats[0]["docs_kept"] + stats[0]["docs_rejected"] == 60
    assert set(rej.column("reject_reason").to_pylist()) == {density.RULE}
    per = {c: [i for i in kept.column("id").to_pylist() if i.startswith(f"c{c}-")]
           for c in range(3)}
    assert [len(per[c]) for c in range(3)] == [3, 7, 20]
    # hardest first: the farther half (even positions, d_intra + 0.05) of clusters 0 and 1
    assert all(int(i[-2:]) % 2 == 0 for c in (0, 1) for i in per[c])


def test_decide_reports_complexity_quota_and_coverage(tmp_path: Path) -> None:
    path, _ = three_clusters(tmp_path, sizes=(20, 20, 12))
    cfg = density.Config(k=30, tau=0.1, within="random", seed=3)
    t = pq.read_table(path)
    ctx = RuleContext(n_shards=1, work_dir=tmp_path / "w")
    keys = density.keys(t, 0, np.arange(len(t)), cfg, ctx)
    pq.write_table(keys, tmp_path / "k.parquet")
    (tmp_path / "d").mkdir()
    got = density.decide([str(tmp_path / "k.parquet")], tmp_path / "d", cfg, ctx)
    assert [c["quota"] for c in got["clusters"]] == [5, 13, 12]
    assert [round(c["d_intra"], 4) for c in got["clusters"]] == [0.2, 0.4, 0.6]
    assert got["kept"] == 30 and got["ranked"] == 52
    assert got["clusters_before"] == got["clusters_after"] == 3
    assert {r["cluster"] for r in got["thinned"]} == {0, 1}  # cluster 2 kept whole
    # random within: a seeded sample, the same for the same seed
    again = density.decide([str(tmp_path / "k.parquet")], tmp_path / "d2", cfg, ctx)
    assert again["dropped"] == got["dropped"]


def test_config_needs_one_budget() -> None:
    with pytest.raises(ValidationError):
        density.Config()
    with pytest.raises(ValidationError):
        density.Config(percent=10, k=5)


def test_coverage_names_emptied_and_thinned_clusters() -> None:
    cov = coverage({0: 10, 1: 5, 2: 3}, {0: 10, 1: 1})
    assert cov["clusters_before"] == 3 and cov["clusters_after"] == 2
    assert cov["clusters_emptied"] == [2]
    assert [r["cluster"] for r in cov["thinned"]] == [2, 1]


def test_density_and_diversity_together_read_shared_columns_once(tmp_path: Path) -> None:
    path, _ = three_clusters(tmp_path)
    t = pq.read_table(path)
    t = t.append_column("kcenter_rank", pa.array(np.arange(len(t)) % 20, pa.int64()))
    pq.write_table(t, path)
    from tasks.select import diversity

    stats = filter_stage.filter_local([path], str(tmp_path / "f"), {},
                                      {RULE: density.Config(percent=50),
                                       "tasks.select.diversity": diversity.Config(percent=50)})
    assert stats[0]["docs_kept"] + stats[0]["docs_rejected"] == 60
    assert 0 < stats[0]["docs_kept"] <= 30
