"""``compat: datatrove`` word and sentence splitting (tasks/filters/compat_words.py) and
datatrove's punctuation sets (tasks/filters/compat_chars.py), on hand-made tricky strings.

Every expected value below was worked out by hand from the tokenizer's rules (exceptions,
prefixes, suffixes, URL, infixes, rejoined exceptions), as written in the module docstring."""

from __future__ import annotations

import pytest

from tasks.filters import compat_chars as cc
from tasks.filters.compat_words import sentence_count, words

CASES: list[tuple[str, list[str]]] = [
    # contractions are exceptions: "can't" is "ca" + "n't"; a suffix comes off first
    ("Don't stop, we can't.", ["Do", "n't", "stop", ",", "we", "ca", "n't", "."]),
    ("I'm gonna e-mail my well-known co-worker.",
     ["I", "'m", "gon", "na", "e", "-", "mail", "my", "well", "-", "known", "co", "-",
      "worker", "."]),
    # typographic apostrophes: the same exceptions, and "’s" as a suffix
    ("It’s John’s book, isn’t it?",
     ["It", "’s", "John", "’s", "book", ",", "is", "n’t", "it", "?"]),
    # a URL stays whole once its closing punctuation is off
    ("See https://example.com/a-b?x=1, or www.python.org.",
     ["See", "https://example.com/a-b?x=1", ",", "or", "www.python.org", "."]),
    ("e-mail: user@example.com", ["e", "-", "mail", ":", "user@example.com"]),
    # numbers keep their separators; a unit or "%" after a digit is cut off; "5pm" is an
    # exception once the full stop is off
    ("It costs $1,000.50 (about 3.5km) at 5pm.",
     ["It", "costs", "$", "1,000.50", "(", "about", "3.5", "km", ")", "at", "5", "pm", "."]),
    ("1.000.000 and 1 000 and 3,5 and 2024-01-15 and 10:30",
     ["1.000.000", "and", "1", "000", "and", "3,5", "and", "2024", "-", "01", "-", "15",
      "and", "10:30"]),
    ("He paid 50% (≈ €45)", ["He", "paid", "50", "%", "(", "≈", "€", "45", ")"]),
    # "-" between digits and "--" between letters split; "+" between letters and a leading
    # "-" do not
    ("pages 10-20, x--y, A+B 3*4 -5",
     ["pages", "10", "-", "20", ",", "x", "--", "y", ",", "A+B", "3", "*", "4", "-5"]),
    # ellipses: a trailing run of dots is one suffix, "…" inside a word an infix
    ("Wait... what?! Well…okay", ["Wait", "...", "what", "?", "!", "Well", "…", "okay"]),
    # quotes are prefixes / suffixes; "'It's" is a quote then the exception "It's"
    ('"Hello," she said. \'It\'s fine.\'',
     ['"', "Hello", ",", '"', "she", "said", ".", "'", "It", "'s", "fine", ".", "'"]),
    # several marks in a row are one token each
    ("Really?!? (yes!!) [see: below]",
     ["Really", "?", "!", "?", "(", "yes", "!", "!", ")", "[", "see", ":", "below", "]"]),
    # abbreviations are exceptions; "U.S." has no suffix (a full stop after one capital)
    ("Dr. Smith (U.S.) met Mr. Jones, e.g. at 10a.m. yesterday.",
     ["Dr.", "Smith", "(", "U.S.", ")", "met", "Mr.", "Jones", ",", "e.g.", "at", "10", "a.m.",
      "yesterday", "."]),
    # exceptions cut apart by the rules are put back together: "8)" and "''"
    ("Thanks :) see (1-8) and ''quoted'' C++",
     ["Thanks", ":)", "see", "(", "1", "-", "8)", "and", "''", "quoted", "''", "C++"]),
    # an icon is a prefix; the skin-tone modifier after it is not an icon; CJK text without
    # spaces is one token up to its closing full stop (the full-width comma is no infix)
    ("Great job 👍🏽! 你好，世界。", ["Great", "job", "👍", "🏽", "!", "你好，世界", "。"]),
    # every punctuation mark is a token; infixes: "..." anywhere, "," between letters,
    # ": < > = /" before a letter
    ("Hello, world.", ["Hello", ",", "world", "."]),
    ("a...b a,b x=y key:value a<b>c",
     ["a", "...", "b", "a", ",", "b", "x", "=", "y", "key", ":", "value", "a", "<", "b", ">",
      "c"]),
    # whitespace of any kind separates and is dropped
    ("a  b\tc\n\nd", ["a", "b", "c", "d"]),
    # pronoun + "ll" / "d" forms that are real words are not split; others are
    ("ill well its were wed Im dont cannot",
     ["ill", "well", "its", "were", "we", "d", "I", "m", "do", "nt", "can", "not"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:24] for c in CASES])
def test_words_split_as_datatrove_does(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_words_of_empty_and_blank_text() -> None:
    assert words("") == []
    assert words(" \n\t ") == []


SENTENCES: list[tuple[str, int]] = [
    ("Hello world. This is it! Really?", 3),
    ("He said... then left.", 1),  # "..." is one token, not a sentence end
    ("Wait!! (really) ok.", 2),  # punctuation after "!" does not start a sentence
    ("Dr. Smith arrived. Then", 2),  # "Dr." is one token
    ("e.g. this", 1),
    ("Version 3.5 is out.  Upgrade now.", 2),
    ("One.  ", 2),  # a run of two spaces is a token: after a full stop it starts a sentence
    ("  One. Two", 2),
    ("「你好。」世界。", 1),  # no token follows the last "。"; the first is inside a token
    ("no end mark at all", 1),
]


@pytest.mark.parametrize(("text", "expected"), SENTENCES, ids=[s[0] for s in SENTENCES])
def test_sentences_counted_as_the_sentencizer_counts(text: str, expected: int) -> None:
    assert sentence_count(text) == expected


def test_datatrove_punctuation_sets() -> None:
    ps, tp = cc.PUNCTUATION_SET, cc.TERMINAL_PUNCTUATION
    assert set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") <= ps
    assert "１" in ps and "►" in ps and "\r" in ps and "\x7f" in ps  # as datatrove has them
    assert "\t" not in ps and "\n" not in ps and "\u2018" not in ps and "a" not in ps
    assert tp <= ps
    assert {".", "!", "?", "。", "।", "؟", "\u061d"} <= tp  # newer marks too
    assert not {'"', "'", ",", "…", ";"} & tp
    # the sentencizer's marks are datatrove's terminal set without its newer additions
    assert cc.SENTENCE_CHARS < tp and "\u061d" not in cc.SENTENCE_CHARS
