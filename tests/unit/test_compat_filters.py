"""``compat: datatrove`` on the four heuristic filters: hand-built documents that sit exactly on
each default threshold (datatrove's comparisons decide which side they fall), the places where
compat mode and the default mode disagree by design, and the filter contract in compat mode.
Expected values are worked out by hand from datatrove's formulas (tasks/filters/compat.py)."""

from __future__ import annotations

from itertools import product

import pytest
from filterkit import EDGE_CASES, check_filter_module, doc_table, probe, sample_records

from tasks.filters import c4, c4_lines, fineweb, gopher, gopher_repetition
from tasks.filters.base import get_filter

DT = {"compat": "datatrove"}
g_stats, _, g_fired = probe(gopher, gopher.Config)
r_stats, _, r_fired = probe(gopher_repetition, gopher_repetition.Config)
f_stats, _, f_fired = probe(fineweb, fineweb.Config)
c_stats, _, c_fired = probe(c4, c4.Config)
G, R, F, C = (m.Config(**DT) for m in (gopher, gopher_repetition, fineweb, c4))


def padded(core: str, size: int) -> str:
    """``core`` followed by distinct filler words (no repeated n-gram) up to ``size`` chars."""
    fillers = ("q" + "".join(p) for p in product("bcdfghjklm", repeat=3))
    out = core
    while size - len(out) > 5:
        out += " " + next(fillers)
    room = size - len(out)
    out += " " + "x" * (room - 1) if room > 1 else " " * room
    assert len(out) == size
    return out


# --------------------------------------------------------------------------- Gopher quality


def test_gopher_word_count_on_the_threshold() -> None:
    assert "gopher_quality.min_words" not in g_fired(" ".join(["cat"] * 50), config=G)
    assert "gopher_quality.min_words" in g_fired(" ".join(["cat"] * 49), config=G)
    # punctuation tokens are not words; contractions are two
    assert g_stats(" ".join(["cat ,"] * 49), config=G)["n_words"] == 49
    assert "gopher_quality.min_words" not in g_fired("don't " * 25, config=G)
    assert "gopher_quality.min_words" in g_fired("don't " * 25)  # default: 25 words


def test_gopher_mean_word_length_on_the_thresholds() -> None:
    rule = "gopher_quality.mean_word_length"
    assert g_stats("ab abcd " * 25, config=G)["mean_word_length"] == 3.0
    assert rule not in g_fired("ab abcd " * 25, config=G)
    assert rule in g_fired("ab abcd " * 25 + "ab", config=G)  # 152 / 51
    assert rule not in g_fired("abcdefghij " * 50, config=G)
    assert rule in g_fired("abcdefghij " * 49 + "abcdefghijklm", config=G)
    # "can't" is "ca" + "n't": 2.5 here, 5 in the default mode
    assert g_stats("can't " * 50, config=G)["mean_word_length"] == 2.5
    assert rule in g_fired("can't " * 50, config=G) and rule not in g_fired("can't " * 50)


@pytest.mark.parametrize(("mark", "rule"), [("#", "hash_word_ratio"),
                                            ("...", "ellipsis_word_ratio")])
def test_gopher_symbol_ratios_on_the_threshold(mark: str, rule: str) -> None:
    # over every token, symbols included: 10 / 100 is the threshold
    on = " ".join(["cat"] * 90 + [mark] * 10)
    assert f"gopher_quality.{rule}" not in g_fired(on, config=G)
    assert f"gopher_quality.{rule}" in g_fired(" ".join(["cat"] * 89 + [mark] * 11), config=G)
    assert f"gopher_quality.{rule}" in g_fired(on)  # default: 10 / 90 words


