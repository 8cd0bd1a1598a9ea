"""The Dask engine for corpus-scale CPU work.

A LocalCluster by default (started once per process, on loopback); ``DATAMILL_DASK_ADDRESS``
points at a running scheduler instead. Workers run plain ``tasks/`` functions and never need
Prefect (see DESIGN.md: per-worker ephemeral Prefect servers are the pitfall to avoid).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

_client: Any = None


def get_client() -> Any:
    global _client
    if _client is not None:
        return _client
    import logging

    from distributed import Client, LocalCluster

    # the scheduler lives in this process; its INFO chatter would drown the stage logs
    logging.getLogger("distributed").setLevel(logging.WARNING)
    address = os.environ.get("DATAMILL_DASK_ADDRESS")
    if address:
        _client = Client(address)
    else:
        n = int(os.environ.get("DATAMILL_DASK_WORKERS", min(os.cpu_count() or 1, 4)))
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=os.environ.get("DATAMILL_DASK_DASHBOARD", "127.0.0.1:8787"),
            memory_limit=os.environ.get("DATAMILL_DASK_MEMORY", "4GiB"),
        )
        _client = Client(cluster)
    return _client


def submit_if_up(fn: Callable[..., Any], *args: Any, worker: str | None = None
                 ) -> Any | None:
    """A future of fn(*args) on the cluster this process already has (on ``worker`` only, if
    given: ``result_on`` stops waiting if it leaves); None without a cluster (none is
    started for it)."""
    if _client is None:
        return None
    if worker is None or worker not in _client.scheduler_info()["workers"]:
        return _client.submit(fn, *args, pure=False)
    return _client.submit(fn, *args, pure=False, workers=[worker])


def result_on(future: Any, worker: str | None, poll_s: float = 2.0) -> Any:
    """``future.result()``; ``DaskClusterLost`` if the worker it is bound to left the cluster
    before it finished (a restarted worker has another address: it would wait forever)."""
    while True:
        try:
            return future.result(timeout=poll_s)
        except TimeoutError:
            if worker is not None and (_client is None or
                                       worker not in _client.scheduler_info()["workers"]):
                future.cancel()
                raise DaskClusterLost(f"worker {worker} left with {future.key} pending") from None


def warm_one(fn: Callable[[], Any]) -> str | None:
    """Start fn() on one worker of the cluster this process already has, without waiting (a
    per-process import done while the workers would sit idle); that worker's address, to
    send the work it prepares for (``submit_if_up``), or None without a cluster."""
    if _client is None:
        return None
    from distributed import fire_and_forget

    workers = sorted(_client.scheduler_info()["workers"])
    if not workers:
        return None
    # loose: if that worker dies, the warm-up runs elsewhere instead of waiting for it forever
    fire_and_forget(_client.submit(fn, workers=workers[:1], allow_other_workers=True,
                                   pure=False))
    return str(workers[0])


def dashboard_link() -> str | None:
    return getattr(_client, "dashboard_link", None) if _client is not None else None


def map_shards(fn: Callable[..., Any], args: Sequence[tuple], desc: str) -> list[Any]:
    """Run fn(*a) for each tuple in args on the cluster; results in input order.

    Failures propagate with the worker's traceback. Shows a progress bar on a terminal.
    """
    if not args:
        return []
    from tqdm import tqdm

    client = get_client()
    futures = [client.submit(fn, *a, pure=False) for a in args]
    with tqdm(total=len(futures), desc=desc, unit="shard", disable=not sys.stderr.isatty(),
              leave=False) as bar:
        _watch(client, futures, bar.update)
    return client.gather(futures)


class DaskClusterLost(RuntimeError):
    """No worker left to run pending shards (a local cluster whose processes died): a
    transient failure (flows/runner.py retries the stage on a fresh cluster)."""


def _watch(client: Any, futures: list[Any], tick: Callable[[int], Any]) -> None:
    """Wait for ``futures``; a cluster with no worker for ``$DATAMILL_DASK_LOST_S`` (120 s)
    while shards are pending raises ``DaskClusterLost`` instead of waiting forever (a nanny
    restarts a dead worker within seconds: minutes without any means none is coming)."""
    from distributed import wait

    grace = float(os.environ.get("DATAMILL_DASK_LOST_S", 120))
    pending, empty_since = set(futures), None
    while pending:
        try:
            done, pending = wait(pending, timeout=min(10.0, grace / 2),
                                 return_when="FIRST_COMPLETED")
            tick(len(done))
        except TimeoutError:
            pass
        if not pending:
            break
        if client.nthreads():
            empty_since = None
            continue
        empty_since = empty_since or time.monotonic()
        if time.monotonic() - empty_since > grace:
            local = not os.environ.get("DATAMILL_DASK_ADDRESS")
            if local:
                shutdown()  # the next call starts a fresh LocalCluster
            raise DaskClusterLost(f"no Dask worker for {grace:.0f}s with {len(pending)} "
                                  f"shard(s) pending")


def release_local() -> None:
    """Stop a LocalCluster this process started (a remote cluster is left alone).

    Called before the GPU stages: on a small machine the idle workers' heartbeats wake often
    enough to stall torch's OpenMP threads (training measured ~2x slower with them up)."""
    if _client is not None and not os.environ.get("DATAMILL_DASK_ADDRESS"):
        shutdown()


def shutdown() -> None:
    global _client
    if _client is not None:
        cluster = _client.cluster
        _client.close()
        if cluster is not None:
            cluster.close()
        _client = None
