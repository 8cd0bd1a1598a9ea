"""Helpers shared by the filter modules' tests: a one-column document table and probes that
score one text and read its stats, its rule decisions and the rules that fired."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa


def table(texts: list[str | None], langs: list[str | None] | None = None) -> pa.Table:
    if langs is None:
        langs = ["en"] * len(texts)
    return pa.table(
        {"text": pa.array(texts, pa.large_string()), "lang": pa.array(langs, pa.string())}
    )


def probe(module: ModuleType, config_cls: type) -> tuple[Callable[..., Any], ...]:
    """(stats, decisions, fired) for one filter module."""

    def stats(text: str | None, lang: str | None = "en", config: Any = None) -> dict:
        row = module.score(table([text], [lang]), config or config_cls()).to_pylist()[0]
        return {k.removeprefix(module.NAME + "_"): v for k, v in row.items()}

    def decisions(text: str, lang: str | None = "en", config: Any = None) -> dict:
        config = config or config_cls()
        out = module.rules(module.score(table([text], [lang]), config), config)
        return {name: arr[0].as_py() for name, arr in out.items()}

    def fired(text: str, lang: str | None = "en", config: Any = None) -> set[str]:
        return {k for k, v in decisions(text, lang, config).items() if v is True}

    return stats, decisions, fired


SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"


def sample_records() -> list[dict]:
    with SAMPLE.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def scored_together_and_alone(module: ModuleType, config: Any, texts: list[str | None],
                              langs: list[str | None]) -> tuple[list[dict], list[dict]]:
    """Score rows as one table and one by one: the two must agree row for row."""
    together = module.score(table(texts, langs), config).to_pylist()
    alone = [module.score(table([t], [la]), config).to_pylist()[0]
             for t, la in zip(texts, langs, strict=True)]
    return together, alone
