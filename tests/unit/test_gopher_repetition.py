"""Gopher repetition filter: exact stats, one failing text per rule, language awareness, the
sample corpus."""

from __future__ import annotations

import random
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from filterkit import SAMPLE, probe, sample_records, table

from tasks.filter import first_failure
from tasks.filters import gopher_repetition as gr
from tasks.filters import text as tx
from tasks.filters.base import get_filter
from tasks.filters.gopher_repetition import Config

P = "gopher_repetition"
STATS = [
    "dup_para_frac",
    "dup_para_char_frac",
    "dup_line_frac",
    "dup_line_char_frac",
    "top_2gram_char_frac",
    "top_3gram_char_frac",
    "top_4gram_char_frac",
    *(f"dup_{n}gram_char_frac" for n in range(5, 11)),
]
RULES = [
    f"{P}.{r}"
    for r in [
        "dup_para_frac",
        "dup_para_char_frac",
        "dup_line_frac",
        "dup_line_char_frac",
        "top_2gram",
        "top_3gram",
        "top_4gram",
        *(f"dup_{n}gram" for n in range(5, 11)),
    ]
]

# Ordinary English prose, no repetition to speak of: passes every rule.
CLEAN = (
    "The old lighthouse stands at the edge of the northern cliffs, where the sea breaks "
    "against dark rocks and the wind carries the smell of salt far inland. For more than a "
    "century its keepers have climbed the narrow stairs each evening to light the lamp, and "
    "sailors returning from long voyages still look for its steady beam. Today the light is "
    "automatic, but the village takes care of the tower and opens it to visitors."
)
SENTS = [s.strip() for s in CLEAN.split(". ")]  # 3 sentences


stats, decisions, fired = probe(gr, Config)


def fillers(k: int, start: int = 100) -> list[str]:
    """k distinct words that repeat nothing: w100 w101 ..."""
    return [f"w{i}" for i in range(start, start + k)]


# --------------------------------------------------------------------------- interface
# (the contract every filter keeps is checked in test_filter_conformance.py)


def test_registry_and_module_constants():
    assert get_filter("gopher_repetition") is gr
    assert gr.SCORE_VERSION == 1


def test_published_defaults():
    c = Config()
    assert (c.max_dup_line_frac, c.max_dup_line_char_frac) == (0.30, 0.20)
    assert (c.max_dup_para_frac, c.max_dup_para_char_frac) == (0.30, 0.20)
    assert [getattr(c, f"max_top_{n}gram_char_frac") for n in (2, 3, 4)] == [0.20, 0.18, 0.16]
    assert [getattr(c, f"max_dup_{n}gram_char_frac") for n in range(5, 11)] == [
        0.15,
        0.14,
        0.13,
        0.12,
        0.11,
        0.10,
    ]
    assert {"zh", "ja", "th"} <= set(c.no_space_langs)
    assert Config.SCORE_FIELDS == {"no_space_langs", "compat"}  # compat: test_compat_*.py


def test_score_columns_and_rule_names():
    assert gr.SCORE_SCHEMA.names == [f"{P}_{s}" for s in STATS]
    assert all(f.type == pa.float32() for f in gr.SCORE_SCHEMA)
    assert list(gr.rules(gr.score(table([CLEAN]), Config()), Config())) == RULES


# --------------------------------------------------------------------------- exact stats


def test_hand_computed_line_paragraph_and_top_ngram_stats():
    text = "one two\n\none two\n\nthree\nfour"
    assert len(text) == 28
    s = stats(text)
    # paragraphs: "one two" | "one two" | "three\nfour"  -> 1 duplicate of 3, 7 chars
    assert s["dup_para_frac"] == pytest.approx(1 / 3, rel=1e-6)
    assert s["dup_para_char_frac"] == pytest.approx(7 / 28, rel=1e-6)
    # lines: "one two" "one two" "three" "four" -> 1 duplicate of 4, 7 chars
    assert s["dup_line_frac"] == pytest.approx(1 / 4, rel=1e-6)
    assert s["dup_line_char_frac"] == pytest.approx(7 / 28, rel=1e-6)
    # words: one two one two three four; "one two" twice, not overlapping: 2 * 7 chars
    assert s["top_2gram_char_frac"] == pytest.approx(14 / 28, rel=1e-6)
    # no 3-gram occurs twice, so no longer n-gram does either
    assert [s[f"top_{n}gram_char_frac"] for n in (3, 4)] == [0.0, 0.0]
    assert [s[f"dup_{n}gram_char_frac"] for n in range(5, 11)] == [0.0] * 6


