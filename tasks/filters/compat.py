"""``compat: datatrove``: the four heuristic filters scored exactly as datatrove 0.10.1 scores
them with its defaults, for users reproducing FineWeb.

Each filter keeps its score columns and rule names; in this mode the columns hold datatrove's
numbers and ``rules()`` compares them as datatrove does. What changes (datamill's own choices,
documented in each filter's module, are the default mode):

- every document is English: words are ``compat_words.words`` (datatrove's English word
  tokenizer: each punctuation mark a token of its own), the English stop-word list (the
  ``en`` entry of ``stop_words``) applies to every document and ``no_space_langs`` is not used;
- datatrove's punctuation sets (``compat_chars``) and line definitions: ``splitlines()`` /
  ``split("\\n")`` lines, blank ones included where datatrove includes them, trailing
  whitespace kept;
- datatrove's formulas: Gopher's word count and mean length over tokens that are not all
  punctuation, its ratios over all tokens; the top n-gram's length x count; duplicated
  n-grams found greedily over n-grams joined without spaces; C4's sentences counted by the
  sentencizer; FineWeb's duplicate characters over the text without line breaks.

datatrove rejects a document with an empty text (Gopher repetition) or without a non-blank
line (FineWeb) outright ("empty"); here such a document gets scores that fail every rule (1 for
the fractions, 0 for FineWeb's line-punctuation ratio). datatrove's top n-gram fraction can
exceed 1 on overlapping repeats (``"the the the"``); it is capped at 1 here (every rule with a
threshold below 1 decides alike).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from itertools import chain
from operator import itemgetter
from typing import Literal

from tasks.filters import compat_chars as cc
from tasks.filters.compat_ngrams import ngram_chars
from tasks.filters.compat_words import chunk_splits, count_words, words
from tasks.filters.text import dup_counts

Compat = Literal["datatrove"]
DATATROVE: Compat = "datatrove"

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAKS = re.compile(r"\n+")

# per distinct token: (not all punctuation, length, has a letter)
_token_info: dict[str, tuple[bool, int, bool]] = {}


def _info(token: str) -> tuple[bool, int, bool]:
    hit = _token_info.get(token)
    if hit is None:
        hit = (not cc.PUNCTUATION_SET.issuperset(token), len(token),
               any(c.isalpha() for c in token))
        if len(_token_info) < 200_000:  # full: keep the (frequent) tokens seen first
            _token_info[token] = hit
    return hit


# --------------------------------------------------------------------------- Gopher quality


def gopher_quality(text: str, stop_words: frozenset[str] | None) -> list[float | int | None]:
    """[n_words, mean_word_length, hash_word_ratio, ellipsis_word_ratio, bullet_lines_frac,
    ellipsis_lines_frac, alpha_words_frac, stop_words] as datatrove computes them."""
    counts = Counter(chain.from_iterable(chunk_splits(text)))
    n_tokens = sum(counts.values())
    n_words = chars = alpha = 0
    for token, k in counts.items():
        word, length, has_alpha = _info(token)
        if word:
            n_words += k
            chars += k * length
        if has_alpha:
            alpha += k
    lines = text.splitlines()
    if lines:
        bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-")))
        ellipses = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
        bullet_frac: float | None = bullets / len(lines)
        ellipsis_frac: float | None = ellipses / len(lines)
    else:
        bullet_frac = ellipsis_frac = None
    per_token = n_tokens or None
    return [
        n_words,
        chars / n_words if n_words else None,
        text.count("#") / per_token if per_token else None,
        (text.count("...") + text.count("…")) / per_token if per_token else None,
        bullet_frac,
        ellipsis_frac,
        alpha / per_token if per_token else None,
        None if stop_words is None else len(stop_words.intersection(counts)),
    ]


# --------------------------------------------------------------------------- Gopher repetition


def gopher_repetition(text: str, top_ns: Sequence[int], dup_ns: Sequence[int]
                      ) -> list[float | None]:
    """[dup_para_frac, dup_para_char_frac, dup_line_frac, dup_line_char_frac, top n-gram
    fractions..., duplicated n-gram fractions...] as datatrove computes them."""
    size = len(text)
    if size == 0:  # datatrove: rejected as "empty"
        return [1.0] * (4 + len(top_ns) + len(dup_ns))
    paras = _PARAGRAPH_BREAK.split(text.strip())
    p_dup, p_chars = dup_counts(paras)
    lines = _LINE_BREAKS.split(text)
    l_dup, l_chars = dup_counts(lines)
    out: list[float | None] = [p_dup / len(paras), p_chars / size, l_dup / len(lines),
                               l_chars / size]
    chars = ngram_chars(words(text), top_ns, dup_ns)
    out.extend(min(1.0, c / size) for c in chars[:len(top_ns)])
    out.extend(c / size for c in chars[len(top_ns):])
    return out


# --------------------------------------------------------------------------- FineWeb


def fineweb_quality(text: str, short_line_length: int) -> list[float | None]:
    """[line_punct_ratio, short_line_ratio, char_dup_ratio, new_line_ratio]."""
    lines = list(filter(str.strip, text.split("\n")))
    if not lines:  # datatrove: rejected as "empty"
        return [0.0, 1.0, 1.0, None]
    n = len(lines)
    n_words = count_words(text)
    return [
        # every terminal mark is one character: a line ends in one if its last one is
        sum(map(cc.TERMINAL_PUNCTUATION.__contains__, map(itemgetter(-1), lines))) / n,
        sum(map(short_line_length.__ge__, map(len, lines))) / n,
        dup_counts(lines)[1] / len(text.replace("\n", "")),
        text.count("\n") / n_words if n_words else None,
    ]


# --------------------------------------------------------------------------- C4
