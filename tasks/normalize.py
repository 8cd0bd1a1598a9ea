"""Text normalisation at ingest: repair mojibake, drop control characters, tidy line ends.

The result is exactly ``ftfy.fix_text`` (with ``FTFY_CONFIG``) followed by the line pass below,
for every text; ftfy runs only on the lines it could change (``tasks/ftfy_gate.py`` says how).

The line pass, on the texts its gates pick: ``\\r\\n`` and lone ``\\r`` (and U+2028/U+2029,
vertical tab, form feed) become ``\\n``; other C0 controls and DEL are removed (``\\t`` and
``\\n`` stay); spaces and tabs at line ends are removed; then, on every text, leading blank
lines and trailing whitespace are stripped. Runs of spaces inside a line are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ftfy
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.ftfy_gate import (
    FTFY_CONFIG,
    LINE_END,
    SURROGATE,
    fix_text,
    hits,
    masks,
    needs_ftfy,
    patterns,
    repair,
    repair_all,
)

__all__ = ["FTFY_CONFIG", "fix_text", "needs_ftfy", "normalize_text", "normalize_texts",
           "normalize_texts_reference", "repair"]


# ------------------------------------------------------------------ the batch
# the line pass: (RE2 pattern, replacement) in order; line breaks and controls first (their
# texts hold an `_ODD` character), then spaces at line ends (gate: LINE_END), then the ends
_BREAKS = [(r"\r\n?|[\x{2028}\x{2029}\x0b\x0c]", "\n"), (r"[\x00-\x08\x0e-\x1f\x7f]+", "")]
_SPACES_AT_END = [(r"[\t\p{Zs}]+\n", "\n")]
_VECTOR_STEPS = [*_BREAKS, *_SPACES_AT_END, (r"\A\n+|\s+\z", "")]  # all of it, in order


def _apply(arr: pa.Array, steps: list[tuple[str, str]]) -> pa.Array:
    for pattern, repl in steps:
        arr = pc.replace_substring_regex(arr, pattern=pattern, replacement=repl)
    return arr


def _on(arr: pa.Array, mask: np.ndarray, fn: Any) -> pa.Array:
    """`fn` applied to the texts `mask` selects."""
    if not mask.any():
        return arr
    if mask.all():
        return fn(arr)
    return pc.replace_with_mask(arr, pa.array(mask), fn(arr.filter(pa.array(mask))))


def _trim(arr: pa.Array) -> pa.Array:
    """The last step (``\\A\\n+|\\s+\\z``, RE2's ``\\s`` being ``[\\t\\n\\f\\r ]``) as trims."""
    return pc.utf8_rtrim(pc.utf8_ltrim(arr, characters="\n"), characters="\t\n\f\r ")


def _normalize(arr: pa.Array, done: np.ndarray | None) -> pa.Array:
    """ftfy's repair, then the line pass, on the texts each can change: one scan over the
    batch for anything any step acts on, each gate on the texts it picks, then the work on
    those (`done`: already repaired)."""
    touched = hits(arr, patterns()["any"])
    if touched.any():
        at = np.flatnonzero(touched)
        sub = arr.take(at)
        fixable, nfc, odd = masks(sub)
        fix = fixable | nfc
        if done is not None:
            fix &= ~done[at]
        ends = hits(sub, LINE_END)
        if fix.any():
            sub = _on(sub, fix, lambda a: repair_all(a, fixable[fix]))
            again = sub.filter(pa.array(fix))  # what ftfy made: the line pass looks again
            odd[fix], ends[fix] = hits(again, patterns()["odd"]), hits(again, LINE_END)
        if odd.any():
            sub = _on(sub, odd, lambda a: _apply(a, _BREAKS))
            ends[odd] = hits(sub.filter(pa.array(odd)), LINE_END)
        sub = _on(sub, ends, lambda a: _apply(a, _SPACES_AT_END))
        arr = pc.replace_with_mask(arr, pa.array(touched), sub)
    return _trim(arr)


def normalize_array_regex(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The line pass as four regular expressions over every text (its reference)."""
    for pattern, repl in _VECTOR_STEPS:
        texts = pc.replace_substring_regex(texts, pattern=pattern, replacement=repl)
    return texts


def _to_arrow(texts: Sequence[str] | pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """The texts as Arrow strings, and which of them ftfy already repaired (those with a lone
    surrogate, which cannot be stored before)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array):
        return texts.cast(pa.large_string()), None
    try:
        return pa.array(texts, pa.large_string()), None
    except UnicodeEncodeError:
        done = [bool(SURROGATE.search(t)) for t in texts]
        fixed = [fix_text(t) if d else t for t, d in zip(texts, done, strict=True)]
        return pa.array(fixed, pa.large_string()), pa.array(done, pa.bool_())


def normalize_texts(texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Normalise a batch of texts; returns an Arrow large_string array of the same length."""
    arr, done = _to_arrow(texts)
    if not len(arr):
        return arr
    return _normalize(arr, None if done is None else done.to_numpy(zero_copy_only=False))


def normalize_texts_reference(texts: Sequence[str]) -> pa.Array:
    """What `normalize_texts` must equal: ftfy on every text, then the four regular
    expressions over all of them (slow; for tests)."""
    fixed = [SURROGATE.sub("\ufffd", ftfy.fix_text(t, FTFY_CONFIG)) for t in texts]
    return normalize_array_regex(pa.array(fixed, pa.large_string()))


def normalize_text(text: str) -> str:
    return normalize_texts([text])[0].as_py()
