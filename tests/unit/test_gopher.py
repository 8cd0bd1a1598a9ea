"""Gopher quality filter: exact stats, one failing text per rule, language awareness."""

from __future__ import annotations

import pyarrow as pa
import pytest
from filterkit import SAMPLE, probe, sample_records, table

from tasks.filters import gopher
from tasks.filters.base import get_filter
from tasks.filters.gopher import Config

P = "gopher_quality"
RULES = [
    f"{P}.min_words",
    f"{P}.max_words",
    f"{P}.mean_word_length",
    f"{P}.hash_word_ratio",
    f"{P}.ellipsis_word_ratio",
    f"{P}.bullet_lines",
    f"{P}.ellipsis_lines",
    f"{P}.alpha_words",
    f"{P}.stop_words",
]

# 76 words, one line, ordinary English prose: passes every rule at the published defaults.
CLEAN = (
    "The old lighthouse stands at the edge of the northern cliffs, where the sea breaks "
    "against dark rocks and the wind carries the smell of salt far inland. For more than a "
    "century its keepers have climbed the narrow stairs each evening to light the lamp, and "
    "sailors returning from long voyages still look for its steady beam. Today the light is "
    "automatic, but the village takes care of the tower and opens it to visitors."
)


stats, decisions_row, fired = probe(gopher, Config)


# --------------------------------------------------------------------------- interface
# (the contract every filter keeps is checked in test_filter_conformance.py)


def test_registry_and_module_constants():
    assert get_filter("gopher_quality") is gopher
    assert gopher.SCORE_VERSION == 2


def test_published_defaults():
    c = Config()
    assert c.min_words == 50
    assert c.max_words == 100_000
    assert c.min_mean_word_length == 3
    assert c.max_mean_word_length == 10
    assert c.max_hash_word_ratio == 0.1
    assert c.max_ellipsis_word_ratio == 0.1
    assert c.max_bullet_lines_frac == 0.9
    assert c.max_ellipsis_lines_frac == 0.3
    assert c.min_alpha_words_frac == 0.8
    assert c.min_stop_words == 2
    assert c.stop_words == {"en": ["the", "be", "to", "of", "and", "that", "have", "with"]}
    assert {"zh", "ja", "th"} <= set(c.no_space_langs)
    assert c.compat is None  # datamill's language-aware scores; "datatrove": test_compat_*.py
    assert Config.SCORE_FIELDS == {"stop_words", "no_space_langs", "compat"}


def test_score_columns_and_rule_names():
    schema = gopher.SCORE_SCHEMA
    assert schema.names == [
        f"{P}_{s}"
        for s in [
            "n_words",
            "mean_word_length",
            "hash_word_ratio",
            "ellipsis_word_ratio",
            "bullet_lines_frac",
            "ellipsis_lines_frac",
            "alpha_words_frac",
            "stop_words",
        ]
    ]
    assert schema.field(f"{P}_n_words").type == pa.int32()
    assert schema.field(f"{P}_stop_words").type == pa.int32()
    assert schema.field(f"{P}_mean_word_length").type == pa.float32()
    assert list(gopher.rules(gopher.score(table([CLEAN]), Config()), Config())) == RULES


# --------------------------------------------------------------------------- exact stats


def test_hand_computed_stats():
    text = "The cat sat on the mat.\n\n- Hello, world!\n# note ...\n"
    # tokens: The cat sat on the mat. - Hello, world! # note ...           -> 12
    # words (cores): The cat sat on the mat Hello world note              -> 9
    # core lengths: 3+3+3+2+3+3+5+5+4 = 31
    # non-blank lines: 3; one starts with "-", one ends with "..."
    s = stats(text)
    assert s["n_words"] == 9
    assert s["mean_word_length"] == pytest.approx(31 / 9, rel=1e-6)
    assert s["hash_word_ratio"] == pytest.approx(1 / 9, rel=1e-6)
    assert s["ellipsis_word_ratio"] == pytest.approx(1 / 9, rel=1e-6)
    assert s["bullet_lines_frac"] == pytest.approx(1 / 3, rel=1e-6)
    assert s["ellipsis_lines_frac"] == pytest.approx(1 / 3, rel=1e-6)
    assert s["alpha_words_frac"] == pytest.approx(9 / 12, rel=1e-6)
    assert s["stop_words"] == 1  # "The" (lowercased) and "the" are one word of the list


