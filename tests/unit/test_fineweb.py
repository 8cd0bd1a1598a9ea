"""FineWeb quality filter: exact stats, one failing text per rule, language awareness, the
sample corpus."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from filterkit import SAMPLE, probe, sample_records, table

from tasks.filter import first_failure
from tasks.filters import fineweb as fw
from tasks.filters.base import get_filter
from tasks.filters.fineweb import Config

P = "fineweb_quality"
STATS = ["line_punct_ratio", "short_line_ratio", "char_dup_ratio", "new_line_ratio"]
RULES = [f"{P}.{s}" for s in STATS]
ASCII_STOPS = ".'\"!?"  # datatrove's terminal punctuation

CLEAN = (
    "The old lighthouse stands at the edge of the northern cliffs, where the sea breaks "
    "against dark rocks and the wind carries the smell of salt far inland. For more than a "
    "century its keepers have climbed the narrow stairs each evening to light the lamp, and "
    "sailors returning from long voyages still look for its steady beam. Today the light is "
    "automatic, but the village takes care of the tower and opens it to visitors."
)
SENTS = [s.strip().rstrip(".") + "." for s in CLEAN.split(". ")]  # 3 long sentences


stats, decisions, fired = probe(fw, Config)


# --------------------------------------------------------------------------- interface
# (the contract every filter keeps is checked in test_filter_conformance.py)


def test_registry_and_module_constants():
    assert get_filter("fineweb_quality") is fw
    assert fw.SCORE_VERSION == 1


def test_published_defaults():
    c = Config()
    assert c.min_line_punct_ratio == 0.12
    assert c.line_punct_exclude_zero is False
    assert c.max_short_line_ratio == 0.67
    assert c.short_line_length == 30
    assert c.max_char_dup_ratio == 0.01
    assert c.max_new_line_ratio == 0.3
    assert set(ASCII_STOPS) <= set(c.terminal_punct)
    assert {"。", "！", "？", "…", "؟", "।"} <= set(c.terminal_punct)
    assert {"zh", "ja", "th"} <= set(c.no_space_langs)
    assert Config.SCORE_FIELDS == {"terminal_punct", "short_line_length", "no_space_langs",
                                   "compat"}  # compat: test_compat_*.py


def test_score_columns_and_rule_names():
    assert fw.SCORE_SCHEMA.names == [f"{P}_{s}" for s in STATS]
    assert all(f.type == pa.float32() for f in fw.SCORE_SCHEMA)
    assert list(fw.rules(fw.score(table([CLEAN]), Config()), Config())) == RULES


# --------------------------------------------------------------------------- exact stats


def test_hand_computed_stats():
    long = "This line is definitely longer than thirty chars"
    text = f"Hello world.\n\nshort\n{long}\nshort\n"
    # lines (blank one skipped): "Hello world." (12) "short" (5) long (48) "short" (5)
    s = stats(text)
    assert s["line_punct_ratio"] == pytest.approx(1 / 4)
    assert s["short_line_ratio"] == pytest.approx(3 / 4)
    assert s["char_dup_ratio"] == pytest.approx(5 / (12 + 5 + 48 + 5), rel=1e-6)
    # words: 2 + 1 + 8 + 1 = 12; line breaks between the 4 lines: 3
    assert s["new_line_ratio"] == pytest.approx(3 / 12)


def test_blank_lines_and_line_endings_do_not_change_scores():
    single = "First line of text here.\nSecond line, no stop\nThird one!"
    double = "First line of text here.  \r\n\r\n\r\nSecond line, no stop\r\n \t\nThird one!\n\n"
    assert stats(single) == stats(double)
    assert stats(single)["line_punct_ratio"] == pytest.approx(2 / 3, rel=1e-6)


def test_short_line_length_is_inclusive():
    assert stats("x" * 30 + ".")["short_line_ratio"] == 0.0  # 31 chars
    assert stats("x" * 29 + ".")["short_line_ratio"] == 1.0  # 30 chars
    assert stats("x" * 39 + ".", config=Config(short_line_length=40))["short_line_ratio"] == 1.0


def test_terminal_punctuation_of_other_scripts():
    text = "这是中文的一行文字。\n另一行也结束了！\n第三行呢？\n«Une citation.»\nनमस्ते।"
    assert stats(text, "zh")["line_punct_ratio"] == 1.0
    assert stats(text, "zh", Config(terminal_punct=ASCII_STOPS))["line_punct_ratio"] == 0.0


def test_empty_whitespace_and_null_text():
    for text in ["", " \n\n\t ", None]:
        assert all(v is None for v in stats(text).values())
        assert all(v is None for v in decisions(text or "").values())


# --------------------------------------------------------------------------- rules


def test_clean_paragraph_passes_every_rule():
    assert all(v is False for v in decisions(CLEAN).values())
    assert all(v is False for v in decisions("\n".join(SENTS)).values())


# 12 distinct short (<= 30 chars) sentences, 5-6 words each
SHORT_SENTENCES = [
    "The cat sat on the mat.",
    "A dog ran in the park.",
    "Birds sing at first light.",
    "We ate soup for lunch.",
    "Rain fell on the roof.",
    "She read a long novel.",
    "The bus was late again.",
    "He fixed the old clock.",
    "Snow covered the hills.",
    "They sailed at dawn today.",
    "My tea is getting cold.",
    "The bell rang at noon.",
]
# lines longer than 30 characters with only two words each
TWO_WORD_LINES = [
    "Internationalization considerations.",
    "Telecommunications infrastructure.",
    "Counterrevolutionary historiography.",
    "Electroencephalography laboratories.",
    "Incomprehensibility notwithstanding.",
]

FAIL_ONLY = {
    # three long lines, none ending in punctuation
    "line_punct_ratio": "\n".join(s.rstrip(".") for s in SENTS),
    # 12 short lines and 3 long ones: 12/15 short; ~6 words a line
    "short_line_ratio": "\n".join(SHORT_SENTENCES + SENTS),
    # one repeated 31-char line among the long ones: 31 / ~500 chars
    "char_dup_ratio": "\n".join([SENTS[0], "Thanks for reading this article.", *SENTS[1:]])
    + "\nThanks for reading this article.",
    # two words a line: 4 breaks / 10 words
    "new_line_ratio": "\n".join(TWO_WORD_LINES),
}


@pytest.mark.parametrize("rule", list(FAIL_ONLY))
def test_each_rule_fires_alone_on_its_failing_text(rule: str):
    assert fired(FAIL_ONLY[rule]) == {f"{P}.{rule}"}


def test_comparisons_are_the_published_ones():
    # line_punct_ratio <= 0.12 rejects: exactly 3 of 25 lines punctuated
    lines = [f"Line number {i} has no stop at its end" for i in range(22)] + SENTS
    s = stats("\n".join(lines))
    assert s["line_punct_ratio"] == pytest.approx(0.12)
    assert decisions("\n".join(lines))[f"{P}.line_punct_ratio"] is True
    # a ratio of 0 is kept when line_punct_exclude_zero is set
    text = FAIL_ONLY["line_punct_ratio"]
    assert (
        decisions(text, config=Config(line_punct_exclude_zero=True))[f"{P}.line_punct_ratio"]
        is False
    )
    # new_line_ratio > 0.3 rejects, == does not: 3 breaks / 10 words
    text = "one two three four.\nfive six.\nseven eight.\nnine ten."
    assert stats(text)["new_line_ratio"] == pytest.approx(0.3)
    assert decisions(text)[f"{P}.new_line_ratio"] is False


def test_threshold_changes_decisions_without_rescoring():
    scores = fw.score(table([FAIL_ONLY["short_line_ratio"], CLEAN]), Config())
    before = scores.to_pylist()
    rule = f"{P}.short_line_ratio"
    assert fw.rules(scores, Config())[rule].to_pylist() == [True, False]
    assert fw.rules(scores, Config(max_short_line_ratio=0.9))[rule].to_pylist() == [False, False]
    assert fw.rules(scores, Config(max_short_line_ratio=0.0))[rule].to_pylist() == [True, True]
    assert scores.to_pylist() == before


# --------------------------------------------------------------------------- languages


@pytest.mark.parametrize("lang", ["zh", "zh-Hant", "JA", "ja_JP", "th"])
def test_no_space_languages_skip_the_word_rule(lang: str):
    text = "第一行。\n第二行。\n第三行。\n第四行。"  # 4 lines, 4 whitespace tokens
    assert stats(text, "en")["new_line_ratio"] == pytest.approx(3 / 4)
    s = stats(text, lang)
    assert s["new_line_ratio"] is None
    assert s["line_punct_ratio"] == 1.0
    assert decisions(text, lang)[f"{P}.new_line_ratio"] is None


# --------------------------------------------------------------------------- real corpus


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"sample corpus not found at {SAMPLE}")
def test_sample_corpus_runs_with_plausible_rejections():
    records = sample_records()
    t = table([r["text"] for r in records], [r.get("lang") for r in records])
    config = Config()
    scores = fw.score(t, config)
    assert scores.num_rows == len(records)
    for name in scores.column_names[:3]:
        col = scores.column(name)
        assert pc.min(col).as_py() >= 0.0 and pc.max(col).as_py() <= 1.0

    reason, counts = first_failure(scores, {P: config})
    print("\nfineweb_quality on the sample:", len(records), "docs")
    for rule, c in counts.items():
        print(f"  {rule:34s} alone {c['alone']:4d}  first {c['first']:4d}")
    rejected = int((reason != "").sum())
    print(f"  rejected {rejected} ({rejected / len(records):.1%})")
    assert list(counts) == RULES
    assert 0.02 * len(records) <= rejected <= 0.25 * len(records)

    by_source = Counter(r["source"] for r in records)
    kept = Counter(r["source"] for r, why in zip(records, reason, strict=True) if not why)
    # encyclopedia prose is kept...
    assert kept["wikipedia-summaries"] >= 0.95 * by_source["wikipedia-summaries"]
    # ...HTML documentation pages with repeated navigation mostly are not
    assert kept["apache-httpd-docs"] <= 0.5 * by_source["apache-httpd-docs"]

    # CJK documents are not wiped out: their full stops count, and the word rule is off
    cjk = [i for i, r in enumerate(records) if r["lang"].lower().split("-")[0] in ("zh", "ja")]
    assert len(cjk) >= 5
    new_line = fw.rules(scores, config)[f"{P}.new_line_ratio"]
    assert all(new_line[i].as_py() is None for i in cjk)
    assert sum(1 for i in cjk if reason[i] == "") >= 3
    ascii_scores = fw.score(t.take(cjk), Config(terminal_punct=ASCII_STOPS))
    ours = scores.column(f"{P}_line_punct_ratio").take(cjk).to_pylist()
    theirs = ascii_scores.column(f"{P}_line_punct_ratio").to_pylist()
    assert all(a >= b for a, b in zip(ours, theirs, strict=True))
    assert sum(a > b for a, b in zip(ours, theirs, strict=True)) >= len(cjk) // 2
