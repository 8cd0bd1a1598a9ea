"""The stages of a run, in order: the one list the flow, ``--until``, ``datamill stages`` and
the docs come from. A recipe inserts its own stages (``stages.extra``: a ``Stage`` subclass by
import path, ``after`` a stage here) without touching this file."""

from __future__ import annotations

from typing import Any

from tasks.stage import Stage
from tasks.stages.evaluate import Baseline, Evaluate
from tasks.stages.filter import Filter, Score
from tasks.stages.ingest import Ingest
from tasks.stages.rewrite import Recycle, Rewrite
from tasks.stages.tokenize import Tokenize
from tasks.stages.train import Train

PIPELINE: list[type[Stage]] = [Ingest, Rewrite, Score, Filter, Recycle, Tokenize, Train,
                               Evaluate]
EXTRA_KINDS: list[type[Stage]] = [Baseline]  # run by flows other than the main one

# the names `--until` takes, in order (score and recycle belong to filter)
STAGES: list[str] = list(dict.fromkeys(s.until_name() for s in PIPELINE))


def all_stage_classes() -> list[type[Stage]]:
    return PIPELINE + EXTRA_KINDS


def code_version(name: str) -> int:
    for cls in all_stage_classes():
        if cls.name == name:
            return cls.code_version
    raise KeyError(f"no stage {name!r}")


def build(recipe: Any) -> list[Stage]:
    """This recipe's stages, in order: the built-in list plus ``stages.extra``."""
    stages: list[Stage] = [cls() for cls in PIPELINE]
    for extra in recipe.stages.extra:
        stage = extra.build()
        # a group's name, or a stage's own (an extra stage inside a group: after: embed)
        names = list(dict.fromkeys(n for s in stages for n in (s.until_name(), s.name)))
        if extra.after not in names:
            raise ValueError(f"stages.extra {extra.use}: after {extra.after!r} is not a stage "
                             f"of this run ({names})")
        at = max(i for i, s in enumerate(stages) if extra.after in (s.until_name(), s.name))
        stages.insert(at + 1, stage)
    return stages


def until_names(recipe: Any) -> list[str]:
    return list(dict.fromkeys(s.until_name() for s in build(recipe)))


def describe(recipe: Any = None) -> list[dict[str, Any]]:
    """The stage contract as rows (``datamill stages``): the built-in list, or a recipe's."""
    stages = build(recipe) if recipe is not None else [cls() for cls in PIPELINE]
    return [{"stage": s.name, "until": s.until_name(), "code_version": s.code_version,
             "recipe_key": s.recipe_key or f"stages.extra ({type(s).__module__})",
             "inputs": list(s.inputs), "outputs": list(s.outputs), "work": list(s.work),
             "resources": str(s.resources), "description": s.description} for s in stages]
