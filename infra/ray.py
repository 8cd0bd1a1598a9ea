"""The Ray engine for the GPU stages (training, evaluation, local-model rewriting).

Local Ray by default (loopback, no dashboard); ``DATAMILL_RAY_ADDRESS`` joins a cluster. A stage
runs inside an actor that asks for a GPU only when the cluster has one, so the same code runs on
this machine's CPUs.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any


def init() -> Any:
    import ray

    if ray.is_initialized():
        return ray
    address = os.environ.get("DATAMILL_RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(
            num_cpus=int(os.environ.get("DATAMILL_RAY_CPUS", os.cpu_count() or 1)),
            include_dashboard=False,
            object_store_memory=256 * 2**20,
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
        )
    return ray


def gpus_available() -> float:
    ray = init()
    return float(ray.cluster_resources().get("GPU", 0.0))


class StageActor:
    """Holds the process a GPU stage runs in: calls ``module:function`` with the given args."""

    def run(self, target: str, *args: Any, **kwargs: Any) -> Any:
        module, func = target.split(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), func)
        return fn(*args, **kwargs)


def start_actor(num_cpus: float | None = None) -> Any:
    """A StageActor with one GPU when there is one, else the CPUs."""
    ray = init()
    gpus = 1.0 if gpus_available() >= 1 else 0.0
    if num_cpus is not None:
        cpus = num_cpus
    elif gpus:
        cpus = 1.0
    else:
        # leave one core to the flow process and Prefect's API: torch's OpenMP threads stall
        # whenever a busy neighbour preempts one of them (measured ~2x slower on 2 cores)
        cpus = float(ray.cluster_resources().get("CPU", 1))
    # Dask's LocalCluster sets OMP_NUM_THREADS=1 in this process's environment, which a local
    # Ray started afterwards inherits: give the actor's torch the threads it was granted.
    threads = str(max(1, int(cpus)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return ray.remote(num_gpus=gpus, num_cpus=cpus)(StageActor).options(
        runtime_env={"env_vars": env}).remote()


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
