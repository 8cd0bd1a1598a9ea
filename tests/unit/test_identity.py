"""One cache-identity idiom: every config field changes its stage's version unless marked
OPERATIONAL; files count by content. This walks every stage's config model (and every
registered filter's and corpus rule's) and checks each field against its marker."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from tasks import recipe as R
from tasks.corpus import REGISTRY as RULES
from tasks.corpus import get_rule
from tasks.filters.base import REGISTRY as FILTERS
from tasks.filters.base import get_filter
from tasks.identity import ByContent, identity, is_operational, versioned
from tasks.stage import RunInfo, Upstream
from tasks.stages import PIPELINE
from tasks.store import version_of


def _train() -> type[BaseModel]:
    from tasks.train import TrainConfig

    return TrainConfig


def models() -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = [R.InputConfig, R.IngestConfig, R.RewriteConfig,
                                  R.FilterStageConfig, R.TokenizeConfig, R.EvaluateConfig,
                                  _train()]
    out += [get_filter(n).Config for n in FILTERS]
    out += [get_rule(n).Config for n in RULES]
    return list(dict.fromkeys(out))


def _files(tmp: Path) -> tuple[str, str, str]:
    a, b, c = tmp / "a.txt", tmp / "b.txt", tmp / "sub" / "a-copy.txt"
    c.parent.mkdir(exist_ok=True)
    a.write_text("example.com\nspam words\n")
    b.write_text("other.org\nmore words\n")
    c.write_text(a.read_text())
    return str(a), str(b), str(c)


def _required(model: type[BaseModel], files: tuple[str, str, str]) -> dict[str, Any]:
    """Values for required fields (a file for a path, an input glob, a score column)."""
    given = {"paths": ["data/sample/sample.jsonl"], "path": files[0],
             "column": "gopher_quality_alpha_words_frac", "target": {"source": "wiki"},
             "columns": ["gopher_quality_mean_word_length"]}
    out = {n: given[n] for n, f in model.model_fields.items() if f.is_required()}
    if model is get_rule("top_k").Config:
        out["percent"] = 10.0  # one of percent / quantile
    return out


# fields valid only together with another: changed as a pair
COUPLED: dict[str, dict[str, Any]] = {
    "num_perm": {"num_perm": 200, "bands": 40}, "bands": {"bands": 25, "rows": 10},
    "rows": {"rows": 10, "bands": 25}, "quantile": {"quantile": 0.5, "percent": None},
}


def _candidates(ann: Any, value: Any, files: tuple[str, str, str]) -> list[Any]:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _candidates(args[0], value, files)
    if origin in (typing.Union, types.UnionType):
        out = [] if value is None else [None]
        for a in args:
            if a is not type(None):
                out += _candidates(a, None if value is None else value, files)
        return out
    if origin is typing.Literal:
        return [a for a in args if a != value]
    if ann is bool:
        return [not value]
    if ann is int:
        v = value or 0
        return [v + 1, v * 2, v - 1, 1, 2, 300, 4096]
    if ann is float:
        v = value or 0.0
        return [v * 0.5, v + 0.25, 0.5, 0.1, 0.9, v * 2, 1.0]
    if ann is str:
        return [files[1], "wrap_qa", "small", "gopher_quality_mean_word_length", "x"] \
            if value != "x" else ["y"]
    if origin is list:
        inner = _candidates(args[0], None, files) if args else ["x"]
        return [[*(value or []), c] for c in inner[:3]] + [[c] for c in inner[:3]] + [[]]
    if origin is dict:
        return [{**(value or {}), "en": ["zz"]}, {"zz": ["a", "b"]}]
    return []


def _other(model: type[BaseModel], name: str, base: dict[str, Any], files: Any) -> Any | None:
    """A valid instance differing from ``base`` in field ``name`` only, or None."""
    field = model.model_fields[name]
    value = model(**base).model_dump()[name]
    ann = field.annotation
    if name in COUPLED:
        try:
            return model(**{**base, **COUPLED[name]})
        except ValidationError:
            pass
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return None  # a mapping of nested models: their own fields are walked
    for cand in _candidates(ann, value, files):
        try:
            other = model(**{**base, name: cand})
        except (ValidationError, ValueError, TypeError):
            continue
        if other.model_dump()[name] != value:
            return other
    return None


@pytest.mark.parametrize("model", models(), ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_every_field_changes_the_version_unless_operational(model: type[BaseModel],
                                                            tmp_path: Path) -> None:
    files = _files(tmp_path)
    base = _required(model, files)
    ref = identity(model(**base))
    unchecked = []
    for name in model.model_fields:
        other = _other(model, name, base, files)
        if other is None:
            unchecked.append(name)
            continue
        changed = identity(other) != ref
        marked = "operational" if is_operational(model, name) else "versioned"
        assert changed != is_operational(model, name), (
            f"{model.__name__}.{name}: marked {marked} but changing it "
            f"{'changes' if changed else 'does not change'} the version")
    # nested models and mappings of them are walked on their own; nothing else is skipped
    for name in unchecked:
        value = getattr(model(**base), name)
        assert isinstance(value, BaseModel | dict) or value is None, f"{model.__name__}.{name}"


@pytest.mark.parametrize("model", models(), ids=lambda m: f"{m.__module__}.{m.__name__}")
def test_files_count_by_content_not_path(model: type[BaseModel], tmp_path: Path) -> None:
    a, b, a_copy = _files(tmp_path)
    for name, f in model.model_fields.items():
        marker = next((m for m in f.metadata if isinstance(m, ByContent)), None)
        if marker is None or marker.resolve is not None:
            continue
        base = _required(model, (a, b, a_copy))
        same = identity(model(**{**base, name: a})) == identity(model(**{**base, name: a_copy}))
        assert same, f"{model.__name__}.{name}: a moved file changed the version"
        assert identity(model(**{**base, name: a})) != identity(model(**{**base, name: b}))


def test_every_stage_versions_its_recipe_section(tmp_path: Path) -> None:
    """A versioned change in each stage's recipe section changes that stage's version; an
    operational one does not."""
    raw = {"name": "t", "input": {"paths": ["data/sample/sample.jsonl"]}}
    run = RunInfo("r", R.parse_recipe(raw), tmp_path, None)
    up = Upstream()

    def version(stage: Any, recipe: R.Recipe) -> str:
        info = RunInfo("r", recipe, tmp_path, None)
        variant = stage.variants(info, up)[0] if stage.name == "train" else None
        return version_of(stage.name, versioned(stage.config(info, variant)), [],
                          code=stage.code_version)

    edits = {"ingest": ("ingest", {"max_doc_chars": 10}),
             "rewrite": ("rewrite", {"backend": "noise"}),
             "score": ("filter", {"filters": {"gopher_quality": {"stop_words": {"en": ["x"]}}}}),
             "filter": ("filter", {"filters": {"gopher_quality": {"min_words": 3}}}),
             "recycle": None, "tokenize": ("tokenize", {"seq_len": 64}),
             "train": ("train", {"lr": 0.01}), "evaluate": ("evaluate", {"max_items": 3})}
    for cls in PIPELINE:
        edit = edits[cls.name]
        if edit is None:
            continue
        stage, changed = cls(), R.parse_recipe({**raw, "stages": {edit[0]: edit[1]}})
        assert version(stage, run.recipe) != version(stage, changed), cls.name
    # an operational field of an LLM rewrite reuses its output
    llm = {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
    a = R.parse_recipe({**raw, "stages": {"rewrite": llm}})
    b = R.parse_recipe({**raw, "stages": {"rewrite": {**llm, "base_url": "http://h:2/v1",
                                                      "max_concurrency": 64}}})
    rw = next(c for c in PIPELINE if c.name == "rewrite")()
    assert version(rw, a) == version(rw, b)
    # a threshold does not change the score step; a score parameter does
    score = next(c for c in PIPELINE if c.name == "score")()
    t = R.parse_recipe({**raw, "stages": {"filter": {"filters": {"gopher_quality":
                                                                 {"min_words": 3}}}}})
    assert version(score, run.recipe) == version(score, t)
