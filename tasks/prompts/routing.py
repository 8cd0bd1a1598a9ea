"""Prompts routed by a document's quality bucket, as Nemotron-CC rewrites (Su et al. 2024):
low-quality documents are rephrased in Wikipedia style (their noise removed), high-quality
ones get the four knowledge prompts (diverse QA pairs, distill, extract knowledge, knowledge
list) to multiply their unique tokens.

A ``Routing`` maps inclusive ranges of an integer column (``quality_bucket``, added by the
``quality_buckets`` corpus rule in the filter stage) to one or more prompts: a document gets
one rewrite attempt per prompt of the first range holding its bucket, none when no range
holds it or its bucket is null. The built-in ``nemotron_cc_routed`` splits the 20 buckets as
NeMo Curator's Nemotron-CC pipeline documents it: buckets 0-11 -> ``nemotron_wikipedia``,
12-19 -> the four knowledge prompts. A routing file (YAML) sets its own ranges:

    route_by: quality_bucket          # optional; the default
    routes:
      - {buckets: [0, 11], prompts: [nemotron_wikipedia]}
      - {buckets: [18, 19], prompts: [nemotron_diverse_qa, nemotron_distill]}

Each prompt is a built-in name or a prompt file. The routing's digest covers the column, the
ranges and every prompt's content, so it versions the stage like a single prompt does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUCKET_COLUMN = "quality_bucket"
HIGH_PROMPTS = ("nemotron_diverse_qa", "nemotron_distill", "nemotron_extract_knowledge",
                "nemotron_knowledge_list")


@dataclass(frozen=True)
class Route:
    low: int
    high: int  # inclusive
    prompts: tuple[Any, ...]  # tasks.prompts.Prompt


@dataclass(frozen=True)
class Routing:
    name: str
    routes: tuple[Route, ...]
    column: str = BUCKET_COLUMN
    family: str = "routed"

    def prompts_for(self, value: int | None) -> tuple[Any, ...]:
        """The prompts of the first range holding ``value``; none for a null value."""
        if value is None:
            return ()
        for r in self.routes:
            if r.low <= value <= r.high:
                return r.prompts
        return ()

    def prompt_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.routes:
            for p in r.prompts:
                seen[p.name] = None
        return list(seen)

    def digest(self) -> str:
        blob = json.dumps({"column": self.column, "routes": [
            [r.low, r.high, [p.digest() for p in r.prompts]] for r in self.routes]},
            sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def builtin_routings() -> dict[str, Routing]:
    from tasks.prompts import BUILTIN

    return {"nemotron_cc_routed": Routing("nemotron_cc_routed", (
        Route(0, 11, (BUILTIN["nemotron_wikipedia"],)),
        Route(12, 19, tuple(BUILTIN[n] for n in HIGH_PROMPTS))))}


def is_routing_file(raw: Any) -> bool:
    return isinstance(raw, dict) and "routes" in raw


def routing_from(raw: dict[str, Any], path: Path) -> Routing:
    """A routing file's mapping -> Routing; a bad one is a ValueError naming the file."""
    from tasks.prompts import load_prompt

    bad = sorted(set(raw) - {"routes", "route_by", "name"})
    if bad:
        raise ValueError(f"{path}: unknown key(s) {bad}; a routing file has routes, "
                         "route_by, name")
    routes = raw["routes"]
    if not isinstance(routes, list) or not routes:
        raise ValueError(f"{path}: routes must be a non-empty list")
    out = []
    for i, r in enumerate(routes):
        b = r.get("buckets") if isinstance(r, dict) else None
        names = r.get("prompts") if isinstance(r, dict) else None
        if not (isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) for x in b)
                and b[0] <= b[1]):
            raise ValueError(f"{path}: routes[{i}].buckets must be [low, high] integers, "
                             "low <= high")
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise ValueError(f"{path}: routes[{i}].prompts must be a non-empty list of "
                             "prompt names or files")
        prompts = []
        for n in names:
            p = load_prompt(n if not (path.parent / n).is_file() else str(path.parent / n))
            if isinstance(p, Routing):
                raise ValueError(f"{path}: routes[{i}] names a routing ({n}), not a prompt")
            prompts.append(p)
        if len({q.name for q in prompts}) != len(prompts):  # rewrites are named id~prompt
            raise ValueError(f"{path}: routes[{i}] names one prompt twice")
        out.append(Route(b[0], b[1], tuple(prompts)))
    column = raw.get("route_by", BUCKET_COLUMN)
    if not isinstance(column, str) or not column:
        raise ValueError(f"{path}: route_by must be a column name")
    return Routing(str(raw.get("name") or path.stem), tuple(out), column)
