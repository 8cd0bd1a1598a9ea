"""Gopher repetition filter (Rae et al. 2021, "Scaling Language Models", appendix A, table A1).

Thresholds are the published ones (as in datatrove's ``GopherRepetitionFilter``). Scores are
computed once per document; rules compare them with ``Config``'s thresholds, so changing a
threshold re-runs only ``rules``.

Definitions (lines and words as in ``tasks.filters.text``):

- *line*: a non-blank line of ``str.splitlines()``, trailing whitespace removed. Two lines are
  duplicates when equal. Blank lines are not lines (so paragraph separators are never
  "duplicate lines").
- *paragraph*: a piece of ``text.strip()`` split on a line break followed by one or more blank
  (empty or whitespace-only) lines, trailing whitespace removed.
- *duplicate*: an occurrence of a line/paragraph/n-gram that already occurred earlier in the
  document; the first occurrence is not a duplicate.
- *word*: a whitespace token containing a letter, number or combining mark, cut to its core
  (``"world!"`` -> ``world``); case-sensitive. An *n-gram* is n consecutive words.

Score columns (``gopher_repetition_<stat>``, float32):

- ``dup_para_frac``: duplicate paragraphs / paragraphs.
- ``dup_para_char_frac``: characters in duplicate paragraphs / ``len(text)``.
- ``dup_line_frac``: duplicate lines / lines.
- ``dup_line_char_frac``: characters in duplicate lines / ``len(text)``.
- ``top_{2,3,4}gram_char_frac``: characters covered by the occurrences of the most frequent
  n-gram, / ``len(text)``. An occurrence covers its words and the n-1 single spaces between them
  (the n-gram written out), so without overlaps this is (length of the n-gram) x (its count);
  overlapping occurrences (``"a a"`` in ``"a a a"``) count their shared words once, so the
  fraction never exceeds 1. 0 when no n-gram occurs twice. Ties go to the n-gram seen first.
- ``dup_{5..10}gram_char_frac``: characters of the words covered by duplicate n-grams (word
  characters only, no separators; a word covered by several overlapping duplicates counts once)
  / ``len(text)``.

Null scores: every ratio is null for an empty text (``len(text) == 0``) and the line ratio for a
text without non-blank lines. For a document whose ``lang`` is in ``no_space_langs`` the n-gram
scores are null (whitespace tokens are not words there; their rules do not apply); the line and
paragraph scores still apply. A document with fewer than n words has an n-gram score of 0.

Speed: texts of ``NUMPY_MIN_WORDS`` words or more are scored with numpy (n-grams numbered
exactly by ranking (previous n-gram, next word) pairs; coverage by difference arrays), about 5x
faster on long documents and equal to the plain-Python path to the bit (a test checks it).

Deliberate differences from datatrove: words are word cores rather than the tokens of its
per-language tokenizer (NLTK or spaCy, which make punctuation marks tokens of their own; on the
sample corpus the two agree on 99% of the documents of 50+ words); duplicate n-gram coverage is
exact rather than datatrove's greedy skip-ahead (which can miss a duplicate n-gram that starts
inside a skipped span); a top n-gram that occurs only once scores 0 (datatrove scores the first
n-gram of a text without repetition, which rejects short texts such as ``"Hello there,
world."``); overlapping occurrences of the top n-gram count once (datatrove multiplies length by
count, which can exceed 1 on degenerate text such as ``"the the the the"``); lines exclude blank
lines and trailing whitespace; paragraph separators also accept whitespace-only blank lines and
``\r\n``.

``compat: datatrove`` replaces the definitions above with datatrove 0.10.1's (words, punctuation
sets, formulas), for reproducing FineWeb: ``tasks/filters/compat.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import accumulate, compress, count
from operator import ne
from typing import Annotated

import numpy as np
import pyarrow as pa
from pydantic import Field

from tasks.filters import compat
from tasks.filters import text as tx
from tasks.filters.base import FilterConfig, score_schema
from tasks.filters.compat import Compat
from tasks.identity import SCORED

NAME = "gopher_repetition"
SCORE_VERSION = 1

TOP_NS: tuple[int, ...] = (2, 3, 4)
DUP_NS: tuple[int, ...] = (5, 6, 7, 8, 9, 10)

STATS: tuple[str, ...] = (
    "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
    *(f"top_{n}gram_char_frac" for n in TOP_NS), *(f"dup_{n}gram_char_frac" for n in DUP_NS))
SCORE_SCHEMA = score_schema(NAME, **dict.fromkeys(STATS, pa.float32()))

# a line break, then one or more blank lines (possibly holding spaces, tabs or the "\r" of
# "\r\n"). Matches start only at a "\n" and never backtrack: linear on long whitespace runs.
_PARA_SPLIT = re.compile(r"\n(?:[^\S\n]*+\n)+")


class Config(FilterConfig):
    """Gopher repetition thresholds (Rae et al. 2021, table A1): reject when a score is above."""


    max_dup_para_frac: float = Field(0.30, ge=0, description="duplicate paragraphs / paragraphs")
    max_dup_para_char_frac: float = Field(
        0.20, ge=0, description="characters in duplicate paragraphs / characters"
    )
    max_dup_line_frac: float = Field(0.30, ge=0, description="duplicate lines / lines")
    max_dup_line_char_frac: float = Field(
        0.20, ge=0, description="characters in duplicate lines / characters"
    )
    max_top_2gram_char_frac: float = Field(
        0.20, ge=0, description="characters in the most frequent word 2-gram / characters"
    )
    max_top_3gram_char_frac: float = Field(0.18, ge=0, description="same, 3-grams")
    max_top_4gram_char_frac: float = Field(0.16, ge=0, description="same, 4-grams")
    max_dup_5gram_char_frac: float = Field(
        0.15, ge=0, description="word characters in repeated word 5-grams / characters"
    )
    max_dup_6gram_char_frac: float = Field(0.14, ge=0, description="same, 6-grams")
    max_dup_7gram_char_frac: float = Field(0.13, ge=0, description="same, 7-grams")
    max_dup_8gram_char_frac: float = Field(0.12, ge=0, description="same, 8-grams")
    max_dup_9gram_char_frac: float = Field(0.11, ge=0, description="same, 9-grams")
    max_dup_10gram_char_frac: float = Field(0.10, ge=0, description="same, 10-grams")

    no_space_langs: Annotated[list[str], SCORED] = Field(
        default_factory=lambda: list(tx.DEFAULT_NO_SPACE_LANGS),
        description="languages written without spaces: n-gram scores null (score)",
    )
    compat: Annotated[Compat | None, SCORED] = Field(
        None, description="datatrove: datatrove 0.10.1's scores and words (docs/filters.md)"
        " (score)")


# --------------------------------------------------------------------------- score


def _top_ngram_chars(ws: list[str], prefix: list[int], n: int) -> int:
    """Characters covered by the occurrences of the most frequent n-gram (words plus the single
    spaces between the words of a covered run; overlapping occurrences count once); 0 when no
    n-gram occurs twice."""
    grams = list(zip(*(ws[i:] for i in range(n)), strict=False))
    counts = Counter(grams)
    if len(counts) == len(grams):  # every n-gram distinct (or none at all)
        return 0
    top = counts.most_common(1)[0][0]
    covered = 0
    start = end = -1  # the current run of covered words is [start, end)
    for i in compress(count(), map(top.__eq__, grams)):
        if i >= end:  # no overlap with the current run: close it, start a new one
            if end > 0:
                covered += prefix[end] - prefix[start] + (end - start - 1)
            start = i
        end = i + n
    return covered + prefix[end] - prefix[start] + (end - start - 1)


def _dup_ngram_chars(ws: list[str], prefix: list[int], n: int) -> int | None:
    """Word characters covered by n-grams that repeat an earlier n-gram; None when no n-gram
    repeats (then no longer n-gram repeats either)."""
    grams = list(zip(*(ws[i:] for i in range(n)), strict=False))
    m = len(grams)
    # dict keeps the LAST value written per key: feeding positions in reverse leaves each
    # n-gram's first position
    first = dict(zip(reversed(grams), range(m - 1, -1, -1), strict=True))
    if len(first) == m:
        return None
    repeats = compress(count(), map(ne, map(first.__getitem__, grams), count()))
    covered = 0
    end = 0  # words before `end` are already counted
    for i in repeats:
        e = i + n
        covered += prefix[e] - prefix[i if i > end else end]
        end = e
    return covered


NUMPY_MIN_WORDS = 48  # shorter texts: the pure-Python n-gram code is faster than numpy's setup


def _ngram_chars_np(ws: list[str]) -> list[int | None]:
    """``_top_ngram_chars`` for n in TOP_NS, then ``_dup_ngram_chars`` for n in DUP_NS, in one
    vectorised pass (same values, including the early stops as 0 / None). n-grams are
    numbered exactly, not hashed: the (n-1)-gram number and the next word's number are ranked
    together, so equal numbers mean equal n-grams."""
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in ws), dtype=np.int64,
                      count=len(ws))
    lengths = np.fromiter(map(len, ws), dtype=np.int64, count=len(ws))
    v = max(len(vocab), 1)
    out: list[int | None] = []
    gram = ids
    repeated = True
    for n in range(2, DUP_NS[-1] + 1):
        m = len(ws) - n + 1
        if m <= 0 or not repeated:
            if n in TOP_NS:
                out.append(0)
            elif n in DUP_NS:
                out.append(None if repeated else 0)
                repeated = False
            continue
        _, first, gram, counts = np.unique(gram[:m] * v + ids[n - 1:], return_index=True,
                                           return_inverse=True, return_counts=True)
        gram = gram.ravel()
        if n in TOP_NS:
            best = counts.max()
            if best < 2:
                out.append(0)
                repeated = False
                continue
            top = np.flatnonzero(counts == best)
            key = top[np.argmin(first[top])]  # ties go to the n-gram seen first
            pos = np.flatnonzero(gram == key)
            runs = 1 + int(np.count_nonzero(pos[1:] >= pos[:-1] + n))
            mask = _cover(pos, n, len(ws))
            out.append(int(lengths[mask].sum()) + int(mask.sum()) - runs)
        else:
            pos = np.flatnonzero(first[gram] != np.arange(m))
            if not len(pos):
                out.append(None)
                repeated = False
                continue
            out.append(int(lengths[_cover(pos, n, len(ws))].sum()))
    return out


def _cover(pos: np.ndarray, n: int, size: int) -> np.ndarray:
    """Words covered by the n-grams starting at ``pos``."""
    edge = np.bincount(pos, minlength=size + 1) - np.bincount(pos + n, minlength=size + 1)
    return np.cumsum(edge[:size]) > 0


def _score_one(text: str, no_space: bool) -> list[float | None]:
    size = len(text)
    if size == 0:
        return [None] * len(STATS)

    paras = list(map(str.rstrip, _PARA_SPLIT.split(text.strip())))
    p_dup, p_chars = tx.dup_counts(paras)
    lines = tx.nonblank_lines(text)
    if lines:
        l_dup, l_chars = tx.dup_counts(lines)
        line_frac: float | None = l_dup / len(lines)
    else:
        l_chars, line_frac = 0, None
    out: list[float | None] = [p_dup / len(paras), p_chars / size, line_frac, l_chars / size]

    if no_space:
        out.extend([None] * (len(TOP_NS) + len(DUP_NS)))
        return out

    ws = tx.words(text)
    if len(ws) >= NUMPY_MIN_WORDS:
        chars_np = _ngram_chars_np(ws)
        out.extend(c / size for c in chars_np[:len(TOP_NS)])  # type: ignore[operator]
        out.extend(0.0 if c is None else c / size for c in chars_np[len(TOP_NS):])
        return out
    prefix = [0, *accumulate(map(len, ws))]
    repeated = True  # False once some n has no repeated n-gram: longer ones cannot repeat
    for n in TOP_NS:
        chars = _top_ngram_chars(ws, prefix, n) if repeated else 0
        repeated = chars > 0
        out.append(chars / size)
    if not repeated:
        out.extend([0.0] * len(DUP_NS))
        return out
    for n in DUP_NS:
        chars = _dup_ngram_chars(ws, prefix, n) if repeated else None
        if chars is None:
            repeated = False
            out.append(0.0)
        else:
            out.append(chars / size)
    return out


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    """One row of ``gopher_repetition_*`` float32 columns per input row, same order."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.score needs a {__name__}.Config, got {type(config).__name__}")
    texts, langs = tx.texts_and_langs(table)
    if config.compat == compat.DATATROVE:
        rows = [compat.gopher_repetition(t or "", TOP_NS, DUP_NS) for t in texts]
    else:
        is_no_space = tx.NoSpaceLangs(config.no_space_langs)
        rows = [_score_one(t or "", is_no_space(lang))
                for t, lang in zip(texts, langs, strict=True)]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in STATS]
    arrays = [pa.array(col, type=pa.float32()) for col in columns]
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


# --------------------------------------------------------------------------- rules


def rules(scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]:
    """rule name -> BooleanArray, True where the document FAILS (score > maximum), null where
    the score is null. Order: paragraphs, lines, top n-grams, duplicate n-grams."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.rules needs a {__name__}.Config, got {type(config).__name__}")
    out: dict[str, pa.Array] = {}
    for stat in STATS:
        rule = stat.removesuffix("_char_frac") if "gram" in stat else stat
        threshold = getattr(config, f"max_{stat}")
        out[f"{NAME}.{rule}"] = tx.gt(tx.column(scores, f"{NAME}_{stat}"), threshold)
    return out
