"""C4 quality filter, document-level decisions (Raffel et al. 2020, "Exploring the Limits of
Transfer Learning", section 2.2; rules and defaults as in datatrove's ``C4QualityFilter`` and
the TFDS ``c4_utils`` it follows).

C4 both EDITS documents (drops the lines its line rules reject) and rejects documents. This
module only scores and rejects: it never rewrites ``text``; the edit is the separate ``c4_lines``
step (tasks/filters/c4_lines.py, same line rules, listed before this filter in a recipe). The
scores count the lines the line rules WOULD remove, and the sentence count is taken over the
lines they would keep, so ``min_sentences`` decides exactly as C4 does after its line edits.

Line rules (a *line* is a non-blank line of ``str.splitlines()``, stripped; a line is *flagged*
when any enabled rule removes it):

- ``max_word_length``: a whitespace token longer than 1000 characters.
- ``remove_citations``: Wikipedia-style citation marks (``[1]``, ``[edit]``, ``[citation
  needed]``) are removed from the line first (a line left empty is removed).
- ``filter_no_terminal_punct``: the line does not end in
  terminal punctuation (``Config.terminal_punct``: ``. ! ? " '``, typographic closing quotes,
  and the full stops / question / exclamation marks of other scripts such as CJK ``。 ！ ？``),
  or it ends in an ellipsis (``...`` / ``…``).
- ``min_words_per_line``: fewer than 3 whitespace tokens.
- ``filter_javascript``: the lowercased line contains ``javascript``.
- ``filter_policy``: the lowercased line contains a ``policy_substrings`` phrase (terms of use,
  privacy policy, cookie notices).

For a language in ``no_space_langs`` (scripts written without spaces) whitespace tokens are not
words, so the two word rules (``min_words_per_line``, ``max_word_length``) do not flag lines;
the punctuation, javascript and policy rules still do.

Sentences: a kept line has 1 + (number of sentence boundaries inside it) sentences. A boundary
is a run of sentence-ending marks (``. ! ? …`` and other scripts' ``؟ । ։ ።`` ...) followed by
optional closing quotes/brackets, whitespace and a character that is not a lowercase letter; a
period right after a one-character word (``J. R. R. Tolkien``, ``e.g.``, ``U.S.``) is not a
boundary. CJK full stops (``。 ！ ？ ． ｡``) end a sentence wherever they are followed by more
text, space or not.

Score columns (``c4_quality_<stat>``):

- ``n_sentences`` (int32): sentences in the lines the line rules keep.
- ``lorem_ipsum`` (bool): a line that passed the long-word, punctuation and words-per-line
  rules contains ``lorem ipsum`` (lowercased), as in C4.
- ``curly_bracket`` (bool): such a line, not removed by the javascript rule, contains ``{``.
- ``lines_flagged`` (int32): lines the line rules would remove.
- ``lines_total`` (int32): lines.

Rules, in order: ``lorem_ipsum``, ``curly_bracket`` (``filter_curly_bracket`` turns it off:
code documentation trips it), ``all_lines_flagged`` (every line would be removed, including a
text without lines), ``min_sentences`` (fewer than 5). A rule that is switched off is null (does
not apply).

Deliberate differences from datatrove: blank lines are not lines
(datatrove counts them, always flagged for lacking punctuation); the sentence splitter is the
rule above rather than NLTK's English Punkt model (which is not language-aware and needs a
download); terminal punctuation covers other scripts; a line is stripped again after citation
removal (``"Done. [1]"`` ends in ``.``); ``…`` is an ellipsis like ``...``. The C4 bad-words
rule is not part of this filter.

``compat: datatrove`` replaces the definitions above with datatrove 0.10.1's (line loop
differences in ``LineJudge``; words and sentences: ``tasks/filters/compat.py``), for
reproducing FineWeb.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters import compat
from tasks.filters import compat_chars as cc
from tasks.filters import text as tx
from tasks.filters.base import FilterConfig, score_schema
from tasks.filters.compat import Compat
from tasks.filters.compat_words import sentence_count
from tasks.identity import SCORED

NAME = "c4_quality"
SCORE_VERSION = 4  # 4: "lorem ipsum" split by a citation mark is seen (one loop with compat)

SCORE_SCHEMA = score_schema(NAME, n_sentences=pa.int32(), lorem_ipsum=pa.bool_(),
                            curly_bracket=pa.bool_(), lines_flagged=pa.int32(),
                            lines_total=pa.int32())

POLICY_SUBSTRINGS: tuple[str, ...] = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
# sentence ends that need a following space (Latin & co.) / that do not (CJK)
_SPACED_ENDS = "".join(c for c in tx.SENTENCE_END + "…" if c not in "。！？．｡")
_CJK_ENDS = "。！？．｡"




class LineRules(FilterConfig):
    """C4's line rules (shared by this filter's scores and the ``c4_lines`` edit step)."""

    remove_citations: Annotated[bool, SCORED] = Field(
        True, description="ignore [1], [edit], [citation needed] at line ends (score)"
    )
    filter_no_terminal_punct: Annotated[bool, SCORED] = Field(
        True, description="flag lines not ending in terminal punctuation, or in an ellipsis (score)"
    )
    min_words_per_line: Annotated[int, SCORED] = Field(
        3, ge=0, description="flag lines with fewer whitespace tokens; 0 = off (score)"
    )
    max_word_length: Annotated[int | None, SCORED] = Field(
        1000, ge=1, description="flag lines with a longer token; null = off (score)"
    )
    filter_javascript: Annotated[bool, SCORED] = Field(
        True, description='flag lines mentioning "javascript" (score)')
    filter_policy: Annotated[bool, SCORED] = Field(
        True, description="flag lines containing a policy_substrings phrase (score)"
    )
    policy_substrings: Annotated[list[str], SCORED] = Field(
        default_factory=lambda: list(POLICY_SUBSTRINGS),
        description="cookie / privacy / terms-of-use phrases, matched lowercased (score)",
    )
    terminal_punct: Annotated[str, SCORED] = Field(
        tx.TERMINAL_PUNCT, min_length=1, description="characters that end a line (score)"
    )
    no_space_langs: Annotated[list[str], SCORED] = Field(
        default_factory=lambda: list(tx.DEFAULT_NO_SPACE_LANGS),
        description="languages written without spaces: the two word rules are off (score)",
    )
    compat: Annotated[Compat | None, SCORED] = Field(
        None, description="datatrove: datatrove 0.10.1's line loop and sentences; "
        "terminal_punct and no_space_langs unused (docs/filters.md) (score)")


class Config(LineRules):
    """C4's published rules and defaults, document-level (the ``c4_lines`` step edits)."""


    # document rules (thresholds)
    min_sentences: int = Field(
        5, ge=0, description="reject when the kept lines hold fewer sentences; 0 = off"
    )
    filter_lorem_ipsum: bool = Field(True, description='reject text containing "lorem ipsum"')
    filter_curly_bracket: bool = Field(
        True, description='reject text containing "{" (trips on code documentation)'
    )
    filter_all_lines_flagged: bool = Field(
        True, description="reject when the line rules would remove every line"
    )