def test_word_definition_details():
    # punctuation is stripped from word edges but kept inside; symbol-only tokens are not words;
    # numbers are words but not alphabetic; "…" and "..." both count as ellipses
    s = stats("don't, — 1999 ½ (with) ### wait… and... “quoted.”")
    # words: don't(5) 1999(4) ½(1) with(4) wait(4) and(3) quoted(6) -> 7 words, 27 chars
    assert s["n_words"] == 7
    assert s["mean_word_length"] == pytest.approx(27 / 7, rel=1e-6)
    assert s["hash_word_ratio"] == pytest.approx(3 / 7, rel=1e-6)
    assert s["ellipsis_word_ratio"] == pytest.approx(2 / 7, rel=1e-6)
    # tokens: 9; with a letter: don't with wait… and... “quoted.” -> 5
    assert s["alpha_words_frac"] == pytest.approx(5 / 9, rel=1e-6)
    assert s["stop_words"] == 2  # with, and


def test_combining_marks_are_part_of_words():
    # Devanagari vowel signs are combining marks (category M): the word keeps them
    s = stats("हिन्दी की", lang="hi")
    assert s["n_words"] == 2
    assert s["mean_word_length"] == pytest.approx((6 + 2) / 2)
    assert s["alpha_words_frac"] == 1.0
    assert s["stop_words"] is None  # no Hindi list


def test_line_fractions_ignore_blank_lines_and_all_bullets_count():
    bullets = ["•", "‣", "●", "○", "▪", "-", "*", "–", "—"]
    text = "\n\n".join(f"  {b} item" for b in bullets) + "\nplain line…\nend...   \n\n"
    s = stats(text)
    assert s["bullet_lines_frac"] == pytest.approx(9 / 11, rel=1e-6)
    assert s["ellipsis_lines_frac"] == pytest.approx(2 / 11, rel=1e-6)


# --------------------------------------------------------------------------- rules


def test_clean_paragraph_passes_every_rule():
    s = stats(CLEAN)
    assert 50 <= s["n_words"] <= 100
    assert fired(CLEAN) == set()
    assert all(v is False for v in decisions_row(CLEAN, "en").values())


def _bulleted() -> str:
    lines = [s.strip() for s in CLEAN.split(". ")]
    return "\n".join(f"- {line}" for line in lines) + "\n* and the end of the list."


def _ellipsis_lines() -> str:
    first, second, third = (s.strip() for s in CLEAN.split(". "))
    # 3 lines, 1 trails off: 1/3 > 0.3; a single ellipsis over 76 words
    return f"{first}…\n{second}.\n{third}"


FAIL_ONLY = {
    "min_words": "The cat and the dog sat with a friend to have some fun today.",
    "max_words": " ".join([CLEAN] * 1400),  # 76 * 1400 = 106,400 words
    "mean_word_length": "to of the an by " * 12,  # mean length 2.2
    "hash_word_ratio": CLEAN + " " + " ".join(["#news"] * 10),  # 10 / 86
    "ellipsis_word_ratio": "well... " * 10 + CLEAN,  # 10 / 86, all on one line
    "bullet_lines": _bulleted(),
    "ellipsis_lines": _ellipsis_lines(),
    "alpha_words": CLEAN
    + " "
    + " ".join(str(1000 + i) for i in range(30)),  # 76 tokens of 106 alphabetic
    "stop_words": (
        "Quick brown foxes jump over lazy dogs in green fields while birds sing songs. " * 5
    ),
}


@pytest.mark.parametrize("rule", sorted(FAIL_ONLY))
def test_each_rule_fires_alone(rule):
    assert fired(FAIL_ONLY[rule]) == {f"{P}.{rule}"}


def test_mean_word_length_too_long_fires():
    text = "the and " + "incomprehensibilities " * 58
    assert fired(text) == {f"{P}.mean_word_length"}


def test_ratio_exactly_at_threshold_does_not_fire():
    # 50 words and 5 "#": ratio is exactly 0.1, the maximum. float32(0.1) > float64(0.1), so a
    # naive comparison with a Python float would reject it.
    words = CLEAN.split()[:50]
    text = " ".join(words) + " # # # # #"
    s = stats(text)
    assert s["n_words"] == 50
    assert s["hash_word_ratio"] == pytest.approx(0.1)
    assert f"{P}.hash_word_ratio" not in fired(text)
    assert f"{P}.hash_word_ratio" in fired(text + " #")


