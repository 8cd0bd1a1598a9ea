"""The recipe reference (docs/recipes.md), generated from the pydantic models of
tasks/recipe.py (and tasks/recipe_rewrite.py) so the two cannot drift apart:
``python -m tasks.recipe > docs/recipes.md``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tasks.corpus import get_rule
from tasks.filters.base import get_filter
from tasks.identity import ByContent, Operational, Scored
from tasks.recipe import (
    ContractsConfig,
    EvaluateConfig,
    ExactDedupConfig,
    ExtraStage,
    FilterStageConfig,
    IngestConfig,
    InputConfig,
    MinHashConfig,
    Recipe,
    RefreshConfig,
    RewriteConfig,
    StagesConfig,
    TokenizeConfig,
    UrlDedupConfig,
    _train_config_cls,
)


def _marks(f: Any) -> str:
    """What a field's identity marker says (tasks/identity.py)."""
    kinds = {Operational: "operational: never changes the version",
             Scored: "score parameter", ByContent: "versioned by the file's content"}
    said = [text for m in f.metadata for k, text in kinds.items() if isinstance(m, k)]
    return f" *({'; '.join(said)})*" if said else ""


def _doc_models() -> list[tuple[str, type[BaseModel]]]:
    from tasks.filters.base import REGISTRY
    from tasks.train.options import MixingConfig, MixTemperature, OrderConfig, StabilityConfig

    models: list[tuple[str, type[BaseModel]]] = [
        ("recipe", Recipe), ("input", InputConfig), ("stages", StagesConfig),
        ("stages.ingest", IngestConfig), ("stages.rewrite", RewriteConfig),
        ("stages.filter", FilterStageConfig), ("stages.filter.exact_dedup", ExactDedupConfig),
        ("stages.filter.minhash_dedup", MinHashConfig),
        ("stages.filter.url_dedup", UrlDedupConfig),
        ("stages.filter.corpus.top_k", get_rule("top_k").Config),
    ]
    models += [(f"stages.filter.filters.{n}", get_filter(n).Config) for n in REGISTRY]
    models += [("stages.tokenize", TokenizeConfig), ("stages.train", _train_config_cls()),
               ("stages.train.mix_temperature", MixTemperature),
               ("stages.train.mixing", MixingConfig), ("stages.train.order", OrderConfig),
               ("stages.train.stability", StabilityConfig),
               ("stages.evaluate", EvaluateConfig), ("stages.extra[]", ExtraStage),
               ("contracts", ContractsConfig),
               ("refresh", RefreshConfig)]
    return models


def _type_name(t: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{inner}]" if inner else name
    if t is type(None):
        return "null"
    return getattr(t, "__name__", str(t))


def reference_markdown() -> str:
    """The recipe reference (docs/recipes.md), generated from the pydantic models so the two
    cannot drift apart: a test compares them."""
    out = ["# Recipe reference", "",
           "Generated from the pydantic models by `python -m tasks.recipe > docs/recipes.md`;",
           "a test fails when this page and the models disagree. Unknown keys are errors.", ""]
    for where, model in _doc_models():
        out += [f"## `{where}`", ""]
        doc = model.__dict__.get("__doc__")
        if doc:
            out += [doc.strip().splitlines()[0], ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, f in model.model_fields.items():
            ann = _type_name(f.annotation).replace("|", "\\|")
            if f.is_required():
                default = "**required**"
            else:
                value = f.get_default(call_default_factory=True)
                if isinstance(value, BaseModel):
                    value = value.model_dump()
                default = f"`{value!r}`".replace("|", "\\|") if len(repr(value)) < 60 \
                    else "see below"
            out.append(f"| `{f.alias or name}` | `{ann}` | {default} | "
                       f"{f.description or ''}{_marks(f)} |")
        out.append("")
    return "\n".join(out)


