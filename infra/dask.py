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