def test_hand_computed_duplicate_ngram_stats():
    text = "the quick brown fox jumps, the quick brown fox jumps again"
    assert len(text) == 58
    s = stats(text)
    # 2-, 3-, 4-grams of "the quick brown fox" occur twice; ties go to the first seen
    assert s["top_2gram_char_frac"] == pytest.approx(2 * len("the quick") / 58, rel=1e-6)
    assert s["top_3gram_char_frac"] == pytest.approx(2 * len("the quick brown") / 58, rel=1e-6)
    assert s["top_4gram_char_frac"] == pytest.approx(2 * len("the quick brown fox") / 58, rel=1e-6)
    # the second "the quick brown fox jumps" repeats the first: its word characters (no spaces,
    # the comma is not part of the word) are covered
    assert s["dup_5gram_char_frac"] == pytest.approx(len("thequickbrownfoxjumps") / 58, rel=1e-6)
    assert [s[f"dup_{n}gram_char_frac"] for n in range(6, 11)] == [0.0] * 5


def test_overlapping_occurrences_count_once():
    text = "la la la la la la"  # 6 words, 17 chars
    s = stats(text)
    # "la la" occurs 5 times, overlapping: together they cover the whole text once
    assert s["top_2gram_char_frac"] == pytest.approx(1.0)
    assert s["top_4gram_char_frac"] == pytest.approx(1.0)
    # 5-grams at 0 and 1: the one at 1 repeats; it covers words 1..5 = 10 word characters
    assert s["dup_5gram_char_frac"] == pytest.approx(10 / 17, rel=1e-6)
    assert s["dup_6gram_char_frac"] == 0.0  # a single 6-gram


def test_words_are_cores_and_case_sensitive():
    # punctuation does not stop a repeat ("cat," == "cat."), case does
    s = stats("a cat, a cat. A Cat")
    assert s["top_2gram_char_frac"] == pytest.approx(2 * len("a cat") / 19, rel=1e-6)
    assert s["top_3gram_char_frac"] == 0.0


def test_blank_lines_and_paragraph_separators():
    # blank lines are never duplicate lines; whitespace-only lines and \r\n separate paragraphs
    text = "p one\r\n\r\np one\n \t\np one\n\n\n"
    s = stats(text)
    assert s["dup_para_frac"] == pytest.approx(2 / 3, rel=1e-6)
    assert s["dup_line_frac"] == pytest.approx(2 / 3, rel=1e-6)
    assert s["dup_line_char_frac"] == pytest.approx(10 / len(text), rel=1e-6)


def test_short_text_without_repetition_scores_zero():
    # datatrove scores the first n-gram of a text without repetition, rejecting this
    s = stats("Hello there, world.")
    assert all(v == 0.0 for v in s.values())
    assert fired("Hello there, world.") == set()


def test_empty_whitespace_and_null_text():
    assert all(v is None for v in stats("").values())
    assert all(v is None for v in stats(None).values())
    s = stats("  \n\n \n")
    assert s["dup_line_frac"] is None  # no non-blank line
    assert s["dup_para_frac"] == 0.0 and s["dup_line_char_frac"] == 0.0
    assert s["top_2gram_char_frac"] == 0.0  # no words: nothing repeats
    assert all(v is not True for v in decisions("").values())


def test_long_whitespace_runs_are_linear():
    import time

    start = time.perf_counter()
    s = stats("a" + " " * 200_000 + "b" + " \n" * 50_000 + "c")
    assert time.perf_counter() - start < 2.0
    assert s["dup_line_frac"] == 0.0


# --------------------------------------------------------------------------- rules


def test_clean_paragraph_passes_every_rule():
    assert all(v is False for v in decisions(CLEAN).values())


