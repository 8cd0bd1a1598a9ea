"""The ftfy gate (tasks/ftfy_gate.py): ftfy runs only on the lines it could change, and the
result is ftfy's own, ``ftfy.fix_text(text, FTFY_CONFIG)``, for every text: the sample, the
benchmark corpus (when built), mojibake made on purpose and random text. The whole
normalisation equals the old path (ftfy on every text, then the four regular expressions)."""

from __future__ import annotations

import gzip
import json
import os
import unicodedata
from pathlib import Path

import ftfy
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks import ftfy_gate, normalize
from tasks.normalize import FTFY_CONFIG, needs_ftfy, normalize_texts, normalize_texts_reference

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "sample.jsonl"
BENCH = ROOT / "data" / "bench" / "jsonl"
FUZZ = settings(max_examples=int(os.environ.get("DATAMILL_FUZZ_EXAMPLES", 40)), deadline=None,
                database=None, suppress_health_check=[HealthCheck.too_slow])


def _sample_texts() -> list[str]:
    return [json.loads(line)["text"] for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


def _check(texts: list[str]) -> int:
    """The gated repair equals ftfy on each text, a text ftfy changes is flagged, and the
    whole normalisation equals the old path's (ftfy on every text, then the four regular
    expressions); returns how many texts ftfy changes."""
    arr = pa.array(texts, pa.large_string())
    got = normalize.repair(arr).to_pylist()
    flagged = needs_ftfy(arr).to_pylist()
    fixed = [ftfy.fix_text(text, FTFY_CONFIG) for text in texts]
    for text, mine, want, flag in zip(texts, got, fixed, flagged, strict=True):
        assert mine == want, (text[:300], mine[:300], want[:300])
        assert flag or want == text, text[:300]
    old = normalize.normalize_array_regex(pa.array(fixed, pa.large_string()))
    assert normalize_texts(texts).equals(old)
    return sum(want != text for text, want in zip(texts, fixed, strict=True))


def test_the_sample_normalises_as_with_ftfy_on_every_text() -> None:
    texts = _sample_texts()
    assert len(texts) > 2000
    assert _check(texts) > 0
    # the gate keeps ftfy off almost every text: that is the point of it
    assert sum(needs_ftfy(pa.array(texts, pa.large_string())).to_pylist()) < len(texts) / 20


@pytest.mark.skipif(not BENCH.is_dir(), reason="benchmark corpus not built (make corpus)")
def test_the_benchmark_corpus_as_with_ftfy() -> None:
    """80,000 characters from every source; ``DATAMILL_FTFY_CORPUS=all``: all of it (~3 min)."""
    cap = None if os.environ.get("DATAMILL_FTFY_CORPUS") == "all" else 80_000
    texts: list[str] = []
    for f in sorted(BENCH.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            got = 0
            for line in fh:
                text = json.loads(line)["text"]
                texts.append(text)
                got += len(text)
                if cap and got > cap:
                    break
    changed = _check(texts)
    print(f"\n{len(texts)} texts, {sum(map(len, texts)):,} characters: ftfy changes {changed}, "
          "every one of them as ftfy does")


SENTENCES = [
    "Le café crème coûte 2,50 € à Besançon — très cher, n’est-ce pas ?",
    "Die Straße führt über die Brücke nach München; „Grüße“ an alle.",
    "Москва — столица России, а «Война и мир» — роман.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "東京は日本の首都です。「こんにちは」と言った。",
    "مرحبًا بكم في دليل ديبيان، يُعَدُّ هذا الدليلُ شاملًا.",
    "Smörgåsbord, crème brûlée, piñata, naïve façade, Ærøskøbing.",
    "It’s a “quoted” word… and a dash – or two — plus ½ × 3² ≥ 4°C.",
]


def _mojibake(s: str) -> list[str]:
    out = []
    for enc in ("windows-1252", "latin-1", "mac_roman", "cp1251", "cp1253", "iso-8859-2",
                "cp437"):
        for errors in ("replace", "ignore"):
            m = s.encode("utf-8").decode(enc, errors)
            out += [m, m.encode("utf-8").decode("windows-1252", "replace")]
    return out


def _built_cases() -> list[str]:
    cases: list[str] = []
    for s in SENTENCES:
        moji = _mojibake(s)
        cases += moji
        cases += [f"{s}\n{m}\n{s}" for m in moji[:4]]  # a bad line among good ones
        cases += [
            unicodedata.normalize("NFD", s), f"{unicodedata.normalize('NFD', s)}\n{s}",
            f"{s} &amp; &eacute;&#x2019;&#8217; &NTILDE; &notanentity; &#xD800; &#99999999;",
            f"<p>{s}</p>\n{s} &amp; more",  # entities kept once a '<' was seen
            f"{s} &amp;\n<b>tag</b> &lt;later&gt;",
            f"{s}\x00\x07\x1b[31mred\x1b[0m\x7f\u206a\ufeff\ufffc end",
            f"{s}\x85\x92\x96\x80 C1", f"{s}\r\n{s}\r{s}\u2028{s}\x0b{s}\x0c",
            f"ＡＢＣ ﬁne ﬂow {s}", f"  \n\n{s}   \t\n{s}\u00a0\n", f"{s}\n\u00c3 bient\u00f4t",
            f"&amp\u037e and K\u212a {s}",  # NFC makes a ';' (an entity) and a 'K'
            "\u1100\u1161\u11a8 \u1100\u1161 \uac00\u11a8",  # Hangul jamo compose
            "\u0628\u0651\u064e \u0628\u064e\u0651",  # harakat in both orders
            "a\u0328\u0301 a\u0301\u0328 \u212b \u0958",  # reordering, singletons, exclusions
            f"{s}œ\n{s}", f"{s}\u00c2\u00a0\n", "\u00e2\u20ac\u2122 \u00e2\u20ac\u0153 x",
        ]
    return cases


def test_built_mojibake_and_oddities_as_with_ftfy() -> None:
    cases = _built_cases()
    assert _check(cases) > len(cases) / 2  # most of them are something ftfy fixes


POOL = list(
    "abcXYZ .,;!?&#<>\n\t\r01" "àéèüöçñÃÂÎÐØÙâ€œ™¢£¥§¶©®°±²³µ·»¿×÷ƒˆ˜–—‘’“”•…‰‹›"
    "ВГРСЂвβΒΓΞΟāŒœ√≈‚Ä│┌═▀" "\x00\x07\x1b\x7f\x85\x92\x9d\u206a\ufeff\ufffc\ufffd"
    "\u0301\u0308\u0328\u0651\u064e\u1161\u11a8\u037e\u212a\u212b\u2028ＡﬁK"
) + ["&amp;", "&eacute;", "&#x2019;", "&NTILDE;", "Ã©", "Ã¨", "â€™", "Ã ", "\x1b[0m"]


@FUZZ
@given(st.lists(st.lists(st.sampled_from(POOL), max_size=40).map("".join), min_size=1,
                max_size=30))
def test_random_text_as_with_ftfy(texts: list[str]) -> None:
    _check([*texts, *(f"{t} \t\n{t}\u3000\n" for t in texts), "x"])  # spaces at line ends


def test_a_lone_surrogate_text_goes_through_ftfy_once() -> None:
    texts = ["ok &amp; fine", "lone \ud800 and pair \ud83d\ude00 &amp;", "caf\u00c3\u00a9"]
    assert normalize_texts(texts).equals(normalize_texts_reference(texts))
    assert normalize_texts(texts).to_pylist()[1] == "lone \ufffd and pair \U0001f600 &"


def test_nfc_unstable_characters_are_all_in_the_scanned_ranges() -> None:
    full = ftfy_gate._nfc_unstable([range(0x110000)])
    assert full == ftfy_gate._nfc_unstable()
    # and a text without any of them is in NFC (spot check over whole blocks)
    unstable = {c for a, b in full for c in range(a, b + 1)}
    for block in (range(0x20, 0x3000), range(0xAC00, 0xAD00), range(0x1F300, 0x1F400)):
        s = "".join(chr(c) for c in block if c not in unstable and not 0xD800 <= c <= 0xDFFF)
        assert unicodedata.is_normalized("NFC", s)


def test_texts_without_anything_ftfy_acts_on_are_not_flagged() -> None:
    plain = ["plain ascii text\nwith lines", "déjà vu, naïve café", "Москва", "東京",
             "it’s “fine” – really", "R&D and a && b", "x < y & z", "ＡＢＣ ﬁ"]
    assert not any(needs_ftfy(pa.array(plain, pa.large_string())).to_pylist())
    assert all(ftfy.fix_text(t, FTFY_CONFIG) == t for t in plain)


def test_a_flagged_text_calls_ftfy_only_on_its_suspect_lines(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    lines = [f"line {i} is plain, déjà vu" for i in range(200)]
    lines[57] = "caf\u00c3\u00a9 cr\u00c3\u00a8me"
    lines[120] = "fish &amp; chips"
    text = "\n".join(lines)
    want = ftfy.fix_text(text, FTFY_CONFIG)
    seen: list[str] = []
    real = ftfy.fix_and_explain

    def spy(text: str, config: object = None) -> object:
        seen.append(text)
        return real(text, config)

    monkeypatch.setattr(ftfy, "fix_and_explain", spy)
    assert normalize.fix_text(text) == want
    assert seen == [lines[57] + "\n", lines[120] + "\n"]
