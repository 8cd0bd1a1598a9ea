"""Shared text helpers for the line/word heuristics (gopher_repetition, fineweb_quality,
c4_quality): language lookup, the word pattern, line splitting, punctuation sets, duplicate
counting and the threshold comparisons used by ``rules()``.

Everything expensive (regexes, Unicode classes) is built once per process and cached.

Definitions shared by the filters that use this module:

- *line*: an element of ``str.splitlines()`` (so ``\\r\\n``, ``\\r``, ``\\u2028`` ... all end a
  line) that is not blank; blank lines separate paragraphs and are never counted.
- *word*: a whitespace token containing at least one letter, number or combining mark (Unicode
  categories L*, N*, M*); the word is its *core*, from its first to its last such character, so
  ``"don't,"`` is the word ``don't`` and ``"—"`` is not a word. (The same definition as
  ``gopher_quality``.)
- *no-space language*: a ``lang`` whose script is written without spaces between words (``zh``,
  ``ja``, ``th`` ...). Whitespace tokens are not words there, so word-based scores are null.
  Codes are matched case-insensitively, exactly and then by base subtag (``zh-Hant`` -> ``zh``);
  a null ``lang`` is treated as a language written with spaces.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_NO_SPACE_LANGS: tuple[str, ...] = ("zh", "ja", "th", "lo", "km", "my", "bo")

# Characters that end a sentence in the scripts we see: Latin/Greek/Cyrillic (. ! ?), Arabic and
# Urdu (؟ ۔), Devanagari (। ॥), Armenian (։), Ethiopic (። ፧), Myanmar (။), Khmer (។), Tibetan
# (།), the Greek question mark (;, U+037E), doubled marks, and the CJK full-width and
# ideographic forms (。 ！ ？ ． ｡).
SENTENCE_END = ".!?‼⁇⁈⁉؟۔।॥։።፧။។།;。！？．｡"
# Closing quotes/brackets that may follow a sentence end (`He said "no."`).
CLOSERS = "\"'”’»›」』）)]】〉》"
# C4/FineWeb count a line ending in a straight quote as terminated; so do the typographic and
# CJK closing quotes here. Ellipses are handled by each filter (C4 rejects them).
TERMINAL_PUNCT = SENTENCE_END + "\"'”’»」』"
ELLIPSES: tuple[str, ...] = ("...", "…")


# --------------------------------------------------------------------------- languages


def norm_lang(lang: str) -> str:
    return lang.strip().lower().replace("_", "-")


class NoSpaceLangs:
    """``is_no_space(lang)`` with the per-value answer cached (a shard has few distinct langs)."""

    def __init__(self, langs: Iterable[str]) -> None:
        self._codes = frozenset(norm_lang(x) for x in langs)
        self._cache: dict[str | None, bool] = {}

    def __call__(self, lang: str | None) -> bool:
        hit = self._cache.get(lang)
        if hit is None:
            if lang is None:
                hit = False
            else:
                code = norm_lang(lang)
                hit = code in self._codes or code.split("-", 1)[0] in self._codes
            self._cache[lang] = hit
        return hit


def texts_and_langs(table: pa.Table) -> tuple[list[str | None], list[str | None]]:
    texts = table.column("text").to_pylist()
    if "lang" in table.column_names:
        langs = table.column("lang").to_pylist()
    else:
        langs = [None] * len(texts)
    return texts, langs


# --------------------------------------------------------------------------- patterns


# the planes char_class covers: planes 4-13 are unassigned and 15-16 private use
_PLANES = ((0, 0x40000), (0xE0000, 0xE1000))


@functools.cache
def _category_runs() -> tuple[tuple[int, int, str], ...]:
    """(first, last, category) for each run of consecutive code points of one Unicode category
    in ``_PLANES``: one scan per process (~0.03 s), shared by every class ``char_class``
    builds (a scan per class cost ~0.05 s, and a worker scoring with the Gopher and C4
    filters builds four)."""
    category = unicodedata.category
    runs: list[tuple[int, int, str]] = []
    for lo, hi in _PLANES:
        start, cat = lo, category(chr(lo))
        for cp in range(lo + 1, hi):
            c = category(chr(cp))
            if c != cat:
                runs.append((start, cp - 1, cat))
                start, cat = cp, c
        runs.append((start, hi - 1, cat))
    return tuple(runs)


def _ranges(categories: tuple[str, ...], lo: int, hi: int) -> str:
    """Regex class body (``a-b`` spans) for the code points in [lo, hi) whose category starts
    with one of ``categories``; adjacent matching code points make one span."""
    spans: list[list[int]] = []
    for a, b, cat in _category_runs():
        if b < lo or a >= hi or not cat.startswith(categories):
            continue
        a, b = max(a, lo), min(b, hi - 1)
        if spans and spans[-1][1] == a - 1:
            spans[-1][1] = b
        else:
            spans.append([a, b])
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in spans)


@functools.cache
def char_class(categories: tuple[str, ...]) -> str:
    """A regex (no capture) matching one character whose Unicode category starts with one of
    ``categories`` (``("L", "N", "M")``, ``("Ll",)``).

    BMP and astral characters are separate classes: ``re`` compiles an all-BMP class to a bitmap
    but scans a class with astral ranges linearly, so the astral one sits behind a cheap guard.
    Planes 4-13 are unassigned and 15-16 private use, so they are skipped."""
    bmp = _ranges(categories, 0, 0x10000)
    astral = _ranges(categories, 0x10000, 0x40000) + _ranges(categories, 0xE0000, 0xE1000)
    if not astral:
        return f"[{bmp}]"
    return f"(?:[{bmp}]|(?=[\\U00010000-\\U0010ffff])[{astral}])"


@functools.cache
def word_re() -> re.Pattern[str]:
    """Matches each word core in order (``findall`` -> the document's words)."""
    w = char_class(("L", "N", "M"))
    return re.compile(f"{w}(?:\\S*{w})?")


def words(text: str) -> list[str]:
    return word_re().findall(text)


_memo = threading.local()  # the table being scored: its text column and the words found


def shared_words(table: pa.Table) -> Callable[[int, str], list[str]]:
    """``get(i, text)``: ``words(text)`` of row ``i`` of ``table``'s text column, computed once
    per row and shared by the rule sets that score the table one after the other
    (``tasks.filter.score_table``): gopher_quality and gopher_repetition split a text once.
    An edit step's new text column has other buffers, hence other words. The memo holds the
    column itself, so its (immutable) buffers cannot be freed and their addresses reused
    while it is kept; ``forget_words`` drops it once the table is scored."""
    col = table.column("text")
    key = (len(col), *((c.offset, *(b.address if b else 0 for b in c.buffers()))
                       for c in col.chunks))
    entry = getattr(_memo, "entry", None)
    if entry is None or entry[1] != key:
        entry = _memo.entry = (col, key, {})
    found: dict[int, list[str]] = entry[2]

    def get(i: int, text: str) -> list[str]:
        ws = found.get(i)
        if ws is None:
            ws = found[i] = words(text)
        return ws

    return get


def forget_words() -> None:
    _memo.entry = None


# --------------------------------------------------------------------------- lines


def nonblank_lines(text: str) -> list[str]:
    """The non-blank lines of ``text``, trailing whitespace removed."""
    return list(filter(None, map(str.rstrip, text.splitlines())))


def dup_counts(items: Sequence[str]) -> tuple[int, int]:
    """(occurrences that repeat an earlier item, characters in those occurrences).

    The first occurrence of an item is not a duplicate, so ``["a", "a", "a"]`` -> (2, 2)."""
    n_unique = len(set(items))
    if n_unique == len(items):
        return 0, 0
    dup_chars = 0
    for item, count in Counter(items).items():
        if count > 1:
            dup_chars += len(item) * (count - 1)
    return len(items) - n_unique, dup_chars


# --------------------------------------------------------------------------- rules helpers


def column(scores: pa.Table, name: str) -> pa.Array:
    col = scores.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _scalar(col: pa.Array, value: float) -> pa.Scalar:
    # Compare in the column's own type: float32(0.1) > float64(0.1), so a float32 ratio of
    # exactly 0.1 compared with a float64 threshold of 0.1 would be wrongly "greater".
    if pa.types.is_floating(col.type):
        return pa.scalar(value, type=col.type)
    return pa.scalar(value)


def gt(col: pa.Array, value: float) -> pa.Array:
    return pc.greater(col, _scalar(col, value))


def ge(col: pa.Array, value: float) -> pa.Array:
    return pc.greater_equal(col, _scalar(col, value))


def lt(col: pa.Array, value: float) -> pa.Array:
    return pc.less(col, _scalar(col, value))


def le(col: pa.Array, value: float) -> pa.Array:
    return pc.less_equal(col, _scalar(col, value))


def not_applicable(n: int) -> pa.Array:
    """A rule that is switched off: null everywhere, so it never rejects."""
    return pa.nulls(n, pa.bool_())
