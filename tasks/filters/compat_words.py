"""Words and sentences as datatrove 0.10.1 splits English text, for ``compat: datatrove``.

datatrove splits every document (it is given no language: English) with a blank spaCy English
pipeline: a rule-based word tokenizer plus a sentencizer. This module reproduces both in plain
Python, without spaCy, from the rules they follow (character data in ``compat_chars``):

1. The text is cut at whitespace (``str.split()``) into *chunks*.
2. A chunk that is an *exception* (contractions such as ``don't`` -> ``do`` ``n't``, ``cannot``
   -> ``can`` ``not``, abbreviations such as ``Dr.`` and ``e.g.``, emoticons, ``'s`` ...) is
   split as the exception says.
3. Otherwise *prefixes* (opening punctuation, quotes, currency signs, icons, ``..``) and
   *suffixes* (closing punctuation, quotes, ``'s``, a full stop after a lower-case letter or a
   digit or two capitals, a unit or currency after a digit, ``...``) are split off, one at a
   time from each end, until none is left or what is left is an exception.
4. What remains is kept whole if it is a URL; else it is split at *infixes*: ``...``, icons,
   ``-``/``+``/``*``/``^`` between digits, ``.`` between a lower-case and an upper-case letter,
   ``,`` between letters, hyphens and dashes after a letter or digit and before a letter,
   ``: < > = /`` after a letter or digit and before a letter.
5. Exceptions that contain such splitting characters (``''``, ``e.g.``, ``:)``, ``8)``) are
   put back together where the splitting produced their pieces next to each other.

So punctuation marks are tokens of their own: ``"Hello, world!"`` is ``Hello`` ``,`` ``world``
``!``. ``sentence_count`` follows the sentencizer: a new sentence starts at the first token
after a sentence-ending mark (``compat_chars.SENTENCE_CHARS``) that is neither such a mark nor
punctuation; a run of two or more spaces is a token of its own, which starts a sentence too.

Chunk splits are cached (the first 500,000 distinct chunks), so the cost is mostly one dictionary
lookup per whitespace-separated chunk.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from itertools import chain

from tasks.filters import compat_chars as cc
from tasks.filters.compat_exceptions import Tokens, exceptions

_CACHE_MAX = 500_000


# --------------------------------------------------------------------------- rules


class _Rules:
    """The compiled affix, infix and URL rules and the exception tables."""

    def __init__(self) -> None:
        (alpha, alpha_x), (lower, lower_x), (upper, upper_x) = cc.letters()
        icons, icons_x = cc.icon_class()
        esc = re.escape
        quotes = "".join(map(esc, cc.QUOTES))
        punct = "".join(map(esc, cc.PUNCT))
        self.prefix_chars = cc.prefix_chars()
        singles = "".join(map(esc, cc.PUNCT + cc.QUOTES + "—–"))
        currency = "|".join(map(esc, [*cc.CURRENCY_CHARS, *cc.CURRENCY_WORDS]))
        units = "|".join(map(esc, cc.UNITS))
        icon = cc.one_of(icons, icons_x)
        before_dot = cc.one_of(f"0-9{lower}%²\\-\\+{punct}|(?:){quotes}", lower_x)
        two_upper = cc.one_of(upper, upper_x) * 2
        # a suffix ends the chunk; re.search finds the leftmost start, i.e. the longest suffix
        suffix = "|".join([
            cc.one_of(singles + icons, icons_x), "……", r"\.\.+", "[’']s", "[’']S",
            r"(?<=[0-9])\+", r"(?<=°[FfCcKk])\.", f"(?<=[0-9])(?:{currency})",
            f"(?<=[0-9])(?:{units})", rf"(?<={before_dot})\.", rf"(?<={two_upper})\.",
        ])
        self.suffix_search = re.compile(f"(?:{suffix})$").search
        # shortcuts: a closing mark other than "." and "…" is a one-character suffix (no
        # longer suffix ends in one); "." alone is one after these; other endings need the
        # regex only when they can end "'s", a currency or a unit after a digit
        self.one_char = (frozenset(cc.PUNCT + cc.QUOTES + "—–") | cc.icons()) - {".", "…"}
        self.dot_after = re.compile(rf"(?:{before_dot}|{two_upper}|°[FfCcKk])\.\Z").search
        self.maybe_suffix = frozenset("+sS$" + cc.CURRENCY_CHARS)
        # first / last characters that may start a prefix / end a suffix
        self.one_prefix = self.prefix_chars - {"+", "."}
        self.prefix_starts = self.prefix_chars | set("+.UCA")
        self.closing = self.one_char | {".", "…"}
        mark = "[" + "".join(map(esc, sorted(self.one_char - cc.icons()))) + icons + "]"
        # letters or digits between one-character marks (astral icons aside), maybe a final
        # full stop: "(word),"
        self.wrapped = re.compile(rf"({mark}*)([^\W_]+)({mark}*)(\.?)\Z").match
        self.has_digit = re.compile("[0-9]").search
        hyphens = "|".join(map(esc, cc.HYPHENS))
        letter = cc.one_of(alpha, alpha_x)
        letter_digit = cc.one_of(alpha + "0-9", alpha_x)
        self.infix_finditer = re.compile("|".join([
            r"\.\.+", "…", icon, r"(?<=[0-9])[+\-\*^](?=[0-9-])",
            rf"(?<={cc.one_of(lower + quotes, lower_x)})\.(?={cc.one_of(upper + quotes, upper_x)})",
            rf"(?<={letter}),(?={letter})", rf"(?<={letter_digit})(?:{hyphens})(?={letter})",
            rf"(?<={letter_digit})[:<>=/](?={letter})",
        ])).finditer
        infix_bmp = re.compile(f"[.…+\\-*^,:<>=/~–—{icons}]").search
        infix_astral = re.compile(f"[{icons_x}]").search

        def maybe_infix(s: str) -> object:
            return infix_bmp(s) or (max(s) > "\uffff" and infix_astral(s))

        self.maybe_infix = maybe_infix
        self.url_match = re.compile(cc.url_pattern(cc.one_of(lower, lower_x))).match
        self.exceptions = exceptions()
        # exceptions that the affix rules would cut into pieces, by their first two pieces
        self.rejoin: dict[tuple[str, str], list[tuple[Tokens, str]]] = {}
        for key in self.exceptions:
            if self.prefix_len(key) or self.suffix_search(key) or next(
                    self.infix_finditer(key), None) or " " in key:
                pieces = self.split(key, exceptions=False)
                if len(pieces) > 1:  # (one piece: the exception is that one token anyway)
                    self.rejoin.setdefault(pieces[:2], []).append((pieces, key))

    def prefix_len(self, s: str) -> int:
        c = s[0]
        if c == ".":
            n = len(s) - len(s.lstrip("."))
            return n if n > 1 else 0
        if c == "+":  # not before an ASCII digit ("+5" is a number)
            return 0 if "0" <= s[1:2] <= "9" and len(s) > 1 else 1
        if c in self.prefix_chars:
            return 1
        if s.startswith("US$"):
            return 3
        return 2 if s.startswith(("C$", "A$")) else 0

    def suffix_len(self, s: str) -> int:
        if not s:
            return 0
        last = s[-1]
        if last in self.one_char:
            return 1
        if last == ".":
            if s[-2:-1] == ".":
                return len(s) - len(s.rstrip("."))
            return 1 if self.dot_after(s[-3:]) else 0
        if last == "…":
            return 2 if s[-2:-1] == "…" else 1
        if last.isdecimal() or (last not in self.maybe_suffix and not self.has_digit(s)):
            return 0  # no suffix ends in a digit; units and currencies need one before them
        m = self.suffix_search(s)
        return len(s) - m.start() if m else 0

    def split(self, chunk: str, exceptions: bool = True) -> Tokens:
        """One whitespace-free chunk -> its tokens."""
        exc = self.exceptions if exceptions else {}
        hit = exc.get(chunk)
        if hit is not None:
            return hit
        if chunk.isalpha():  # letters only: no affix, infix or unit applies
            return (chunk,)
        start, end = chunk[0], chunk[-1]
        # nothing to split off or at: no prefix; no suffix (a closing mark, a full stop, "'s",
        # a unit or currency after a digit); no infix
        if (start not in self.prefix_starts and end not in self.closing
                and (end.isdecimal() or not self.has_digit(chunk))
                and (end not in "sS" or chunk[-2:-1] not in "'’")
                and not self.maybe_infix(chunk)):
            return (chunk,)
        if exceptions:
            # shortcuts for the commonest shapes: "word," "(word" "word." and "(word),"
            one, rejoin = self.one_char, self.rejoin
            if end in one or end == ".":
                core = chunk[:-1]
                if core.isalpha() and (end != "." or self.dot_after(chunk[-3:])):
                    toks = exc.get(core)
                    if toks is not None:
                        return self._rejoin([*toks, end])
                    if (core, end) not in rejoin:
                        return (core, end)
            elif start in one:
                core = chunk[1:]
                if core.isalpha():
                    toks = exc.get(core)
                    if toks is not None:
                        return self._rejoin([start, *toks])
                    if (start, core) not in rejoin:
                        return (start, core)
            wrapped = self._wrapped(chunk)
            if wrapped is not None:
                return wrapped
        prefixes: list[str] = []
        suffixes: list[str] = []
        prefix_len, suffix_len, one_prefix = self.prefix_len, self.suffix_len, self.one_prefix
        s = chunk
        last = -1
        while s and len(s) != last:
            if s in exc:
                break
            last = len(s)
            pre = 1 if s[0] in one_prefix else prefix_len(s)
            if pre and s[pre:] and s[pre:] in exc:
                prefixes.append(s[:pre])
                s = s[pre:]
                break
            suf = suffix_len(s[pre:])
            if suf and s[:-suf] and s[:-suf] in exc:
                suffixes.append(s[-suf:])
                s = s[:-suf]
                break
            if pre and suf and pre + suf <= len(s):
                prefixes.append(s[:pre])
                suffixes.append(s[-suf:])
                s = s[pre:-suf]
            elif pre:
                prefixes.append(s[:pre])
                s = s[pre:]
            elif suf:
                suffixes.append(s[-suf:])
                s = s[:-suf]
        out = prefixes
        if s:
            if s in exc:
                out.extend(exc[s])
            elif "." in s and self.url_match(s):
                out.append(s)
            elif self.maybe_infix(s):
                out.extend(self._infixes(s))
            else:
                out.append(s)
        out.extend(reversed(suffixes))
        if exceptions and len(out) > 1:
            return self._rejoin(out)
        return tuple(out)

    def _wrapped(self, chunk: str) -> Tokens | None:
        """A shortcut for letters or digits between one-character marks, maybe with a final
        full stop ("(word),", "word."): each mark a token, the middle split as a chunk of its
        own. None where the rules could do otherwise: another shape, a full stop that stays
        (after one capital letter), or a wider piece that is an exception ("'em")."""
        m = self.wrapped(chunk)
        if m is None:
            return None
        pre, core, post, dot = m.groups()
        if not (core.isalpha() or core.isdigit()):
            return None
        if dot and not self.dot_after(chunk[1 if pre else 0:][-3:]):
            return None
        a, b = len(pre), len(pre) + len(core)
        exc = self.exceptions
        for i in range(a + 1):
            for j in range(b, len(chunk) + 1):
                if (i, j) != (a, b) and chunk[i:j] in exc:
                    return None
        if not pre and not post and not dot:
            return (chunk,)  # digits only (letters only were handled before)
        out = [*pre, *chunk_tokens(core), *post, *dot]
        return self._rejoin(out)

    def _infixes(self, s: str) -> list[str]:
        out: list[str] = []
        start = 0
        for m in self.infix_finditer(s):
            a, b = m.span()
            if a == 0:  # an infix at the very start is not a split point
                continue
            if a != start:
                out.append(s[start:a])
            if a != b:
                out.append(s[a:b])
            start = b
        if start < len(s):
            out.append(s[start:])
        return out

    def _rejoin(self, toks: list[str]) -> Tokens:
        """Put back together the exceptions the affix rules cut apart: longest first, then
        leftmost; a candidate overlapping an earlier one is dropped (and still blocks)."""
        found: list[tuple[int, int, str]] = []
        get = self.rejoin.get
        for i, pair in enumerate(zip(toks, toks[1:], strict=False)):
            for pieces, key in get(pair, ()):
                n = len(pieces)
                if n == 2 or tuple(toks[i:i + n]) == pieces:
                    found.append((i, i + n, key))
        if not found:
            return tuple(toks)
        found.sort(key=lambda f: (f[0] - f[1], f[0]))
        seen: set[int] = set()
        keep: dict[int, tuple[int, str]] = {}
        for a, b, key in found:
            if a not in seen and b - 1 not in seen:
                keep[a] = (b, key)
            seen.update(range(a, b))
        out: list[str] = []
        i = 0
        while i < len(toks):
            if i in keep:
                b, key = keep[i]
                out.extend(self.exceptions[key])
                i = b
            else:
                out.append(toks[i])
                i += 1
        return tuple(out)


@functools.cache
def _rules() -> _Rules:
    return _Rules()


# --------------------------------------------------------------------------- public


_chunk_cache: dict[str, Tokens] = {}


def chunk_tokens(chunk: str) -> Tokens:
    """The tokens of one whitespace-free chunk (cached)."""
    hit = _chunk_cache.get(chunk)
    if hit is None:
        hit = _rules().split(chunk)
        if len(_chunk_cache) < _CACHE_MAX:  # full: keep what is there (the frequent chunks
            _chunk_cache[chunk] = hit       # come early), as the tokenizer's own cache does
    return hit


def chunk_splits(text: str) -> list[Tokens]:
    """The tokens of each whitespace-separated chunk of ``text``."""
    chunks = text.split()
    splits = list(map(_chunk_cache.get, chunks))
    if None in splits:
        for i, toks in enumerate(splits):
            if toks is None:
                splits[i] = chunk_tokens(chunks[i])
    return splits  # type: ignore[return-value]


def words(text: str) -> list[str]:
    """datatrove's English word tokens of ``text`` (whitespace dropped)."""
    return list(chain.from_iterable(chunk_splits(text)))


