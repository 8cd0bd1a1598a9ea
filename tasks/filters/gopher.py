"""Gopher quality filter (Rae et al. 2021, "Scaling Language Models", appendix A).

Scores are computed once per document; the rules compare them with the thresholds in
``Config``, so changing a threshold re-runs only ``rules``.

Definitions used by the scores (all per document):

- *token*: a maximal run of non-whitespace characters (``str.split()``).
- *word*: a token containing at least one letter, number or combining mark (Unicode categories
  L*, N*, M*), i.e. a token that is not pure punctuation/symbols. Its *core* runs from its first
  to its last such character, so ``"don't,"`` is the word ``don't`` of length 5 and ``"—"`` is
  not a word.
- *line*: a non-blank line of ``str.splitlines()``; blank lines (paragraph separators) are not
  counted, so they neither dilute nor inflate the line fractions.

Score columns (``gopher_quality_<stat>``):

- ``n_words`` (int32): number of words.
- ``mean_word_length`` (float32): mean length of the word cores.
- ``hash_word_ratio`` (float32): count of ``#`` in the text / ``n_words``.
- ``ellipsis_word_ratio`` (float32): (count of ``...`` + count of ``…``) / ``n_words``.
- ``bullet_lines_frac`` (float32): lines whose first non-space character is a bullet
  (``• ‣ ● ○ ▪ - * – —``) / lines.
- ``ellipsis_lines_frac`` (float32): lines ending (ignoring trailing space) with ``...`` or ``…``
  / lines.
- ``alpha_words_frac`` (float32): tokens containing at least one letter / tokens. The denominator
  is all tokens (symbol-only tokens included), as in Gopher: that is what catches
  symbol-heavy text.
- ``stop_words`` (int32): how many DIFFERENT words of the document language's stop-word list
  occur (as lowercased word cores): Gopher asks for "at least two of" the eight English words,
  so "the the" counts 1. A null ``lang`` counts as ``"en"``.

Language awareness: for a document whose ``lang`` is in ``no_space_langs`` (scripts written
without spaces between words) whitespace tokens are not words, so ``n_words``,
``mean_word_length``, ``hash_word_ratio``, ``ellipsis_word_ratio`` and ``alpha_words_frac`` are
null and their rules do not apply. ``stop_words`` is null when the language has no stop-word
list; for a no-space language that has one, it counts the stop words that occur as substrings
of the lowercased text instead of as whole words. Language codes are matched
case-insensitively, first exactly and then by their base subtag (``"zh-Hant"`` -> ``"zh"``).

Empty input: a ratio whose denominator is zero (no words, no tokens or no non-blank lines) is
NULL, not 0, so its rule does not apply; ``n_words`` is 0, so an empty or symbol-only document is
still rejected by ``min_words``. A null ``text`` is scored as the empty string.

``compat: datatrove`` replaces the definitions above with datatrove 0.10.1's (words, punctuation
sets, formulas), for reproducing FineWeb: ``tasks/filters/compat.py``.
"""

from __future__ import annotations

import functools
import re
from itertools import filterfalse
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters import compat
from tasks.filters import text as textlib
from tasks.filters.base import FilterConfig, score_schema
from tasks.filters.compat import Compat
from tasks.identity import SCORED

NAME = "gopher_quality"
SCORE_VERSION = 2  # 2: stop_words counts distinct stop words

BULLETS: tuple[str, ...] = ("•", "‣", "●", "○", "▪", "-", "*", "–", "—")
ELLIPSES: tuple[str, ...] = ("...", "…")

SCORE_SCHEMA = score_schema(
    NAME, n_words=pa.int32(), mean_word_length=pa.float32(), hash_word_ratio=pa.float32(),
    ellipsis_word_ratio=pa.float32(), bullet_lines_frac=pa.float32(),
    ellipsis_lines_frac=pa.float32(), alpha_words_frac=pa.float32(), stop_words=pa.int32())