# --------------------------------------------------------------------------- sentences


@functools.cache
def _boundary_re() -> re.Pattern[str]:
    """Sentence boundaries INSIDE a stripped line (the line's end is not matched)."""
    lower = tx.char_class(("Ll",))
    ends = re.escape(_SPACED_ENDS)
    other = re.escape(_SPACED_ENDS.replace(".", ""))
    closers = re.escape(tx.CLOSERS)
    cjk = re.escape(_CJK_ENDS)
    # A match starts only at the first mark of a run (the lookbehinds) and never backtracks
    # (possessive quantifiers), so long runs of dots stay linear. The pattern opens with the
    # marks' class, which `re` uses to skip to the next mark (~10x faster than testing the
    # lookbehinds at every character); the lookbehinds, after the mark, read one character
    # more: `(?<![ends].)` is "the character before the mark is not an end".
    spaced = rf"(?<=[.{other}])(?<![{ends}].)(?<!\b\w\.)[{ends}]*+[{closers}]*+\s++(?!{lower})"
    unspaced = rf"(?<=[{cjk}])(?<![{cjk}].)[{cjk}]*+[{closers}]*+(?!$)"  # "。次"
    return re.compile(f"[.{other}{cjk}](?:{spaced}|{unspaced})")


def count_sentences(line: str) -> int:
    """Sentences in one stripped, non-empty line (see the module docstring)."""
    return 1 + len(_boundary_re().findall(line))


# --------------------------------------------------------------------------- score


