"""The generic stage runner: the same steps for every stage, whatever it does.

version (tasks/identity.py over the stage's config + its inputs' versions) -> a lock per
stage version -> cache hit (the manifest *and* its files) or the stage's ``run`` through an
executor (shards on Dask, or on a pool of Ray actors when the stage asks for GPUs, with the
same per-shard resume markers; single tasks on Dask; single actors on Ray) -> the manifest,
written last -> ``docs_in = kept + rejected`` checked -> catalog rows -> Prefect artifacts.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from infra import dask as dask_engine
from infra import ray as ray_engine
from tasks.catalog import Catalog
from tasks.identity import versioned
from tasks.profile import summarize
from tasks.remote import Mirror
from tasks.stage import Manifest, Resources, RunInfo, Stage, Upstream, output_files
from tasks.store import StageDir, run_marked, version_of


class AccountingError(RuntimeError):
    """A stage's docs_in != docs_kept + docs_rejected: something was lost or doubled."""


@dataclass
class RunContext:
    run_id: str
    recipe: Any
    recipe_path: str
    data_root: Path
    catalog: Catalog
    info: RunInfo | None = None

    def __post_init__(self) -> None:
        if self.info is None:
            self.info = RunInfo(self.run_id, self.recipe, self.data_root, self.catalog,
                                secrets=_secret)


def _secret(name: str) -> str:
    """A Prefect Secret block's value, resolved in the flow; never logged or stored."""
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())


class Engines:
    """The executor a stage's ``run`` gets: Dask for CPU work, Ray for GPU work."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.profiles: list[dict[str, Any]] = []  # one per shard run (or found done)

    def shards(self, out: StageDir, fn: Callable[..., dict[str, Any]],
               jobs: Sequence[tuple[str, tuple[Any, ...]]], desc: str,
               resources: Resources | None = None) -> list[dict[str, Any]]:
        """fn over shard jobs [(key, args)], skipping shards an earlier attempt finished."""
        res = resources or self.resources
        results: dict[str, dict[str, Any]] = {}
        todo = []
        for key, args in jobs:
            done = out.shard_done(key)
            if done is not None:
                results[key] = done
            else:
                todo.append((key, args))
        if todo:
            calls = [(str(out.shard_marker(k)), fn, *a) for k, a in todo]
            if res.gpus > 0:  # a pool of Ray actors (one GPU each when the cluster has them)
                self._release_for_gpu_stage()
                got = ray_engine.map_shards(run_marked, calls, res.cpus, res.gpus)
            else:
                got = dask_engine.map_shards(run_marked, calls, desc)
            results.update({k: r for (k, _), r in zip(todo, got, strict=True)})
        self.profiles += [dict(results[k].get("profile") or {}, desc=desc, shard=k)
                          for k, _ in jobs if isinstance(results[k], dict)]
        return [results[k] for k, _ in jobs]

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], desc: str
            ) -> list[Any]:
        return dask_engine.map_shards(fn, list(jobs), desc)

    def task(self, fn: Callable[..., Any], *args: Any, desc: str = "task") -> Any:
        return dask_engine.map_shards(fn, [args], desc)[0]

    def _release_for_gpu_stage(self) -> None:
        # the cores go to training: only when a GPU stage computes (a cached one keeps Dask up
        # for the next run in this process)
        if self.resources.gpus > 0:
            dask_engine.release_local()

    def actor(self, target: str, *args: Any, **kwargs: Any) -> Any:
        self._release_for_gpu_stage()
        ray = ray_engine.init()
        ref = ray_engine.stage_task().remote(target, *args, **kwargs)
        try:
            return ray.get(ref)
        except BaseException:
            ray.cancel(ref, force=True)  # an interrupted flow leaves no stage running
            raise

    def distributed(self, target: str, kwargs: dict[str, Any], workers: int,
                    storage: Path) -> None:
        self._release_for_gpu_stage()
        ray_engine.run_distributed(target, kwargs, workers, storage)

    def gpus(self) -> float:
        return ray_engine.gpus_available()

    def release_cpu(self) -> None:
        dask_engine.release_local()


@contextmanager
def stage_lock(sd: StageDir) -> Iterator[None]:
    """One writer per stage version (another run of the same version waits, then finds the
    cache); the kernel drops the lock when its holder dies."""
    path = sd.path.parent / f".{sd.version}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached(sd: StageDir) -> Manifest | None:
    """The stored manifest, if it and every file it names exist; a manifest whose files are
    gone is set aside (the stage runs again) instead of being trusted."""
    if not sd.done():
        return None
    m = Manifest.from_dict(sd.manifest())
    missing = [f for f in m.extra.get("present", []) if not (sd.data_root / f).exists()]
    if not missing:
        return m
    sd.manifest_path.rename(sd.path / f"manifest.stale-{int(time.time())}.json")
    shutil.rmtree(sd.path / "_shards", ignore_errors=True)
    return None


def execute_stage(ctx: RunContext, stage: Stage, up: Upstream, variant: Any = None
                  ) -> Manifest:
    """One stage execution, content-addressed, the same way for every stage."""
    log = get_run_logger()
    run = ctx.info
    assert run is not None
    run.log = log
    config = versioned(stage.config(run, variant))
    inputs = stage.version_inputs(run, up, variant)
    version = version_of(stage.name, config, inputs, code=stage.code_version)
    sd = StageDir(ctx.data_root, stage.name, version)
    t0 = time.perf_counter()
    with stage_lock(sd):
        m = cached(sd)
        if m is not None:
            m.cached = True
            log.info("%s %s: cached (%d docs in, %d kept)", stage.name, version, m.docs_in,
                     m.docs_kept)
        else:
            sd.path.mkdir(parents=True, exist_ok=True)
            engines = Engines(stage.resources)
            body = stage.run(run, up, sd, engines, variant)
            outs = output_files(body.get("outputs", {}))
            # what the manifest vouches for: a later cache hit checks these still exist
            present = sorted(f for f in outs if (ctx.data_root / f).exists())
            m = Manifest.from_dict(sd.finish({"config": config, "inputs": inputs,
                                              "seconds": time.perf_counter() - t0,
                                              **body, "present": present,
                                              "profile": stage_profile(engines.profiles)}))
            log.info("%s %s: %d docs in, %d kept, %d rejected in %.1fs", stage.name, version,
                     m.docs_in, m.docs_kept, m.docs_rejected, m.seconds)
            if m.extra.get("incomplete"):  # e.g. LLM requests that failed transiently
                # not a cache hit next run (it redoes what is missing); later stages get
                # another version, so none of them is cached on this partial output either
                log.warning("%s %s: incomplete: %s", stage.name, version, m.extra["incomplete"])
                stamp = int(time.time())
                sd.manifest_path.rename(sd.path / f"manifest.partial-{stamp}.json")
                m.version = f"{version}+partial-{stamp}"
    if m.docs_in != m.docs_kept + m.docs_rejected:
        raise AccountingError(f"{stage.name} {version}: {m.docs_in} in != {m.docs_kept} kept "
                              f"+ {m.docs_rejected} rejected")
    ctx.catalog.record_stage(ctx.run_id, m.to_dict(), time.perf_counter() - t0, str(sd.path),
                             m.cached)
    mirror = Mirror.of(ctx.data_root)
    if mirror is not None:  # a bucket-backed root: the stage's files, its manifest, catalog
        log.info("%s %s: %d files pushed to %s", stage.name, version, mirror.push(), mirror.url)
    stage.after(run, up, m, variant)
    publish_artifacts(run)
    return m


def stage_profile(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Per shard step (``desc``: score, filter, ...) the summed shard profiles, and the rows."""
    steps = {d: summarize(p for p in shards if p["desc"] == d)
             for d in dict.fromkeys(p["desc"] for p in shards)}
    return {"steps": steps, "shards": shards}