class Config(FilterConfig):
    """Published Gopher thresholds; ``stop_words`` and ``no_space_langs`` change the scores."""


    min_words: int = Field(50, ge=0)
    max_words: int = Field(100_000, ge=0)
    min_mean_word_length: float = Field(3.0, ge=0)
    max_mean_word_length: float = Field(10.0, ge=0)
    max_hash_word_ratio: float = Field(0.1, ge=0)
    max_ellipsis_word_ratio: float = Field(0.1, ge=0)
    max_bullet_lines_frac: float = Field(0.9, ge=0)
    max_ellipsis_lines_frac: float = Field(0.3, ge=0)
    min_alpha_words_frac: float = Field(0.8, ge=0)
    min_stop_words: int = Field(2, ge=0)

    stop_words: Annotated[dict[str, list[str]], SCORED] = Field(
        default_factory=lambda: {"en": ["the", "be", "to", "of", "and", "that", "have", "with"]}
    )
    no_space_langs: Annotated[list[str], SCORED] = Field(
        default_factory=lambda: ["zh", "ja", "th", "lo", "km", "my", "bo"]
    )
    compat: Annotated[Compat | None, SCORED] = Field(
        None, description="datatrove: datatrove 0.10.1's scores, its English words and stop "
        "words for every document (docs/filters.md) (score)")


# --------------------------------------------------------------------------- patterns


@functools.cache
def _letter_re() -> re.Pattern[str]:
    """One letter (Unicode L*), from the classes ``tasks/filters/text.py`` builds. Words are
    ``text.words``'s cores: from a token's first letter, number or mark to its last one, never
    crossing whitespace (``findall`` yields one core per word, in order)."""
    return re.compile(textlib.char_class(("L",)))


def _norm_lang(lang: str) -> str:
    return lang.strip().lower().replace("_", "-")


def _lookup(lang: str, table: dict[str, Any]) -> Any:
    """Exact match, then the base subtag."""
    if lang in table:
        return table[lang]
    return table.get(lang.split("-", 1)[0])


# --------------------------------------------------------------------------- score