def test_gopher_line_fractions_count_blank_lines() -> None:
    bullets = ["- item one two"] * 9
    with_blank = "\n".join(bullets[:5] + [""] + bullets[5:])  # 9 bullets of 10 lines
    assert g_stats(with_blank, config=G)["bullet_lines_frac"] == pytest.approx(0.9)
    assert "gopher_quality.bullet_lines" not in g_fired(with_blank, config=G)
    assert "gopher_quality.bullet_lines" in g_fired(with_blank)  # default: 9 of 9 lines
    assert "gopher_quality.bullet_lines" in g_fired("\n".join(["• item"] * 10), config=G)
    assert "gopher_quality.bullet_lines" not in g_fired("\n".join(["* item"] * 10), config=G)
    ends = ["it trails off..."] * 3 + ["it ends."] * 7
    assert "gopher_quality.ellipsis_lines" not in g_fired("\n".join(ends), config=G)
    assert "gopher_quality.ellipsis_lines" in g_fired("\n".join(ends[:4] + ends[5:] + ends[:1]),
                                                      config=G)


def test_gopher_alpha_words_on_the_threshold() -> None:
    rule = "gopher_quality.alpha_words"
    assert rule not in g_fired(" ".join(["cat"] * 80 + ["5"] * 20), config=G)
    assert rule in g_fired(" ".join(["cat"] * 79 + ["5"] * 21), config=G)
    # every punctuation mark is a token: "Hello, world." is 2 of 4
    assert g_stats("Hello, world. " * 30, config=G)["alpha_words_frac"] == 0.5
    assert rule in g_fired("Hello, world. " * 30, config=G)
    assert rule not in g_fired("Hello, world. " * 30)


def test_gopher_stop_words_english_and_case_sensitive() -> None:
    rule = "gopher_quality.stop_words"
    assert g_stats("the cat and the dog", config=G)["stop_words"] == 2
    assert rule not in g_fired("the cat and the dog", config=G)
    assert rule in g_fired("The cat And the the dog", config=G)  # "The", "And" do not count
    assert g_stats("The cat And the dog")["stop_words"] == 2  # default: lowercased
    french = "le chat et le chien"
    assert rule in g_fired(french, lang="fr", config=G)  # English list for every language
    assert rule not in g_fired(french, lang="fr")  # default: no French list, no rule


def test_compat_ignores_the_language_settings() -> None:
    """Every document is English to datatrove: no language is exempt from the word rules, and
    FineWeb's own terminal marks are used whatever terminal_punct says."""
    chinese = "长城是中国古代的军事防御工程。"
    assert g_stats(chinese, lang="zh", config=G)["n_words"] == 1  # one chunk, then "。"
    assert g_stats(chinese, lang="zh")["n_words"] is None  # default: no words in zh
    trailing = "A line that ends in a full stop.   \nAnother line that ends in one."
    assert f_stats(trailing, config=F)["line_punct_ratio"] == 0.5  # trailing spaces kept
    assert f_stats(trailing)["line_punct_ratio"] == 1.0  # default: stripped
    text = "A line that ends in a full stop.\nA line ending without one"
    other = fineweb.Config(compat="datatrove", terminal_punct="x")
    assert f_stats(text, config=other) == f_stats(text, config=F)
    assert f_stats(text, config=F)["line_punct_ratio"] == 0.5


# --------------------------------------------------------------------------- Gopher repetition


def test_repetition_paragraphs_and_lines_on_the_threshold() -> None:
    paras = [f"paragraph number {w}" for w in ("one", "two", "three", "four", "five",
                                                "six", "seven")]
    three = paras + paras[:3]  # 3 of 10 repeat an earlier one
    four = paras[:6] + paras[:4]
    assert r_stats("\n\n".join(three), config=R)["dup_para_frac"] == pytest.approx(0.3)
    assert "gopher_repetition.dup_para_frac" not in r_fired("\n\n".join(three), config=R)
    assert "gopher_repetition.dup_para_frac" in r_fired("\n\n".join(four), config=R)
    assert "gopher_repetition.dup_line_frac" not in r_fired("\n".join(three), config=R)
    assert "gopher_repetition.dup_line_frac" in r_fired("\n".join(four), config=R)