def count_words(text: str) -> int:
    """``len(words(text))``."""
    return sum(map(len, chunk_splits(text)))


_PIECES = re.compile(r"\s+|\S+")


def sentence_count(text: str) -> int:
    """Sentences in ``text`` as the sentencizer counts them (at least 1)."""
    if not _has_mark(text):
        return 1
    marks = cc.SENTENCE_CHARS
    punct = _punct_token.get
    count = 1
    seen_mark = False
    for tok in _tokens_and_spaces(text):
        if tok in marks:
            seen_mark = True
        elif seen_mark:
            is_punct = punct(tok)
            if is_punct is None:
                is_punct = _punct_token[tok] = all(
                    unicodedata.category(c).startswith("P") for c in tok)
            if not is_punct:
                count += 1
                seen_mark = False
    return count


_punct_token: dict[str, bool] = {}  # tokens made of punctuation only (bounded by the chunks')
_SPACE_TOKEN = re.compile(r"^\s|\s\s|[^\S ]")  # whitespace the tokenizer makes a token of


@functools.cache
def _mark_search() -> re.Pattern[str]:
    bmp = "".join(re.escape(c) for c in sorted(cc.SENTENCE_CHARS) if c <= "\uffff")
    astral = "".join(re.escape(c) for c in sorted(cc.SENTENCE_CHARS) if c > "\uffff")
    return re.compile(cc.one_of(bmp, astral))


def _has_mark(text: str) -> bool:
    return _mark_search().search(text) is not None


def _tokens_and_spaces(text: str) -> Iterable[str]:
    """The tokens of ``text`` with the whitespace the tokenizer keeps as tokens: a leading
    run, and any other run except one single space."""
    if _SPACE_TOKEN.search(text) is None:
        return chain.from_iterable(chunk_splits(text))
    out: list[str] = []
    for i, piece in enumerate(_PIECES.findall(text)):
        if piece[0].isspace():
            if i and piece[0] == " ":
                piece = piece[1:]
            if piece:
                out.append(piece)
        else:
            out.extend(chunk_tokens(piece))
    return out