def _line_stats(text: str) -> tuple[float | None, float | None]:
    n = bullets = ellipses = 0
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        n += 1
        if s.startswith(BULLETS):
            bullets += 1
        if s.endswith(ELLIPSES):
            ellipses += 1
    if n == 0:  # no non-blank lines: fractions are undefined -> null (rule does not apply)
        return None, None
    return bullets / n, ellipses / n


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    """One row of ``gopher_quality_*`` score columns per input row, same order."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.score needs a {__name__}.Config, got {type(config).__name__}")
    if config.compat == compat.DATATROVE:
        return _compat_scores(table, config)
    letter_search = _letter_re().search

    stop_sets = {
        _norm_lang(k): frozenset(w.lower() for w in v) for k, v in config.stop_words.items()
    }
    no_space = {_norm_lang(x): True for x in config.no_space_langs}

    texts = table.column("text").to_pylist()
    if "lang" in table.column_names:
        langs = table.column("lang").to_pylist()
    else:
        langs = [None] * len(texts)

    # per distinct lang value: (is_no_space, stop-word set or None)
    lang_info: dict[str | None, tuple[bool, frozenset[str] | None]] = {}

    n_words: list[int | None] = []
    mean_len: list[float | None] = []
    hash_ratio: list[float | None] = []
    ell_ratio: list[float | None] = []
    bullet_frac: list[float | None] = []
    ell_lines_frac: list[float | None] = []
    alpha_frac: list[float | None] = []
    stops: list[int | None] = []

    shared = textlib.shared_words(table)  # each text's cores, found once per text
    for i, (text, lang) in enumerate(zip(texts, langs, strict=True)):
        info = lang_info.get(lang)
        if info is None:
            key = _norm_lang(lang) if lang is not None else "en"
            info = (bool(_lookup(key, no_space)), _lookup(key, stop_sets))
            lang_info[lang] = info
        is_no_space, stop_set = info
        if text is None:
            text = ""

        b, e = _line_stats(text)
        bullet_frac.append(b)
        ell_lines_frac.append(e)

        if is_no_space:
            n_words.append(None)
            mean_len.append(None)
            hash_ratio.append(None)
            ell_ratio.append(None)
            alpha_frac.append(None)
            if stop_set is None:
                stops.append(None)
            else:
                low = text.lower()
                stops.append(sum(1 for w in stop_set if w and w in low))
            continue

        cores = shared(i, text) if text else []
        n = len(cores)
        n_words.append(n)
        if n:
            mean_len.append(sum(map(len, cores)) / n)
            hash_ratio.append(text.count("#") / n)
            ell_ratio.append((text.count("...") + text.count("…")) / n)
        else:  # no words: per-word ratios are undefined -> null; min_words still rejects
            mean_len.append(None)
            hash_ratio.append(None)
            ell_ratio.append(None)
        n_tokens = len(text.split())
        if n_tokens:
            # a token's letters all lie inside its core, so count over the cores; a core of
            # letters only (str.isalpha: the same L* categories) needs no regex
            with_letter = sum(map(str.isalpha, cores)) + sum(
                map(bool, map(letter_search, filterfalse(str.isalpha, cores))))
            alpha_frac.append(with_letter / n_tokens)
        else:
            alpha_frac.append(None)
        if stop_set is None:
            stops.append(None)
        else:
            stops.append(len(stop_set.intersection(map(str.lower, cores))))

    columns = [
        n_words,
        mean_len,
        hash_ratio,
        ell_ratio,
        bullet_frac,
        ell_lines_frac,
        alpha_frac,
        stops,
    ]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, SCORE_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


def _compat_scores(table: pa.Table, config: Config) -> pa.Table:
    """datatrove's scores: its English words and the ``en`` stop words for every document."""
    en = {_norm_lang(k): v for k, v in config.stop_words.items()}.get("en")
    stop = frozenset(en) if en is not None else None
    rows = [compat.gopher_quality(t or "", stop) for t in table.column("text").to_pylist()]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in SCORE_SCHEMA]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, SCORE_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


# --------------------------------------------------------------------------- rules


def _col(scores: pa.Table, stat: str) -> pa.Array:
    return textlib.column(scores, f"{NAME}_{stat}")


# comparisons in the column's own type (float32 ratios vs float64 thresholds): see text.py
_lt, _gt = textlib.lt, textlib.gt


def rules(scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]:
    """rule name -> BooleanArray, True where the document FAILS the rule, null where the score
    is null (rule does not apply)."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.rules needs a {__name__}.Config, got {type(config).__name__}")
    c = config
    n_words = _col(scores, "n_words")
    mwl = _col(scores, "mean_word_length")
    return {
        f"{NAME}.min_words": _lt(n_words, c.min_words),
        f"{NAME}.max_words": _gt(n_words, c.max_words),
        # both sides are null together, so plain or_ keeps "null = does not apply"
        f"{NAME}.mean_word_length": pc.or_(
            _lt(mwl, c.min_mean_word_length), _gt(mwl, c.max_mean_word_length)
        ),
        f"{NAME}.hash_word_ratio": _gt(_col(scores, "hash_word_ratio"), c.max_hash_word_ratio),
        f"{NAME}.ellipsis_word_ratio": _gt(
            _col(scores, "ellipsis_word_ratio"), c.max_ellipsis_word_ratio
        ),
        f"{NAME}.bullet_lines": _gt(_col(scores, "bullet_lines_frac"), c.max_bullet_lines_frac),
        f"{NAME}.ellipsis_lines": _gt(
            _col(scores, "ellipsis_lines_frac"), c.max_ellipsis_lines_frac
        ),
        f"{NAME}.alpha_words": _lt(_col(scores, "alpha_words_frac"), c.min_alpha_words_frac),
        f"{NAME}.stop_words": _lt(_col(scores, "stop_words"), c.min_stop_words),
    }
