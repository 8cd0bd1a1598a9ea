"""Which config fields change a stage's output: one idiom, declared on the config models.

Every field of a config model is part of the version of the stage it configures, unless its
annotation says otherwise:

- ``Annotated[T, OPERATIONAL]``: *where and how fast* (URLs, concurrency, timeouts, retries,
  prices, log cadence). Never part of a version: changing it reuses the stage's output.
- ``Annotated[T, SCORED]``: on a filter's or corpus rule's config, a parameter that changes the
  *scores* (the score step's version); unmarked fields there are thresholds, which only the
  decision step's version sees — so changing a threshold never recomputes a score.
- ``Annotated[str | None, BY_CONTENT]`` (or ``ByContent(resolve)``): a file the config points
  to (a blocklist, a tokenizer, a prompt file, a reference set, a model). Its *content* hash is
  versioned, not its path: moving the file changes nothing, editing it changes the version.

``identity(model)`` is the versioned view of a config (nested models and dicts of models
included); ``identity(model, scope="score")`` keeps only SCORED fields. A test walks every
stage's config model and checks each field's effect on the version against its marker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class Operational:
    """Marker: the field says where or how fast, never what; not versioned."""


@dataclass(frozen=True)
class Scored:
    """Marker: the field changes a filter's scores (versioned in the score step too)."""


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's content, streamed: the one file-hash helper of the project."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ByContent:
    """Marker: the field names a file (or something a resolver turns into content, e.g. a
    built-in prompt's name); its content hash is versioned, not the value."""

    resolve: Callable[[Any], str] | None = None

    def digest(self, value: Any) -> str | None:
        if value is None:
            return None
        if self.resolve is not None:
            return self.resolve(value)
        return file_digest(value)


OPERATIONAL = Operational()
SCORED = Scored()
BY_CONTENT = ByContent()

# LLM client settings: where and how fast, never the version (pydantic merges the Field)
OpText = Annotated[str | None, OPERATIONAL]
OpCount = Annotated[int, OPERATIONAL, Field(ge=1)]
OpSeconds = Annotated[float, OPERATIONAL, Field(gt=0)]
OpPrice = Annotated[float, OPERATIONAL, Field(ge=0)]


def _marker(model: type[BaseModel], name: str, kind: type) -> Any:
    for m in model.model_fields[name].metadata:
        if isinstance(m, kind):
            return m
    return None


def is_operational(model: type[BaseModel], name: str) -> bool:
    return _marker(model, name, Operational) is not None


def is_scored(model: type[BaseModel], name: str) -> bool:
    return _marker(model, name, Scored) is not None


def _value(v: Any, scope: str) -> Any:
    if isinstance(v, BaseModel):
        return identity(v, scope)  # type: ignore[arg-type]
    if isinstance(v, dict):
        return {k: _value(x, scope) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_value(x, scope) for x in v]
    return v


def identity(model: BaseModel | None, scope: Literal["all", "score"] = "all") -> Any:
    """The versioned view of a config model: operational fields dropped, files by content,
    nested models recursed; with scope="score", only SCORED fields (and nested models' SCORED
    fields) are kept."""
    if model is None:
        return None
    cls = type(model)
    out: dict[str, Any] = {}
    for name in cls.model_fields:
        if is_operational(cls, name):
            continue
        value = getattr(model, name)
        content = _marker(cls, name, ByContent)
        if scope == "score" and not is_scored(cls, name) and not isinstance(value, BaseModel):
            continue
        if content is not None:
            out[name] = {"sha256": content.digest(value)} if value is not None else None
        else:
            out[name] = _value(value, scope)
    return out


def versioned(config: Any) -> Any:
    """``identity`` of whatever a stage's ``config()`` returns: a model, a dict or list of
    models and plain values, or None."""
    return _value(config, "all")
