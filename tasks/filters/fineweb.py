"""FineWeb quality filter (Penedo et al. 2024, "The FineWeb Datasets", section 3.3.4; thresholds
as in datatrove's ``FineWebQualityFilter``).

Scores are computed once per document; rules compare them with ``Config``'s thresholds, so
changing a threshold re-runs only ``rules``.

Definitions:

- *line*: a non-blank line of ``str.splitlines()`` with its trailing whitespace removed. Blank
  lines (paragraph separators) are not lines: they neither end in punctuation nor count as short
  lines, so a text whose paragraphs are separated by blank lines scores like the same text with
  single line breaks.
- *terminal punctuation*: ``Config.terminal_punct``; by default ``. ! ? …``, straight and
  typographic closing quotes, and the full stops / question / exclamation marks of other scripts
  (CJK ``。 ！ ？ ． ｡``, Arabic ``؟``, Devanagari ``। ॥``, ...; see ``text.TERMINAL_PUNCT``), so
  Chinese or Hindi prose is not taken for unpunctuated text.
- *word*: a whitespace token (``str.split()``).

Score columns (``fineweb_quality_<stat>``, float32):

- ``line_punct_ratio``: lines ending in terminal punctuation / lines.
- ``short_line_ratio``: lines of at most ``short_line_length`` (30) characters / lines.
- ``char_dup_ratio``: characters in duplicate lines (occurrences of a line that already occurred;
  the first is not a duplicate) / characters in all lines.
- ``new_line_ratio``: line breaks between lines (lines - 1) / words. Null for a language in
  ``no_space_langs`` (whitespace tokens are not words there; the rule does not apply) and for a
  text without words.

All four are null for a text without non-blank lines (empty or whitespace-only).

Rules: reject when ``line_punct_ratio <= min_line_punct_ratio`` (unless
``line_punct_exclude_zero`` and the ratio is 0), ``short_line_ratio >= max_short_line_ratio``,
``char_dup_ratio >= max_char_dup_ratio``, ``new_line_ratio > max_new_line_ratio``. (datatrove
0.10.1 compares the first three strictly, ``<`` and ``>``; so does ``compat: datatrove``.)

Deliberate differences from datatrove: datatrove splits on ``"\\n"`` and counts blank lines as
(short, unpunctuated) lines and every ``"\\n"`` in ``new_line_ratio``; here blank lines are
skipped throughout, so the decision does not depend on whether an extractor separates paragraphs
with one line break or two. Trailing whitespace (and a ``"\\r"``) does not hide a line's final
punctuation. Terminal punctuation covers other scripts (datatrove: ``. ' " ! ?``). Words are
whitespace tokens rather than the tokens of datatrove's word tokenizer (NLTK or spaCy, which also
count punctuation marks, so datatrove's ratio is a little lower). The paper gives 0.1 for the
duplicate-character threshold; datatrove's code (and FineWeb) uses 0.01, the default here.

``compat: datatrove`` replaces the definitions above with datatrove 0.10.1's (words, punctuation
sets, formulas, comparisons), for reproducing FineWeb: ``tasks/filters/compat.py``.
"""

from __future__ import annotations

from itertools import repeat
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters import compat
from tasks.filters import text as tx
from tasks.filters.base import FilterConfig, score_schema
from tasks.filters.compat import Compat
from tasks.identity import SCORED

NAME = "fineweb_quality"
SCORE_VERSION = 1

STATS: tuple[str, ...] = ("line_punct_ratio", "short_line_ratio", "char_dup_ratio",
                          "new_line_ratio")
SCORE_SCHEMA = score_schema(NAME, **dict.fromkeys(STATS, pa.float32()))