def publish_artifacts(run: RunInfo) -> None:
    for a in run.artifacts:
        if a.table is not None:
            create_table_artifact(key=a.key, table=a.table, description=a.description)
        else:
            create_markdown_artifact(key=a.key, markdown=a.markdown or "",
                                     description=a.description)
    run.artifacts.clear()


# failures of the machinery, not of the data: a retry resumes from the shard markers
TRANSIENT = {"KilledWorker", "CommClosedError", "StreamClosedError", "FutureCancelledError",
             "RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
             "NodeDiedError", "ObjectLostError", "OwnerDiedError", "RaySystemError",
             "ConnectionResetError", "BrokenPipeError", "DaskClusterLost"}
RETRIES = 2


def transient(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a lost worker or actor."""
    seen = 0
    while exc is not None and seen < 10:
        if TRANSIENT & {c.__name__ for c in type(exc).__mro__}:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except BaseException as e:  # the state holds the stage's exception
        if transient(e):
            get_run_logger().warning("retrying after a lost worker or actor: %r", e)
            return True
    return False


def run_stage(ctx: RunContext, stage: Stage, up: Upstream) -> list[Manifest]:
    """Every execution of a stage (one per variant) as a Prefect task named after it;
    retried (from its shard markers) when an engine loses a worker or an actor."""
    out = []
    for variant in stage.variants(ctx.info, up):  # type: ignore[arg-type]
        t = task(execute_stage, name=stage.name, cache_policy=NO_CACHE, retries=RETRIES,
                 retry_delay_seconds=2, retry_condition_fn=_retry_if_transient)
        out.append(t(ctx, stage, up, variant))
    return out