class LineJudge:
    """C4's line rules compiled once per config: ``kept_lines(text, lang)`` returns the lines
    the rules keep (citations removed when ``remove_citations``) and the number of lines.

    One loop for both dialects. With ``compat: datatrove`` (``dt``) it is datatrove 0.10.1's,
    which differs in four places: blank lines are lines (and fail the rules); a line is not
    stripped again after citation removal, and a line left empty stays; terminal punctuation
    is C4's five marks and only ``...`` is an ellipsis; the word rules apply in every
    language. Its sentences are counted by the sentencizer and the edit is stripped."""

    def __init__(self, c: LineRules) -> None:
        self.c = c
        self.dt = c.compat == compat.DATATROVE
        self.is_no_space = tx.NoSpaceLangs([] if self.dt else c.no_space_langs)
        self.terminal = cc.C4_END_PUNCTUATION if self.dt else tuple(c.terminal_punct)
        self.ellipses: tuple[str, ...] = ("...",) if self.dt else tx.ELLIPSES
        policy = [p.lower() for p in c.policy_substrings if p] if c.filter_policy else []
        self.policy_search = re.compile("|".join(map(re.escape, policy))).search if policy else None

    def sentences(self, kept: list[str]) -> int:
        if self.dt:
            return sum(map(sentence_count, kept))
        boundaries = _boundary_re().findall
        return sum(1 + len(boundaries(line)) for line in kept)

    def edited(self, kept: list[str]) -> str:
        joined = "\n".join(kept)
        return joined.strip() if self.dt else joined

    def kept_lines(self, text: str, lang: str | None) -> tuple[list[str], int, bool, bool]:
        """(kept lines, number of lines, lorem ipsum seen, curly bracket seen). The rules run in
        C4's order (TFDS ``c4_utils.clean_page``): long word, citations, terminal
        punctuation, words per line; then "lorem ipsum" (a document rule), javascript, "{" (a
        document rule), policy. So the two document rules only see lines that survived the
        line rules before them, as in C4."""
        c, dt = self.c, self.dt
        lines = text.splitlines()
        if not dt:
            lines = list(filter(None, map(str.strip, lines)))
        # whole-text pre-checks: a per-line test runs only where the text can fail it (a
        # line's tokens are the text's; citation marks never span lines, so the text without
        # them holds every phrase a cleaned line can hold)
        cite = c.remove_citations
        low = (_CITATION.sub("", text) if cite and "[" in text else text).lower()
        long_word = c.max_word_length
        word_rules = not self.is_no_space(lang)
        check_long = (
            word_rules
            and long_word is not None
            and len(text) > long_word
            and max(map(len, text.split()), default=0) > long_word
        )
        min_words = c.min_words_per_line
        check_words = word_rules and min_words > 0
        check_lorem = "lorem ipsum" in low
        check_curly = "{" in text
        check_js = c.filter_javascript and "javascript" in low
        policy_search = self.policy_search
        check_policy = policy_search is not None and policy_search(low) is not None
        check_punct = c.filter_no_terminal_punct
        terminal, ellipses = self.terminal, self.ellipses

        kept: list[str] = []
        lorem = curly = False
        for line in lines:
            if dt:
                line = line.strip()
            # the word rules count the line's tokens before citations are removed
            tokens = line.split() if check_long else None
            if check_long and max(map(len, tokens), default=0) > long_word:  # type: ignore[arg-type]
                continue
            before = line
            if cite and "[" in line:
                line = _CITATION.sub("", line)
                if not dt:
                    line = line.strip()
                    if not line:
                        continue
            if check_punct and (not line.endswith(terminal) or line.endswith(ellipses)):
                continue
            # split only as far as the rule looks: at most min_words + 1 pieces, and fewer
            # than min_words exactly when the whole split has fewer
            if check_words and len(tokens if tokens is not None else
                                   before.split(None, min_words)) < min_words:
                continue
            if check_lorem or check_js or check_curly or check_policy:
                line_low = line.lower()
                if check_lorem and "lorem ipsum" in line_low:
                    lorem = True
                if check_js and "javascript" in line_low:
                    continue
                if check_curly and "{" in line:
                    curly = True
                if check_policy and policy_search(line_low) is not None:  # type: ignore[misc]
                    continue
            kept.append(line)
        return kept, len(lines), lorem, curly


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    """One row of ``c4_quality_*`` columns per input row, same order."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.score needs a {__name__}.Config, got {type(config).__name__}")
    texts, langs = tx.texts_and_langs(table)
    judge = LineJudge(config)

    n_sentences: list[int] = []
    lorem: list[bool] = []
    curly: list[bool] = []
    flagged: list[int] = []
    total: list[int] = []
    for text, lang in zip(texts, langs, strict=True):
        text = text or ""
        kept, n_lines, has_lorem, has_curly = judge.kept_lines(text, lang)
        lorem.append(has_lorem)
        curly.append(has_curly)
        total.append(n_lines)
        flagged.append(n_lines - len(kept))
        n_sentences.append(judge.sentences(kept))

    columns = (n_sentences, lorem, curly, flagged, total)
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, SCORE_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=SCORE_SCHEMA)


# --------------------------------------------------------------------------- rules


def rules(scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]:
    """rule name -> BooleanArray, True where the document FAILS; a switched-off rule is null."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.rules needs a {__name__}.Config, got {type(config).__name__}")
    c = config
    n = scores.num_rows
    lorem = tx.column(scores, f"{NAME}_lorem_ipsum")
    curly = tx.column(scores, f"{NAME}_curly_bracket")
    flagged = tx.column(scores, f"{NAME}_lines_flagged")
    total = tx.column(scores, f"{NAME}_lines_total")
    return {
        f"{NAME}.lorem_ipsum": lorem if c.filter_lorem_ipsum else tx.not_applicable(n),
        f"{NAME}.curly_bracket": curly if c.filter_curly_bracket else tx.not_applicable(n),
        f"{NAME}.all_lines_flagged": (
            pc.equal(flagged, total) if c.filter_all_lines_flagged else tx.not_applicable(n)
        ),
        f"{NAME}.min_sentences": tx.lt(tx.column(scores, f"{NAME}_n_sentences"), c.min_sentences),
    }