class Config(FilterConfig):
    """FineWeb's published thresholds (Penedo et al. 2024)."""

    min_line_punct_ratio: float = Field(
        0.12, ge=0, description="reject when lines ending in terminal punctuation / lines <= this"
    )
    line_punct_exclude_zero: bool = Field(
        False, description="keep documents with no punctuated line at all"
    )
    max_short_line_ratio: float = Field(
        0.67, ge=0, description="reject when short lines / lines >= this"
    )
    max_char_dup_ratio: float = Field(
        0.01, ge=0, description="reject when characters in duplicate lines / characters >= this"
    )
    max_new_line_ratio: float = Field(
        0.3, ge=0, description="reject when line breaks / words > this"
    )

    short_line_length: Annotated[int, SCORED] = Field(
        30, ge=0, description="a line of at most this many characters is short (score)"
    )
    terminal_punct: Annotated[str, SCORED] = Field(
        tx.TERMINAL_PUNCT + "…", min_length=1, description="characters that end a line (score)"
    )
    no_space_langs: Annotated[list[str], SCORED] = Field(
        default_factory=lambda: list(tx.DEFAULT_NO_SPACE_LANGS),
        description="languages written without spaces: new_line_ratio null (score)",
    )
    compat: Annotated[Compat | None, SCORED] = Field(
        None, description="datatrove: datatrove 0.10.1's scores and comparisons; "
        "terminal_punct and no_space_langs unused (docs/filters.md) (score)")


# --------------------------------------------------------------------------- score


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    """One row of ``fineweb_quality_*`` float32 columns per input row, same order."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.score needs a {__name__}.Config, got {type(config).__name__}")
    texts, langs = tx.texts_and_langs(table)
    if config.compat == compat.DATATROVE:
        rows = [compat.fineweb_quality(t or "", config.short_line_length) for t in texts]
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in STATS]
        return pa.Table.from_arrays([pa.array(c, type=pa.float32()) for c in cols],
                                    schema=SCORE_SCHEMA)
    is_no_space = tx.NoSpaceLangs(config.no_space_langs)
    terminal = tuple(config.terminal_punct)
    short_ge = config.short_line_length.__ge__  # short_ge(len(line)): len(line) <= limit

    punct: list[float | None] = []
    short: list[float | None] = []
    dup: list[float | None] = []
    new_line: list[float | None] = []
    for text, lang in zip(texts, langs, strict=True):
        lines = tx.nonblank_lines(text) if text else []
        n = len(lines)
        if n == 0:
            punct.append(None)
            short.append(None)
            dup.append(None)
            new_line.append(None)
            continue
        lens = list(map(len, lines))
        punct.append(sum(map(str.endswith, lines, repeat(terminal, n))) / n)
        short.append(sum(map(short_ge, lens)) / n)
        dup.append(tx.dup_counts(lines)[1] / sum(lens))
        if is_no_space(lang):
            new_line.append(None)
        else:
            n_words = len(text.split())
            new_line.append((n - 1) / n_words if n_words else None)

    columns = (punct, short, dup, new_line)
    arrays = [pa.array(col, type=pa.float32()) for col in columns]
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


# --------------------------------------------------------------------------- rules


def rules(scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]:
    """rule name -> BooleanArray, True where the document FAILS, null where its score is null."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.rules needs a {__name__}.Config, got {type(config).__name__}")
    c = config
    # datatrove 0.10.1 compares strictly where the default mode includes the threshold
    strict = c.compat == compat.DATATROVE
    below, above = (tx.lt, tx.gt) if strict else (tx.le, tx.ge)
    punct = tx.column(scores, f"{NAME}_line_punct_ratio")
    punct_fails = below(punct, c.min_line_punct_ratio)
    if c.line_punct_exclude_zero:
        punct_fails = pc.and_(punct_fails, tx.gt(punct, 0.0))
    return {
        f"{NAME}.line_punct_ratio": punct_fails,
        f"{NAME}.short_line_ratio": above(
            tx.column(scores, f"{NAME}_short_line_ratio"), c.max_short_line_ratio
        ),
        f"{NAME}.char_dup_ratio": above(
            tx.column(scores, f"{NAME}_char_dup_ratio"), c.max_char_dup_ratio
        ),
        f"{NAME}.new_line_ratio": tx.gt(
            tx.column(scores, f"{NAME}_new_line_ratio"), c.max_new_line_ratio
        ),
    }