def test_thresholds_change_decisions_without_rescoring():
    texts = [FAIL_ONLY["min_words"], FAIL_ONLY["hash_word_ratio"], CLEAN]
    scores = gopher.score(table(texts), Config())  # scored once

    default = gopher.rules(scores, Config())
    assert default[f"{P}.min_words"].to_pylist() == [True, False, False]
    assert default[f"{P}.hash_word_ratio"].to_pylist() == [False, True, False]

    loose = Config(min_words=5, max_hash_word_ratio=0.5)
    relaxed = gopher.rules(scores, loose)
    assert relaxed[f"{P}.min_words"].to_pylist() == [False, False, False]
    assert relaxed[f"{P}.hash_word_ratio"].to_pylist() == [False, False, False]

    strict = gopher.rules(scores, Config(min_words=100, min_stop_words=100))
    assert strict[f"{P}.min_words"].to_pylist() == [True, True, True]
    assert strict[f"{P}.stop_words"].to_pylist() == [True, True, True]
    # score parameters are not thresholds
    assert loose.score_params() == Config().score_params()


# --------------------------------------------------------------------------- languages

ZH = (
    "长城是中国古代的军事防御工程，修筑历史可上溯到西周时期。"
    "春秋战国时期各国为了防御外敌，在边境修筑城墙。秦灭六国后，将各国长城连接起来，"
    "形成了万里长城。明朝对长城进行了大规模的修缮，今天我们看到的长城大多是明长城。"
)
JA = (
    "富士山は日本で最も高い山であり、その美しい姿は古くから多くの芸術作品に描かれてきた。"
    "毎年夏になると、多くの登山者が山頂を目指して登り、ご来光を見るために夜通し歩く。"
)
FR = (
    "Le vieux phare se dresse au bord des falaises du nord, là où la mer se brise contre les "
    "rochers sombres et où le vent porte l'odeur du sel loin à l'intérieur des terres. Depuis "
    "plus d'un siècle, ses gardiens montent chaque soir l'escalier étroit pour allumer la "
    "lampe, et les marins qui rentrent de longs voyages cherchent encore son faisceau. "
    "Aujourd'hui la lumière est automatique, mais le village entretient la tour et l'ouvre "
    "aux visiteurs pendant l'été."
)


@pytest.mark.parametrize(("text", "lang"), [(ZH, "zh"), (JA, "ja"), (ZH, "zh-Hans")])
def test_no_space_languages_are_not_rejected_by_word_rules(text, lang):
    s = stats(text, lang)
    for stat in [
        "n_words",
        "mean_word_length",
        "hash_word_ratio",
        "ellipsis_word_ratio",
        "alpha_words_frac",
        "stop_words",  # no zh/ja list by default
    ]:
        assert s[stat] is None, stat
    assert s["bullet_lines_frac"] == 0.0  # line rules still apply
    row = decisions_row(text, lang)
    assert row[f"{P}.min_words"] is None
    assert row[f"{P}.mean_word_length"] is None
    assert row[f"{P}.alpha_words"] is None
    assert row[f"{P}.stop_words"] is None
    assert not any(row.values())
    # the same text labelled English is wiped out (the datatrove complaint)
    assert f"{P}.min_words" in fired(text, "en")


def test_no_space_language_with_stop_list_counts_substrings():
    config = Config(stop_words={"en": ["the"], "zh": ["的", "了"]})
    assert stats(ZH, "zh", config)["stop_words"] == 2  # both occur (several times each)
    assert stats(ZH, "zh", config)["n_words"] is None


def test_french_is_not_rejected_by_english_stop_words():
    s = stats(FR, "fr")
    assert s["stop_words"] is None
    assert s["n_words"] >= 50
    assert fired(FR, "fr") == set()
    assert decisions_row(FR, "fr")[f"{P}.stop_words"] is None
    # labelled English it has no English stop words and fails that rule
    assert fired(FR, "en") == {f"{P}.stop_words"}


def test_french_stop_list_applies_when_configured():
    config = Config(stop_words={"fr": ["le", "la", "les", "et"]})
    assert stats(FR, "fr", config)["stop_words"] >= 2
    assert stats(CLEAN, "en", config)["stop_words"] is None  # "en" list replaced


