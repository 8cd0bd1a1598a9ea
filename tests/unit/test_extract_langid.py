"""HTML extraction (and its guards), language identification, text normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import extract
from tasks.extract import extract_checked, nesting_depth
from tasks.langid import identify, primary
from tasks.normalize import normalize_text, normalize_texts

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"

ARTICLE = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk to light the great "
    "lamp. For forty years he kept a careful log of passing ships, storms and the slow changes "
    "of the coastline, and his notebooks are now kept in the town museum. Historians use them "
    "to date shipwrecks and to study how the shore moved over the decades."
)
PAGE = f"""<!doctype html>
<html><head><title>The keeper</title><style>body {{ color: red }}</style>
<script>var tracking = "do not extract me";</script></head>
<body>
<header><nav class="menu"><ul><li><a href="/">Home</a></li><li><a href="/shop">Shop</a></li>
<li><a href="/login">Login menu item</a></li></ul></nav></header>
<main><article><h1>The keeper of the light</h1>
<p>{ARTICLE}</p>
<p>He retired in 1962, and the lamp was automated the following spring, ending a tradition
that had lasted more than a century on that rocky point of the northern coast.</p>
</article></main>
<footer class="footer"><p>Copyright 2024 Example Corp. All rights reserved.</p>
<a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a></footer>
</body></html>"""


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_extraction_keeps_the_article_and_drops_boilerplate(extractor: str) -> None:
    text = extract.extract(PAGE, extractor)  # type: ignore[arg-type]
    assert text is not None
    assert "lighthouse keeper climbed the spiral stairs" in text
    assert "automated the following spring" in text
    for junk in ("do not extract me", "color: red", "Login menu item", "Privacy policy",
                 "All rights reserved"):
        assert junk not in text, (extractor, junk)


def test_extraction_guards() -> None:
    huge = "<html><body>" + "<p>word word word</p>" * 20_000 + "</body></html>"
    assert extract_checked(huge, max_html_bytes=100_000).reason == "ingest.html_too_large"
    deep = "<html><body>" + "<div>" * 50_000 + "<p>deep</p>" + "</div>" * 50_000 + "</body></html>"
    assert nesting_depth(deep) == 50_000
    for ex in ("trafilatura", "resiliparse"):
        r = extract_checked(deep, ex)  # type: ignore[arg-type]
        assert r.reason == "ingest.html_too_deep" and r.text is None
    assert extract_checked("<html><body></body></html>").reason == "ingest.empty_text"
    # unclosed <p>/<li> and void tags do not count as nesting
    flat = "<ul>" + "<li>item<br><img src=x>" * 3000 + "</ul>" + "<p>para" * 3000
    assert nesting_depth(flat) <= 2
    with pytest.raises(ValueError, match="unknown extractor"):
        extract_checked(PAGE, "nope")  # type: ignore[arg-type]


def test_extractor_exceptions_become_extract_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(html: str) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(extract._IMPL, "trafilatura", boom)
    r = extract_checked(PAGE, "trafilatura")
    assert r.reason == "ingest.extract_failed" and "RecursionError" in (r.error or "")


def test_decode_html_uses_declared_or_detected_charset() -> None:
    page = '<html><head><meta charset="iso-8859-1"></head><body>caf\xe9</body></html>'
    data = page.encode("latin-1")
    assert "café" in extract.decode_html(data)
    assert "café" in extract.decode_html(data, "text/html; charset=ISO-8859-1")
    assert "café" in extract.decode_html("<p>café</p>".encode(), "text/html; charset=utf-8")


def test_langid_matches_the_sample_labels_for_en_fr_es() -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if primary(r["lang"]) in ("en", "fr", "es")]
    assert len(rows) > 1000
    langs, scores = identify([r["text"] for r in rows])
    for want in ("en", "fr", "es"):
        got = [lang for r, lang in zip(rows, langs, strict=True) if primary(r["lang"]) == want]
        accuracy = sum(g == want for g in got) / len(got)
        assert accuracy >= 0.9, (want, accuracy)
    assert scores.dtype.name == "float32" and 0.0 < float(scores.mean()) <= 1.0


def test_langid_batch_edge_cases() -> None:
    langs, scores = identify(["", "   \n ", "Bonjour à tous,\nvoici le résumé de la réunion.",
                              "THIS TEXT IS WRITTEN IN CAPITAL LETTERS ONLY, IN ENGLISH."])
    assert langs[:2] == [None, None] and list(scores[:2]) == [0.0, 0.0]
    assert langs[2:] == ["fr", "en"]
    assert primary("fr-FR") == primary("FR") == primary("fr_CA") == "fr" and primary(None) is None


def test_normalisation() -> None:
    assert normalize_text("cafÃ© crÃ¨me") == "café crème"  # mojibake repaired
    assert normalize_text("“quoted” and it’s") == "“quoted” and it’s"  # quotes stay curly
    assert normalize_text("a  \r\nb\t\rc\u2028d\n") == "a\nb\nc\nd"  # newlines, trailing space
    assert normalize_text("x\x00y\x07z\x1b\tw") == "xyz\tw"  # control characters
    assert normalize_text("\n\n  indented  \n") == "  indented"
    assert normalize_text("e\u0301t\u00e9") == "\u00e9t\u00e9"  # NFC
    assert normalize_text("fish &amp; chips") == "fish & chips"
    assert normalize_text("<p>&amp;</p>") == "<p>&amp;</p>"  # HTML left as it is
    assert normalize_text("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert normalize_text("ﬁne ＡＢＣ") == "ﬁne ＡＢＣ"  # ligatures, full width kept
    out = normalize_texts(["plain ascii", "", "caf\u00c3\u00a9"])
    assert out.to_pylist() == ["plain ascii", "", "café"]


def test_vectorised_mojibake_gate_agrees_with_ftfy() -> None:
    """normalize runs ftfy's BADNESS_RE through RE2; it must flag exactly what is_bad flags."""
    import random

    import pyarrow as pa
    import pyarrow.compute as pc
    from ftfy.badness import MOJIBAKE_CATEGORIES, is_bad

    from tasks.ftfy_gate import BADNESS_RE2

    assert BADNESS_RE2 is not None
    chars: set[str] = set("ÂÃÎÐØÙà√≈‚Äâóвβ€ΒΓΞΟВГРСЂāŒœ°×²³abcxyzAZ .,?!\n\t\xa0\u2003_1")
    for v in MOJIBAKE_CATEGORIES.values():
        i = 0
        while i < len(v):
            if v[i + 1:i + 2] == "-" and i + 2 < len(v):
                chars.update(chr(c) for c in range(ord(v[i]), ord(v[i + 2]) + 1))
                i += 3
            else:
                chars.add(v[i])
                i += 1
    pool = sorted(chars)
    rng = random.Random(0)
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 6))) for _ in range(20_000)]
    texts += ["cafÃ© crÃ¨me", "it’s fine", "déjà vu", "вЂ™", "Ã la carte", "plain"]
    got = pc.match_substring_regex(pa.array(texts, pa.large_string()), BADNESS_RE2).to_pylist()
    assert got == [is_bad(t) for t in texts]