def _dup_ngram_only(n: int, threshold: float) -> str:
    """A text whose only repetition is one n-gram (n-1 short words and a long one) occurring
    twice, padded with distinct words until its coverage is just above ``threshold``: the
    (n-1)-gram rules see the same coverage but allow 0.01 more."""
    phrase = [chr(ord("a") + i) * 2 for i in range(n - 1)] + ["x" * 40]
    covered = sum(map(len, phrase))
    for k in range(1000):
        fill = fillers(k)
        text = " ".join([*phrase, *fill[: k // 2], *phrase, *fill[k // 2 :]])
        if covered / len(text) <= threshold + 0.005:
            return text
    raise AssertionError("unreachable")


# a symbol-only line: a duplicate of it adds characters but no words
SYMBOLS = "=-" * 100
# a two-line paragraph whose characters are mostly the first line's trailing spaces, which
# belong to the paragraph but not to the (right-stripped) line
SPACY_PARA = "Note:" + " " * 150 + "\nsee above."


def _repeat_with_fillers(gram: str, n_fill: int, times: int = 12) -> str:
    fill = iter(fillers(times * n_fill))
    return " ".join(f"{gram} " + " ".join(next(fill) for _ in range(n_fill)) for _ in range(times))


FAIL_ONLY = {
    # 1 of 3 paragraphs is a duplicate (tiny): paragraph count only
    "dup_para_frac": "\n".join(SENTS) + "\n\nYes.\n\nYes.",
    # 5 unique paragraphs and a duplicate of the spacious one: characters only
    "dup_para_char_frac": "\n\n".join([*SENTS, SPACY_PARA, "Fine.", SPACY_PARA]),
    # 2 of 6 lines repeat "Ok." (one paragraph): line count only
    "dup_line_frac": "\n".join([SENTS[0], "Ok.", SENTS[1], "Ok.", SENTS[2], "Ok."]),
    # 1 of 5 lines repeats a long symbol line: line characters only
    "dup_line_char_frac": "\n".join([SENTS[0], SYMBOLS, SENTS[1], SYMBOLS, SENTS[2]]),
    # "data mining" 12 times between distinct words: 2-gram only
    "top_2gram": _repeat_with_fillers("data mining", 1),
    # "aa bb cc" 12 times, 4 distinct words between: 3-gram (8/29) but not 2-gram (5/29)
    "top_3gram": _repeat_with_fillers("aa bb cc", 4),
    # "aa bb cc dd" 12 times, 7 distinct words between: 11/47 > 0.16, 8/47 < 0.18, 5/47
    "top_4gram": _repeat_with_fillers("aa bb cc dd", 7),
    **{f"dup_{n}gram": _dup_ngram_only(n, 0.20 - n / 100) for n in range(5, 11)},
}


@pytest.mark.parametrize("rule", list(FAIL_ONLY))
def test_each_rule_fires_alone_on_its_failing_text(rule: str):
    assert fired(FAIL_ONLY[rule]) == {f"{P}.{rule}"}


def test_threshold_changes_decisions_without_rescoring():
    scores = gr.score(table([FAIL_ONLY["top_2gram"], CLEAN]), Config())
    before = scores.to_pylist()
    assert gr.rules(scores, Config())[f"{P}.top_2gram"].to_pylist() == [True, False]
    loose = Config(max_top_2gram_char_frac=0.99)
    assert gr.rules(scores, loose)[f"{P}.top_2gram"].to_pylist() == [False, False]
    strict = Config(max_top_2gram_char_frac=0.0)  # CLEAN has repeated 2-grams ("the ...")
    assert gr.rules(scores, strict)[f"{P}.top_2gram"].to_pylist() == [True, True]
    assert scores.to_pylist() == before


def test_threshold_equal_to_score_does_not_reject():
    # 1 of 4 lines duplicated: 0.25 in float32 == threshold 0.25 -> passes (strictly greater)
    text = "\n".join([SENTS[0], "Ok.", SENTS[1], "Ok."])
    assert stats(text)["dup_line_frac"] == 0.25
    assert decisions(text, config=Config(max_dup_line_frac=0.25))[f"{P}.dup_line_frac"] is False


# --------------------------------------------------------------------------- languages


@pytest.mark.parametrize("lang", ["zh", "zh-CN", "ZH_tw", "ja-JP", "th"])
def test_no_space_languages_get_null_ngram_scores(lang: str):
    text = "这是一个句子。这是一个句子。\n\n这是一个句子。这是一个句子。"
    s = stats(text, lang)
    assert all(s[k] is None for k in STATS[4:])
    # line and paragraph rules still apply
    assert s["dup_para_frac"] == pytest.approx(0.5)
    d = decisions(text, lang)
    assert d[f"{P}.dup_para_frac"] is True
    assert all(d[r] is None for r in RULES[4:])


def test_no_space_langs_is_configurable():
    text = "a b a b a b"
    assert stats(text, "xx")["top_2gram_char_frac"] == pytest.approx(9 / 11, rel=1e-6)
    scores = gr.score(table([text], ["xx"]), Config(no_space_langs=["xx"]))
    assert scores.column(f"{P}_top_2gram_char_frac").to_pylist() == [None]


# --------------------------------------------------------------------------- real corpus


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"sample corpus not found at {SAMPLE}")
def test_sample_corpus_runs_with_plausible_rejections():
    records = sample_records()
    t = table([r["text"] for r in records], [r.get("lang") for r in records])
    config = Config()
    scores = gr.score(t, config)
    assert scores.num_rows == len(records)
    for name in scores.column_names:  # every fraction is a fraction
        col = scores.column(name)
        assert pc.min(col).as_py() >= 0.0 and pc.max(col).as_py() <= 1.0

    reason, counts = first_failure(scores, {P: config})
    print("\ngopher_repetition on the sample:", len(records), "docs")
    for rule, c in counts.items():
        print(f"  {rule:36s} alone {c['alone']:4d}  first {c['first']:4d}")
    rejected = int((reason != "").sum())
    print(f"  rejected {rejected} ({rejected / len(records):.1%})")
    assert list(counts) == RULES
    assert 0.005 * len(records) <= rejected <= 0.10 * len(records)

    by_source = Counter(r["source"] for r in records)
    wiki_rejected = sum(
        1
        for r, why in zip(records, reason, strict=True)
        if r["source"] == "wikipedia-summaries" and why
    )
    # short summaries whose first sentence repeats the title ("Isaiah Berlin\n\nSir Isaiah
    # Berlin was ...") fail the top n-gram rules: ~3% (datatrove rejects ~15% of them)
    assert wiki_rejected <= 0.05 * by_source["wikipedia-summaries"]

    # CJK documents: the word n-gram rules do not apply, and most are kept
    cjk = [i for i, r in enumerate(records) if r["lang"].lower().split("-")[0] in ("zh", "ja")]
    assert len(cjk) >= 5
    out = gr.rules(scores, config)
    for rule in RULES[4:]:
        assert all(out[rule][i].as_py() is None for i in cjk)
    assert sum(1 for i in cjk if reason[i] == "") >= 0.7 * len(cjk)


def test_batch_ngram_path_matches_the_python_definition() -> None:
    """The vectorised pass over many documents gives, per document, the integers of the
    plain-Python definition: on the sample, hand-made repetitive texts, ties, overlaps,
    documents shorter than n, empty ones, in either order."""
    texts = [r["text"] for r in sample_records()[:600]] + [
        "a b " * 60, "the cat sat on the mat " * 20, "x y z " * 30 + "w",
        "one two three four five " * 12, "a " * 100, "  ".join(["w"] * 47), "",
        "a a a", "a b a b", "b a a b a a", "w1 w2 w3 w4 w5 w1 w2 w3 w4 w5 w6",
        "A a A a a", "x", "x y", "p q r s t u v w x y p q r s t u v w x y",
        "tie1 tie2 tie1 tie2 z9 z8 z9 z8"]
    words = [tx.words(t) for t in texts]
    expect = [gr._ngram_chars(ws) for ws in words]
    assert gr._ngram_chars_batch(words).tolist() == expect
    assert gr._ngram_chars_batch(words[::-1]).tolist() == expect[::-1]
    assert gr._ngram_chars_batch([]).shape == (0, len(gr.TOP_NS) + len(gr.DUP_NS))
    # the n-gram numbers never mix documents: two copies of one text score as one does
    twice = gr._ngram_chars_batch([words[-1], words[-1]]).tolist()
    assert twice == [expect[-1], expect[-1]]


def test_batch_ngram_path_on_random_small_vocabularies() -> None:
    """Texts of random lengths, each word drawn from the first 2-6 words of a 6-word
    vocabulary: dense repeats, ties between n-grams, repeated (n-1)-grams whose n-grams do
    not repeat (the passes skip the other positions)."""
    rng = random.Random(7)
    vocab = ["a", "bb", "ccc", "dddd", "é", "ff"]
    words = [[rng.choice(vocab[:rng.randint(2, 6)]) for _ in range(rng.randint(0, 60))]
             for _ in range(400)]
    assert gr._ngram_chars_batch(words).tolist() == [gr._ngram_chars(ws) for ws in words]


def test_score_cuts_large_batches_without_changing_scores(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    texts = [r["text"] for r in sample_records()[:300]]
    t = table(texts, [None] * len(texts))
    whole = gr.score(t, gr.Config()).to_pylist()
    monkeypatch.setattr(gr, "BATCH_WORDS", 500)
    assert len(gr._word_batches([tx.words(x) for x in texts])) > 10
    assert gr.score(t, gr.Config()).to_pylist() == whole
