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

Speed: the n-gram scores of a whole batch of documents are computed in numpy passes
(``_ngram_chars_batch``: n-grams numbered exactly by ranking (document's (n-1)-gram, next word)
pairs, each pass over only the positions whose (n-1)-gram repeats, coverage from prefix sums),
equal to the plain-Python definition (``_ngram_chars``) to the integer: tests check it. Figures
in ``tests/bench/README.md``, section 8.

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
from itertools import accumulate, chain, compress, count
from operator import ne
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


BATCH_WORDS = 2_000_000  # words numbered in one pass: bounds the batch path's arrays


def _ngram_chars_batch(docs: list[list[str]]) -> np.ndarray:
    """Per document (rows), the characters ``_top_ngram_chars`` counts for n in TOP_NS, then
    ``_dup_ngram_chars`` for n in DUP_NS (0 where it returns None): the same integers, for
    many documents in one vectorised pass (a test checks it on the sample and hand-made texts).

    Every word position of the batch is numbered once (document, word); an n-gram's number
    is the rank of (its (n-1)-gram's number, its last word's number), so equal numbers mean
    equal n-grams of one document: exact, no hashing. Only positions whose (n-1)-gram
    repeats go on to the n-gram pass: an n-gram can repeat only where its first n-1 words
    do, so the passes shrink with the repeats, not with the batch."""
    n_docs = len(docs)
    out = np.zeros((n_docs, len(TOP_NS) + len(DUP_NS)), dtype=np.int64)
    sizes = np.fromiter(map(len, docs), dtype=np.int64, count=n_docs)
    total = int(sizes.sum())
    if total == 0:
        return out
    flat = pa.array(chain.from_iterable(docs), type=pa.large_string(), size=total)
    enc = pc.dictionary_encode(flat)
    ids = enc.indices.to_numpy().astype(np.int64)
    vocab = max(len(enc.dictionary), 1)
    chars_before = np.zeros(total + 1, dtype=np.int64)  # code points, as len()
    np.cumsum(pc.utf8_length(flat).to_numpy(), out=chars_before[1:])
    doc = np.repeat(np.arange(n_docs), sizes)
    end = np.repeat(np.cumsum(sizes), sizes)  # per position: its document's end
    _, gram, counts = _rank(doc * vocab + ids)  # 1-grams
    pos = np.flatnonzero(counts[gram] >= 2)  # where a word repeats in its document
    for col, n in enumerate((*TOP_NS, *DUP_NS)):  # 2, 3, ..., 10: each n builds on n - 1
        pos = pos[pos + n <= end[pos]]
        if not len(pos):
            break
        first, inv, counts = _rank(gram[pos] * vocab + ids[pos + n - 1])
        gram = np.empty(total, dtype=np.int64)
        gram[pos] = inv
        if n in TOP_NS:  # per document its most frequent n-gram, ties to the first seen
            owner = doc[pos[first]]  # nondecreasing: numbers are ranks of document-major keys
            top = np.zeros(len(counts), dtype=bool)
            top[_top_per_owner(owner, counts, first, total)] = True
            at = pos[top[inv]]
            words, chars = _cover(at, n, chars_before)
            runs = np.r_[True, at[1:] >= at[:-1] + n] if len(at) else np.zeros(0, bool)
            per_doc = chars + words - runs  # words plus the spaces inside each run
        else:  # positions whose n-gram occurred earlier in the document
            at = pos[first[inv] != np.arange(len(pos))]
            per_doc = _cover(at, n, chars_before)[1]
        out[:, col] = np.bincount(doc[at], weights=per_doc, minlength=n_docs).astype(np.int64)
        pos = pos[counts[inv] >= 2]
    return out


def _rank(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(keys, return_index=True, return_inverse=True, return_counts=True)`` less
    the values: each distinct key's first position, every position's rank among the distinct
    keys, each distinct key's count. An unstable sort (numpy's vectorised quicksort, ~3x its
    stable one on int64) with the first positions taken as each run's smallest position."""
    order = np.argsort(keys, kind="quicksort")
    ordered = keys[order]
    new = np.empty(len(keys), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    first = np.minimum.reduceat(order, starts) if len(starts) else starts
    inv = np.empty(len(keys), dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    counts = np.diff(starts, append=len(keys))
    return first, inv, counts


def _top_per_owner(owner: np.ndarray, counts: np.ndarray, first: np.ndarray,
                   total: int) -> np.ndarray:
    """Per owner (``owner`` nondecreasing) the index of its most frequent n-gram, ties to the
    first seen, where that n-gram occurs at least twice."""
    if not len(owner):
        return owner
    key = counts * (total + 1) + (total - first)  # larger count, then earlier first
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    best = np.maximum.reduceat(key, starts)
    heads = np.flatnonzero(key == np.repeat(best, np.diff(starts, append=len(owner))))
    return heads[counts[heads] >= 2]


def _cover(at: np.ndarray, n: int, chars_before: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Per start in ``at`` (ascending), the words and characters that its n-gram covers and
    no later start's does: summed, the union of the n-grams. N-grams never cross documents,
    so a document's last start keeps all n words."""
    take = np.minimum(np.diff(at, append=at[-1] + n), n) if len(at) else at
    return take, chars_before[at + take] - chars_before[at]


def _line_para_stats(text: str) -> list[float | None]:
    """dup_para_frac, dup_para_char_frac, dup_line_frac, dup_line_char_frac of a non-empty
    text."""
    size = len(text)
    paras = list(map(str.rstrip, _PARA_SPLIT.split(text.strip())))
    p_dup, p_chars = tx.dup_counts(paras)
    lines = tx.nonblank_lines(text)
    if lines:
        l_dup, l_chars = tx.dup_counts(lines)
        line_frac: float | None = l_dup / len(lines)
    else:
        l_chars, line_frac = 0, None
    return [p_dup / len(paras), p_chars / size, line_frac, l_chars / size]


def _ngram_chars(ws: list[str]) -> list[int]:
    """The plain-Python definition of ``_ngram_chars_batch``'s row for one document: the
    reference the tests hold the batch path to."""
    prefix = [0, *accumulate(map(len, ws))]
    out: list[int] = []
    repeated = True  # False once some n has no repeated n-gram: longer ones cannot repeat
    for n in TOP_NS:
        chars = _top_ngram_chars(ws, prefix, n) if repeated else 0
        repeated = chars > 0
        out.append(chars)
    for n in DUP_NS:
        dup = _dup_ngram_chars(ws, prefix, n) if repeated else None
        repeated = dup is not None
        out.append(dup or 0)
    return out


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    """One row of ``gopher_repetition_*`` float32 columns per input row, same order."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.score needs a {__name__}.Config, got {type(config).__name__}")
    texts, langs = tx.texts_and_langs(table)
    if config.compat == compat.DATATROVE:
        rows = [compat.gopher_repetition(t or "", TOP_NS, DUP_NS) for t in texts]
    else:
        rows = _rows(table, texts, langs, tx.NoSpaceLangs(config.no_space_langs))
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in STATS]
    arrays = [pa.array(col, type=pa.float32()) for col in columns]
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


def _rows(table: pa.Table, texts: list[str | None], langs: list[str | None],
          is_no_space: tx.NoSpaceLangs) -> list[list[float | None]]:
    """Per text its STATS: line and paragraph stats one text at a time, the n-gram stats of
    the texts written with spaces in word batches (``_ngram_chars_batch``)."""
    n_grams = len(TOP_NS) + len(DUP_NS)
    rows: list[list[float | None]] = []
    todo: list[int] = []  # rows whose n-gram scores the batch path fills in
    words: list[list[str]] = []
    shared = tx.shared_words(table)
    for i, (t, lang) in enumerate(zip(texts, langs, strict=True)):
        if not t:
            rows.append([None] * len(STATS))
            continue
        rows.append(_line_para_stats(t) + [None] * n_grams)
        if not is_no_space(lang):
            todo.append(i)
            words.append(shared(i, t))
    for lo, hi in _word_batches(words):
        chars = _ngram_chars_batch(words[lo:hi]).tolist()
        for i, row_chars in zip(todo[lo:hi], chars, strict=True):
            size = len(texts[i])  # type: ignore[arg-type]
            rows[i][4:] = [c / size for c in row_chars]
    return rows


def _word_batches(words: list[list[str]]) -> list[tuple[int, int]]:
    """[lo, hi) slices of consecutive documents of at most BATCH_WORDS words (or one)."""
    out, lo, held = [], 0, 0
    for i, ws in enumerate(words):
        if held and held + len(ws) > BATCH_WORDS:
            out.append((lo, i))
            lo, held = i, 0
        held += len(ws)
    if lo < len(words):
        out.append((lo, len(words)))
    return out


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
