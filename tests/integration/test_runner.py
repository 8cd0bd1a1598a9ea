"""The generic runner's parts on real engines: shards of a GPU-declaring stage on a pool of
Ray actors (CPU actors here), resumed from the same per-shard markers as Dask shards; a cache
hit that finds its files gone runs the stage again instead of trusting the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.filters import gopher
from tasks.stage import Resources
from tasks.store import StageDir

pytestmark = pytest.mark.slow


def _shards(tmp: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        p = tmp / f"in-{i}.parquet"
        text = " ".join(["the river and the stone with that orchard"] * (10 + i))
        pq.write_table(pa.table({"id": [f"d{i}"], "text": pa.array([text], pa.large_string()),
                                 "lang": ["en"]}), p)
        out.append(str(p))
    return out


def test_gpu_stage_shards_run_on_a_ray_actor_pool_and_resume(tmp_path: Path) -> None:
    from flows.runner import Engines
    from tasks import filter as filter_lib

    sd = StageDir(tmp_path / "root", "probe", "v1")
    sd.path.mkdir(parents=True)
    filters = {"gopher_quality": gopher.Config()}
    jobs = [(f"{i:05d}", (p, sd.part("scored", f"{i:05d}"), filters))
            for i, p in enumerate(_shards(tmp_path, 3))]
    ex = Engines(Resources(cpus=1, gpus=1))
    first = ex.shards(sd, filter_lib.score_shard, jobs, "probe")
    assert [s["docs_in"] for s in first] == [1, 1, 1]
    assert all(Path(a[1]).is_file() for _, a in jobs)
    assert sorted(p.name for p in (sd.path / "_shards").iterdir()) == [
        "00000.json", "00001.json", "00002.json"]
    # a re-run skips the finished shards: the marker's stats come back, nothing recomputed
    Path(jobs[1][1][1]).unlink()
    again = ex.shards(sd, filter_lib.score_shard, jobs, "probe")
    assert again == first and not Path(jobs[1][1][1]).exists()


def test_a_manifest_whose_files_are_gone_is_not_a_cache_hit(tmp_path: Path) -> None:
    from flows.runner import cached

    sd = StageDir(tmp_path, "probe", "v1")
    (sd.path / "kept").mkdir(parents=True)
    (sd.path / "kept" / "part-00000.parquet").write_bytes(b"x")
    sd.mark_shard("00000", {"docs_in": 1})
    sd.finish({"docs_in": 1, "docs_kept": 1, "docs_rejected": 0,
               "outputs": {"kept": ["stages/probe/v1/kept/part-00000.parquet"]},
               "present": ["stages/probe/v1/kept/part-00000.parquet"]})
    m = cached(sd)
    assert m is not None and m.kept == ["stages/probe/v1/kept/part-00000.parquet"]
    (sd.path / "kept" / "part-00000.parquet").unlink()
    assert cached(sd) is None
    assert not sd.done() and not (sd.path / "_shards").exists()  # the stage runs again
    stale = list(sd.path.glob("manifest.stale-*.json"))
    assert len(stale) == 1 and json.loads(stale[0].read_text())["docs_in"] == 1


def test_a_gpu_stage_stops_local_dask_only_when_it_computes() -> None:
    """Training's cores: the local Dask cluster stops when a GPU stage starts work (its idle
    workers slow torch), and a CPU stage's executor leaves it up."""
    from flows.runner import Engines
    from infra import dask as dask_engine

    dask_engine.get_client()
    try:
        Engines(Resources(cpus=1))._release_for_gpu_stage()
        assert dask_engine._client is not None
        Engines(Resources(cpus=1, gpus=1))._release_for_gpu_stage()
        assert dask_engine._client is None
    finally:
        dask_engine.shutdown()