def test_repetition_top_ngram_on_the_threshold() -> None:
    core = "ab cd ab cd ab cd ab cd"  # "ab cd" 4 times: 5 x 4 = 20 characters
    assert r_stats(padded(core, 100), config=R)["top_2gram_char_frac"] == pytest.approx(0.2)
    assert "gopher_repetition.top_2gram" not in r_fired(padded(core, 100), config=R)
    assert "gopher_repetition.top_2gram" in r_fired(padded(core, 99), config=R)
    # datatrove scores the first 2-gram of a text without repeats: 11 of 19 characters
    assert r_stats("Hello there, world.", config=R)["top_2gram_char_frac"] == \
        pytest.approx(11 / 19)
    assert "gopher_repetition.top_2gram" in r_fired("Hello there, world.", config=R)
    assert "gopher_repetition.top_2gram" not in r_fired("Hello there, world.")


def test_repetition_duplicated_ngrams_on_the_threshold() -> None:
    core = "aaa bbb ccc ddd eee aaa bbb ccc ddd eee"  # the second 5-gram repeats: 15 chars
    assert r_stats(padded(core, 100), config=R)["dup_5gram_char_frac"] == pytest.approx(0.15)
    assert "gopher_repetition.dup_5gram" not in r_fired(padded(core, 100), config=R)
    assert "gopher_repetition.dup_5gram" in r_fired(padded(core, 99), config=R)


def test_repetition_empty_text_is_dropped() -> None:
    assert "gopher_repetition.dup_para_frac" in r_fired("", config=R)
    assert not r_fired("")  # default: every score null


def test_repetition_numpy_path_matches_the_plain_one() -> None:
    """Long texts take the numpy path (hashed n-grams, greedy walk); it gives the plain
    path's numbers, also on heavy repetition where the reading jumps over first occurrences."""
    import random

    from tasks.filters import compat_ngrams as cn
    from tasks.filters.compat_words import words

    rng = random.Random(0)
    texts = [" ".join(rng.choice(["a", "bb", "a,", "c.", "(d)"]) for _ in range(n))
             for n in (600, 1500, 3000)]
    texts += [r["text"] for r in sample_records() if len(r["text"]) > 6000][:10]
    tops, dups = (2, 3, 4), (5, 6, 7, 8, 9, 10)
    for text in texts:
        ws = words(text)
        assert len(ws) >= cn.NUMPY_MIN_TOKENS
        assert cn.ngram_chars(ws, tops, dups) == cn._plain(ws, tops, dups)


# --------------------------------------------------------------------------- FineWeb


def test_fineweb_comparisons_are_strict_on_the_thresholds() -> None:
    long_line = "this line is longer than thirty characters"
    punct = "\n".join([long_line + "."] * 3 + [long_line] * 22)  # 3 of 25 = 0.12
    assert f_stats(punct, config=F)["line_punct_ratio"] == pytest.approx(0.12)
    assert "fineweb_quality.line_punct_ratio" not in f_fired(punct, config=F)
    assert "fineweb_quality.line_punct_ratio" in f_fired(punct)  # default: <= 0.12
    two = "\n".join([long_line + "."] * 2 + [long_line] * 23)
    assert "fineweb_quality.line_punct_ratio" in f_fired(two, config=F)
    short = "\n".join([f"short line {i}." for i in range(67)] +
                      [f"{long_line} {i}." for i in range(33)])  # 67 of 100
    assert "fineweb_quality.short_line_ratio" not in f_fired(short, config=F)
    assert "fineweb_quality.short_line_ratio" in f_fired(short)  # default: >= 0.67
    more = "\n".join([f"short line {i}." for i in range(68)] +
                     [f"{long_line} {i}." for i in range(32)])
    assert "fineweb_quality.short_line_ratio" in f_fired(more, config=F)


def test_fineweb_duplicate_characters_on_the_threshold() -> None:
    # one repeated 10-character line in 1000 characters (line breaks not counted)
    lines = ["0123456789", "0123456789"] + [f"line number {i:08d}" for i in range(49)]
    assert f_stats("\n".join(lines), config=F)["char_dup_ratio"] == pytest.approx(0.01)
    assert "fineweb_quality.char_dup_ratio" not in f_fired("\n".join(lines), config=F)
    assert "fineweb_quality.char_dup_ratio" in f_fired("\n".join(lines[:-1]), config=F)