def test_null_and_regional_lang_count_as_english():
    assert stats(CLEAN, None)["stop_words"] == stats(CLEAN, "en")["stop_words"] > 2
    assert stats(CLEAN, "EN-us")["stop_words"] == stats(CLEAN, "en")["stop_words"]
    assert fired(CLEAN, None) == set()


def test_table_without_lang_column_is_english():
    t = pa.table({"text": pa.array([CLEAN], pa.large_string())})
    assert gopher.score(t, Config())[f"{P}_stop_words"].to_pylist() == [stats(CLEAN)["stop_words"]]


# --------------------------------------------------------------------------- edge cases


def test_empty_and_symbol_only_text_do_not_crash():
    texts = ["", "   \n\n  ", "— ... ###"]
    scores = gopher.score(table(texts), Config())
    rows = scores.to_pylist()
    for row in rows:
        assert row[f"{P}_n_words"] == 0
        # ratios over zero words are null, not 0
        assert row[f"{P}_mean_word_length"] is None
        assert row[f"{P}_hash_word_ratio"] is None
        assert row[f"{P}_ellipsis_word_ratio"] is None
    # no tokens / no non-blank lines: null as well
    assert rows[0][f"{P}_alpha_words_frac"] is None
    assert rows[1][f"{P}_bullet_lines_frac"] is None
    # 3 tokens, none alphabetic; one line starting with a dash
    assert rows[2][f"{P}_alpha_words_frac"] == 0.0
    assert rows[2][f"{P}_bullet_lines_frac"] == 1.0
    decisions = gopher.rules(scores, Config())
    assert decisions[f"{P}.min_words"].to_pylist() == [True, True, True]
    assert decisions[f"{P}.hash_word_ratio"].to_pylist() == [None, None, None]


def test_words_and_min_words_across_languages():
    texts = [CLEAN, "", ZH, FR, FAIL_ONLY["min_words"], CLEAN + " #x", JA]
    langs = ["en", "en", "zh", "fr", None, "en", "ja"]
    scores = gopher.score(table(texts, langs), Config())
    assert scores.column(f"{P}_n_words").to_pylist() == [76, 0, None, 78, 14, 77, None]
    decisions = gopher.rules(scores, Config())
    assert decisions[f"{P}.min_words"].to_pylist() == [
        False,
        True,
        None,
        False,
        True,
        False,
        None,
    ]


# --------------------------------------------------------------------------- real corpus


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"sample corpus not found at {SAMPLE}")
def test_sample_corpus_scores_are_plausible():
    records = sample_records()[:300]
    t = table([r["text"] for r in records], [r.get("lang") for r in records])
    scores = gopher.score(t, Config())
    assert scores.num_rows == len(records) == 300

    rows = scores.to_pylist()
    for rec, row in zip(records, rows, strict=True):
        s = {k.removeprefix(P + "_"): v for k, v in row.items()}
        if rec.get("lang") in Config().no_space_langs:
            continue
        assert 0 <= s["n_words"] <= len(rec["text"])
        if s["n_words"]:
            assert 1 <= s["mean_word_length"] <= 40
        for frac in [
            "alpha_words_frac",
            "bullet_lines_frac",
            "ellipsis_lines_frac",
        ]:
            assert s[frac] is None or 0.0 <= s[frac] <= 1.0
        if rec.get("lang") in (None, "en"):
            assert s["stop_words"] is not None
        else:
            assert s["stop_words"] is None

    en = [r for rec, r in zip(records, rows, strict=True) if rec.get("lang") == "en"]
    assert en, "sample has English documents"
    # real English prose has English stop words and is mostly alphabetic
    assert sum(r[f"{P}_stop_words"] > 0 for r in en) >= 0.9 * len(en)
    alpha = sorted(r[f"{P}_alpha_words_frac"] for r in en)
    assert alpha[len(alpha) // 2] >= 0.8


def test_every_isalpha_character_is_a_letter_of_the_word_pattern():
    """alpha_frac counts a core of str.isalpha characters without the letter regex: that
    needs every isalpha code point to be in the pattern's letter class."""
    from tasks.filters.gopher import _letter_re

    letter = _letter_re().fullmatch
    missing = [hex(c) for c in range(0x110000)
               if not 0xD800 <= c <= 0xDFFF and chr(c).isalpha() and not letter(chr(c))]
    assert missing == []
