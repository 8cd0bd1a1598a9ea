"""C4's line edits: remove the lines C4's line rules reject (Raffel et al. 2020, section 2.2).

An *edit step*: it rewrites ``text`` (the kept lines, stripped, citations removed, joined by
``\\n``) and records what it did, so the filters after it in the recipe score the edited text.
The line rules and their defaults are ``c4_quality``'s (tasks/filters/c4.py); FineWeb's
pipeline keeps C4's line edits but turns off the terminal-punctuation rule
(``filter_no_terminal_punct: false``).

Score columns: ``c4_lines_removed`` (int32: lines removed), ``c4_lines_total`` (int32: lines).
Rule: ``c4_lines.all_removed`` — the edit left no text (every line removed, or no line at all).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters import text as tx
from tasks.filters.base import FilterConfig, score_schema
from tasks.filters.c4 import LineJudge, LineRules

NAME = "c4_lines"
SCORE_VERSION = 1

SCORE_SCHEMA = score_schema(NAME, removed=pa.int32(), total=pa.int32())


class Config(LineRules):
    """C4's line rules; they change the text, so every one is a score parameter."""


    reject_empty: bool = Field(True, description="reject docs the edit leaves without text")


def edit(table: pa.Table, config: FilterConfig) -> tuple[pa.Array, pa.Table]:
    """(edited text, score columns), one row per input row."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.edit needs a {__name__}.Config, got {type(config).__name__}")
    texts, langs = tx.texts_and_langs(table)
    judge = LineJudge(config)
    out: list[str] = []
    removed: list[int] = []
    total: list[int] = []
    for text, lang in zip(texts, langs, strict=True):
        kept, n_lines, _, _ = judge.kept_lines(text or "", lang)
        out.append(judge.edited(kept))
        removed.append(n_lines - len(kept))
        total.append(n_lines)
    scores = pa.Table.from_arrays(
        [pa.array(removed, pa.int32()), pa.array(total, pa.int32())], schema=SCORE_SCHEMA)
    return pa.array(out, pa.large_string()), scores


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    return edit(table, config)[1]


def rules(scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]:
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.rules needs a {__name__}.Config, got {type(config).__name__}")
    removed = tx.column(scores, f"{NAME}_removed")
    total = tx.column(scores, f"{NAME}_total")
    empty = pc.equal(removed, total)
    return {f"{NAME}.all_removed": empty if config.reject_empty
            else tx.not_applicable(scores.num_rows)}
