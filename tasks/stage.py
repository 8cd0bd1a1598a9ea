"""The stage contract: what a stage declares, what it is handed, what it returns.

A stage (a subclass of ``Stage``, one module in ``tasks/stages/`` or a user's own package)
declares:

- ``name`` (its folder under ``<data_root>/stages/`` and its catalog rows), ``code_version``
  (bump when its code changes what it writes), ``recipe_key`` (where a recipe configures it);
- ``inputs`` / ``outputs``: the named data it reads from the stages before it and writes;
- ``resources`` per shard (CPUs, GPUs, memory): a stage asking for GPUs runs its shards on a
  pool of Ray actors (GPU when the cluster has one, CPU otherwise), any other on Dask;
- ``work``: the kinds of work it does — ``shard`` (a function per shard), ``corpus`` (gather
  small keys from every shard, decide, per-shard row decisions), ``actor`` (one Ray actor, e.g.
  training);
- ``config(run)``: its config model (None = off: documents pass through, accounted for),
  versioned by ``tasks.identity`` markers;
- ``run(run, up, out, ex)``: the work, through the executor ``ex`` the runner hands it
  (``ex.shards`` resumes from per-shard markers; ``ex.task``/``ex.map`` run in Dask tasks;
  ``ex.actor`` in a Ray actor). It returns the manifest body: counts and named outputs, and
  ``incomplete`` when part of the work failed transiently (the runner then keeps the output
  for this run only: the next run is not a cache hit and redoes what is missing).

The runner (``flows/runner.py``) does the rest the same way for every stage: version, cache
hit (the manifest and its files), a lock per stage version, the manifest written last, the
catalog rows, Prefect artifacts. Nothing here imports Prefect.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from tasks.store import StageDir

Work = Literal["shard", "corpus", "actor"]


@dataclass(frozen=True)
class Resources:
    """What one shard (or the stage's actor) needs."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None

    def __str__(self) -> str:
        mem = f", {self.memory_gb:g} GiB" if self.memory_gb else ""
        gpu = f", {self.gpus:g} GPU when the cluster has one" if self.gpus else ""
        return f"{self.cpus:g} CPU{gpu}{mem}"


_CORE = ("stage", "version", "docs_in", "docs_kept", "docs_rejected", "rejections", "outputs",
         "config", "inputs", "created_at", "seconds")


@dataclass
class Manifest:
    """A stage's result: counts (``docs_in = docs_kept + docs_rejected``), named outputs
    (paths relative to the data root), what versioned it, and stage-specific ``extra``
    (evaluation results, a training summary, LLM costs). ``manifest.json`` holds
    ``to_dict()``: the core fields and the extras side by side."""

    stage: str
    version: str
    docs_in: int
    docs_kept: int
    docs_rejected: int
    outputs: dict[str, Any]
    rejections: dict[str, dict[str, int]] = field(default_factory=dict)
    config: Any = None
    inputs: list[str] = field(default_factory=list)
    created_at: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        core = {k: d[k] for k in _CORE if k in d}
        core.setdefault("rejections", {})
        return cls(**core, extra={k: v for k, v in d.items() if k not in _CORE})

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _CORE}
        out.update(self.extra)
        return out

    def output(self, name: str) -> Any:
        if name not in self.outputs:
            raise KeyError(f"stage {self.stage} has no output {name!r} "
                           f"(it has {sorted(self.outputs)})")
        return self.outputs[name]

    @property
    def kept(self) -> list[str]:
        return list(self.output("kept"))

    def files(self) -> Iterator[str]:
        """Every output path, relative to the data root (for the cache-hit check)."""
        return output_files(self.outputs)


def output_files(outputs: dict[str, Any]) -> Iterator[str]:
    for v in outputs.values():
        yield from (v if isinstance(v, list) else [v])


@dataclass
class Upstream:
    """The manifests of the stages that ran before, in order; a stage may run more than once
    (one ``train`` per seed), so each name holds a list."""

    by_stage: dict[str, list[Manifest]] = field(default_factory=dict)
    last_docs: Manifest | None = None  # the latest stage whose output is documents

    def add(self, m: Manifest, docs: bool) -> None:
        self.by_stage.setdefault(m.stage, []).append(m)
        if docs:
            self.last_docs = m

    def get(self, stage: str) -> Manifest:
        return self.by_stage[stage][-1]

    def all(self, stage: str) -> list[Manifest]:
        return list(self.by_stage.get(stage, []))

    def has(self, stage: str) -> bool:
        return bool(self.by_stage.get(stage))

    @property
    def docs(self) -> Manifest:
        if self.last_docs is None:
            raise ValueError("no documents upstream: a stage reading docs needs one before it")
        return self.last_docs