def test_fineweb_new_lines_per_token() -> None:
    ten = "one two three four five six seven eight nine ten"
    assert "fineweb_quality.new_line_ratio" not in f_fired(ten + ".\n\n\n", config=F)  # 3 / 11
    assert f_stats(ten + "\n\n\n", config=F)["new_line_ratio"] == pytest.approx(0.3)
    assert "fineweb_quality.new_line_ratio" not in f_fired(ten + "\n\n\n", config=F)
    assert "fineweb_quality.new_line_ratio" in f_fired(ten + "\n\n\n\n", config=F)


def test_fineweb_text_without_lines_is_dropped() -> None:
    assert "fineweb_quality.line_punct_ratio" in f_fired(" \n \n", config=F)
    assert not f_fired(" \n \n")  # default: null scores


# --------------------------------------------------------------------------- C4


def test_c4_sentences_on_the_threshold() -> None:
    five = ("One two three. Four five six. Seven eight nine. Ten eleven twelve. "
            "Thirteen fourteen fifteen.")
    assert c_stats(five, config=C)["n_sentences"] == 5
    assert "c4_quality.min_sentences" not in c_fired(five, config=C)
    assert "c4_quality.min_sentences" in c_fired(five.rsplit(" Thirteen", 1)[0], config=C)
    # abbreviations are single tokens to the sentencizer
    line = "He met Dr. Smith and Mrs. Jones at St. Paul today."
    assert c_stats(line, config=C)["n_sentences"] == 1
    assert c_stats(line)["n_sentences"] == 4


def test_c4_line_rules_as_datatrove() -> None:
    text = ("First line is fine.\nThis one ends in an ellipsis…\nThis one ends in a quote.”\n"
            "Some text here. [1]")
    assert c_stats(text, config=C)["lines_flagged"] == 3  # "…", "”", the citation's space
    assert c_stats(text)["lines_flagged"] == 1  # default: only "…"
    assert c_stats(text + "\nThe last one trails off...", config=C)["lines_flagged"] == 4
    assert c_stats("Use {x} in the template.", config=C)["curly_bracket"] is True
    assert c_stats("A line about lorem ipsum dolor.", config=C)["lorem_ipsum"] is True
    # a line with too few words is removed before "{" is looked for
    assert c_stats("Use {x}.", config=C)["curly_bracket"] is False


def test_c4_long_word_removes_its_line_only() -> None:
    long_word = "x" * 1001
    text = f"A first line is fine.\n\n{long_word} ends here.\nA last line is fine."
    assert c_stats(text, config=C)["lines_flagged"] == 2  # the blank line and the long word
    assert c_stats(text, config=C)["n_sentences"] == 2


def test_c4_lines_edit_as_datatrove() -> None:
    import pyarrow as pa

    docs = pa.table({"text": pa.array(["A kept line here.\n[2] Starts with a cite here.\nshort",
                                       "  A kept line here.  \n\nAnother kept one here."],
                                      pa.large_string()), "lang": ["en", "en"]})
    compat_text, counts = c4_lines.edit(docs, c4_lines.Config(**DT))
    assert compat_text.to_pylist() == ["A kept line here.\n Starts with a cite here.",
                                       "A kept line here.\nAnother kept one here."]
    assert counts.column("c4_lines_total").to_pylist() == [3, 3]  # blank lines are lines
    default_text, _ = c4_lines.edit(docs, c4_lines.Config())
    assert default_text.to_pylist()[0] == "A kept line here.\nStarts with a cite here."


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", ["gopher_quality", "gopher_repetition", "fineweb_quality",
                                  "c4_quality", "c4_lines"])
def test_compat_mode_keeps_the_filter_contract(name: str) -> None:
    recs = sample_records()[::40]
    rows = [(r["text"], r["lang"], r.get("url")) for r in recs] + list(EDGE_CASES)
    docs = doc_table(*(list(col) for col in zip(*rows, strict=True)))
    module = get_filter(name)
    check_filter_module(module, module.Config(**DT), docs=docs)
