"""The Ray engine for the GPU stages (training, evaluation, local-model rewriting).

Local Ray by default (loopback, no dashboard); ``DATAMILL_RAY_ADDRESS`` joins a cluster. A stage
runs as a Ray task that asks for a GPU only when the cluster has one, so the same code runs on
this machine's CPUs; data-parallel training runs under Ray Train's TorchTrainer
(``run_distributed``), on GPUs or CPUs alike.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
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


def run_stage(target: str, *args: Any, **kwargs: Any) -> Any:
    """Calls ``module:function`` with the given args: the body of a GPU stage's Ray task."""
    module, func = target.split(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), func)
    return fn(*args, **kwargs)


def stage_task(num_cpus: float | None = None) -> Any:
    """``run_stage`` as a Ray remote function with one GPU when there is one, else the CPUs.

    A task, not an actor: on CPUs Ray hands the next stage an idle worker process that ran one
    before, with torch and transformers already imported (seconds per stage); a task that
    holds a GPU gets a fresh process each time (``max_calls=1``), so its memory is returned.
    The resources are the stage's only while it runs."""
    ray = init()
    gpus = 1.0 if gpus_available() >= 1 else 0.0
    if num_cpus is not None:
        cpus = num_cpus
    elif gpus:
        cpus = 1.0
    else:
        # a task runs on one node: on a cluster, the largest node's CPUs, not the sum
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        cpus = float(max(nodes) if nodes else ray.cluster_resources().get("CPU", 1))
    # Dask's LocalCluster sets OMP_NUM_THREADS=1 in this process's environment, which a local
    # Ray started afterwards inherits: give the stage's torch the threads it was granted.
    threads = str(max(1, int(cpus)))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return ray.remote(num_gpus=gpus, num_cpus=cpus, max_calls=1 if gpus else 0,
                      max_retries=0)(run_stage).options(runtime_env={"env_vars": env})


class ShardActor:
    """One worker of a GPU stage's shard pool: runs ``fn(*args)`` per shard; the model a
    stage loads stays in this process between shards (per-worker setup)."""

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


def map_shards(fn: Callable[..., Any], calls: list[tuple[Any, ...]], cpus: float = 1.0,
               gpus: float = 1.0) -> list[Any]:
    """fn(*a) for each tuple on a pool of Ray actors, results in input order: one actor per
    GPU when the cluster has GPUs (``gpus`` each), else one per ``cpus`` of the cluster."""
    ray = init()
    from ray.util import ActorPool

    have = gpus_available()
    per_gpu = gpus if have >= gpus > 0 else 0.0
    if per_gpu:
        n = max(1, int(have // per_gpu))
    else:
        n = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1.0)))
    n = min(n, len(calls))
    remote = ray.remote(num_cpus=cpus, num_gpus=per_gpu)(ShardActor)
    actors = [remote.remote() for _ in range(n)]
    try:
        pool = ActorPool(actors)
        return list(pool.map(lambda a, c: a.call.remote(fn, *c), calls))
    finally:
        for a in actors:
            ray.kill(a)


def _ddp_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: torch.distributed is set up; call the target like a stage task."""
    run_stage(config["target"], **config["kwargs"])


def run_distributed(target: str, kwargs: dict[str, Any], num_workers: int, storage: Path
                    ) -> None:
    """Run ``module:function(**kwargs)`` on `num_workers` Ray Train workers under a
    TorchTrainer: DDP over one GPU each when the cluster has that many, else gloo on CPUs (one
    core each). The target writes its own results (the trainer's rank 0 does); Ray Train's
    run state goes to `storage`. Raises if any worker fails."""
    init()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = gpus_available() >= num_workers
    # one core per CPU worker, torch's threads to match (a local Ray may inherit
    # OMP_NUM_THREADS=1 from Dask, see stage_task)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config={"target": target, "kwargs": kwargs},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name="ddp", storage_path=str(Path(storage).resolve()),
                             worker_runtime_env={"env_vars": env}),
    )
    trainer.fit()


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
