"""Word blocklist: reject documents that contain words from a list the user supplies.

The list is a text file, one word or phrase per line (``#`` starts a comment), like the
"List of Dirty, Naughty, Obscene and Otherwise Bad Words" C4 used. A document fails when it
contains at least ``min_hits`` occurrences of listed entries, matched case-insensitively as
whole words (an entry must not be glued to letters or digits on either side). Entries in a
script written without spaces (Chinese, Japanese, Thai ...) cannot have word boundaries: set
``whole_words: false`` for such lists and entries match anywhere. One RE2 pattern over the
whole batch (Arrow kernels), no per-document Python.

Score column: ``word_blocklist_hits`` (int32). Rule: ``word_blocklist.hits``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters import text as tx
from tasks.filters.base import FilterConfig, existing_file
from tasks.identity import BY_CONTENT, SCORED

NAME = "word_blocklist"
SCORE_VERSION = 1


class Config(FilterConfig):
    path: Annotated[str, SCORED, BY_CONTENT, existing_file(NAME)] = Field(
        description="text file of blocked words/phrases, one per line (score)")
    whole_words: Annotated[bool, SCORED] = Field(
        True, description="match entries as whole words only (score)")
    min_hits: int = Field(1, ge=1, description="reject at this many occurrences")


@functools.lru_cache(maxsize=8)
def pattern(path: str, mtime_ns: int, whole_words: bool) -> str | None:
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    words = sorted({x.split("#", 1)[0].strip().lower() for x in lines} - {""},
                   key=lambda w: (-len(w), w))  # longest first: phrases before their words
    if not words:
        return None
    alt = "|".join(re.escape(w) for w in words)
    if not whole_words:
        return f"(?i)(?:{alt})"
    # RE2's \b is ASCII-only; letters/digits of every script bound a word here
    return rf"(?i)(?:^|[^\pL\pN\pM])(?:{alt})(?:$|[^\pL\pN\pM])"


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.score needs a {__name__}.Config, got {type(config).__name__}")
    pat = pattern(config.path, Path(config.path).stat().st_mtime_ns, config.whole_words)
    text = table.column("text")
    if pat is None:
        hits = pa.array([0] * table.num_rows, pa.int32())
    else:
        # a match eats the separator after it, so "bad bad" counts 1 at minimum; the rule
        # only needs "at least min_hits", and whole-word counts differ only for adjacent hits
        hits = pc.cast(pc.fill_null(pc.count_substring_regex(text, pat), 0), pa.int32())
    if isinstance(hits, pa.ChunkedArray):
        hits = hits.combine_chunks()
    return pa.table({f"{NAME}_hits": hits})


def rules(scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]:
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.rules needs a {__name__}.Config, got {type(config).__name__}")
    return {f"{NAME}.hits": tx.ge(tx.column(scores, f"{NAME}_hits"), config.min_hits)}
