"""A local Dask cluster left without workers fails the step (a transient error the runner
retries on a fresh cluster) instead of waiting forever."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def _square(x: int) -> int:
    return x * x


def test_no_worker_left_raises_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.runner import transient
    from infra import dask as dask_engine

    monkeypatch.setenv("DATAMILL_DASK_LOST_S", "3")
    monkeypatch.setenv("DATAMILL_DASK_WORKERS", "1")
    monkeypatch.delenv("DATAMILL_DASK_ADDRESS", raising=False)
    dask_engine.shutdown()
    client = dask_engine.get_client()
    try:
        assert dask_engine.map_shards(_square, [(3,)], "warm") == [9]
        client.cluster.scale(0)  # every worker gone, none coming back
        deadline = time.monotonic() + 30
        while client.nthreads() and time.monotonic() < deadline:
            time.sleep(0.2)
        t0 = time.monotonic()
        with pytest.raises(dask_engine.DaskClusterLost) as err:
            dask_engine.map_shards(_square, [(4,), (5,)], "stuck")
        assert time.monotonic() - t0 < 30 and transient(err.value)
        assert dask_engine._client is None  # the next step starts a fresh cluster
        assert dask_engine.map_shards(_square, [(6,)], "fresh") == [36]
    finally:
        dask_engine.shutdown()