@dataclass
class RunInfo:
    """What a stage may know about the run it is part of (no Prefect)."""

    run_id: str
    recipe: Any  # tasks.recipe.Recipe
    data_root: Path
    catalog: Any  # tasks.catalog.Catalog
    log: logging.Logger | Any = field(default_factory=lambda: logging.getLogger("datamill"))
    # artifacts a stage asks the runner to publish
    artifacts: list[Artifact] = field(default_factory=list)
    # catalog writes committed only if the run completes, in one transaction with its status
    deferred: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    # resolves a secret's name to its value in the flow (a Prefect Secret block there)
    secrets: Callable[[str], str] | None = None

    def on_complete(self, method: str, *args: Any) -> None:
        """Record ``catalog.<method>(*args)`` when (and only if) the run completes."""
        self.deferred.append((method, args))

    def secret(self, name: str) -> str:
        if self.secrets is None:
            raise ValueError(f"secret {name!r} asked for, but this run has no secret store")
        return self.secrets(name)

    def abs(self, rel: str) -> str:
        return str(self.data_root / rel)


@dataclass
class Artifact:
    """A table or markdown for the run's UI; the runner turns it into a Prefect artifact."""

    key: str
    description: str
    table: list[dict[str, Any]] | None = None
    markdown: str | None = None


class Executor(Protocol):
    """How a stage's work reaches the engines; the runner implements it on Dask and Ray."""

    def shards(self, out: StageDir, fn: Callable[..., dict[str, Any]],
               jobs: Sequence[tuple[str, tuple[Any, ...]]], desc: str,
               resources: Resources | None = None) -> list[dict[str, Any]]: ...

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], desc: str
            ) -> list[Any]: ...

    def task(self, fn: Callable[..., Any], *args: Any, desc: str = "task") -> Any: ...

    def actor(self, target: str, *args: Any, **kwargs: Any) -> Any: ...

    def distributed(self, target: str, kwargs: dict[str, Any], workers: int,
                    storage: Path) -> None: ...

    def gpus(self) -> float: ...

    def release_cpu(self) -> None: ...


class Stage:
    """Base class of every stage. Subclass it, set the declarations, implement ``run``."""

    name: ClassVar[str]
    code_version: ClassVar[int] = 1
    recipe_key: ClassVar[str | None] = None
    inputs: ClassVar[tuple[str, ...]] = ("docs",)
    outputs: ClassVar[tuple[str, ...]] = ("kept",)
    resources: ClassVar[Resources] = Resources()
    work: ClassVar[tuple[Work, ...]] = ("shard",)
    produces_docs: ClassVar[bool] = True  # its "kept" output is the next stage's documents
    description: ClassVar[str] = ""

    group: ClassVar[str | None] = None  # the name `--until` knows it by (score: filter)

    def __init__(self, params: Any = None) -> None:
        self.params = params  # a plug-in stage's own config (the recipe's `with:`)

    @classmethod
    def until_name(cls) -> str:
        return cls.group or cls.name

    def enabled(self, run: RunInfo, up: Upstream) -> bool:
        return True

    def variants(self, run: RunInfo, up: Upstream) -> list[Any]:
        """One execution per item, each its own version (train: one per seed; evaluate: one
        per trained model); default one, ``None``."""
        return [None]

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        """The config that versions this execution (a pydantic model, a dict of them, or
        None = off), read through ``tasks.identity`` markers."""
        return self.params

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        """What the version depends on besides the config: by default the upstream docs."""
        return [up.docs.version]

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        raise NotImplementedError

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        """Catalog rows and artifacts once the manifest exists (cached or not)."""


class ActorStage(Stage):
    """A stage whose work is one Ray actor (GPU when the cluster has one), not documents."""

    resources: ClassVar[Resources] = Resources(cpus=1, gpus=1)
    work: ClassVar[tuple[Work, ...]] = ("actor",)
    produces_docs: ClassVar[bool] = False


def load_object(path: str) -> Any:
    """``package.module:attr`` (or ``package.module``) -> the object: how a recipe names a
    user's own filter, corpus rule or stage."""
    module, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"cannot import {module!r} (from {path!r}): {e}") from None
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module!r} has no attribute {part!r} (from {path!r})") from None
    return obj


def is_import_path(name: str) -> bool:
    return ":" in name or "." in name


def resolve(registry: dict[str, str], name: str, kind: str) -> Any:
    """A registered module by recipe key, or a user's object by import path; a KeyError that
    names what is known otherwise."""
    if name in registry:
        return importlib.import_module(registry[name])
    if is_import_path(name):
        try:
            return load_object(name)
        except ValueError as e:
            raise KeyError(str(e)) from None
    raise KeyError(f"unknown {kind} {name!r}; known: {sorted(registry)} or an import path "
                   "package.module[:attr]")
