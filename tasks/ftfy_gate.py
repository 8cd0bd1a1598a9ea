"""The ftfy gate: exactly ``ftfy.fix_text`` (with ``FTFY_CONFIG``) on a batch of texts, but
ftfy (pure Python, ~2.5 MB/s, and it walks every line of a text it is given) runs only on the
lines it could change. ftfy fixes a text segment by segment (a line with its newline) and,
with these settings, changes a segment only if it holds an HTML entity (``&amp;``,
``&#x2019;``), a control character it removes (C0 ones, U+FEFF, ...), a C1 control, a terminal
escape, mojibake by its own detector (``BADNESS_RE``), or a character that can make NFC change
it (a combining mark, one NFC replaces, the second half of a canonical pair).

1. One RE2 scan (Arrow, C++) over the batch for any of those, or anything the line pass of
   ``tasks/normalize.py`` acts on; the gates then sort the few texts it finds (RE2 forms of
   ftfy's own patterns, wider where exactness would cost: ``^`` at every line start, ``\\w``
   any but an ASCII non-word character). A gate may pass a text ftfy leaves alone, never one
   ftfy would change (tests compare with ``ftfy.fix_text`` on the sample, the benchmark
   corpus, built mojibake and random text).
2. A text only NFC may change gets Python's NFC (ftfy's), line by line as NFC never joins
   across a newline, unless the result holds something else ftfy acts on. The others are cut
   into lines (Arrow), the lines matched again, and ftfy's per-segment fixer runs on the lines
   that match, with the settings ftfy would use there (no entity decoded from the first line
   with a ``<`` on); the other lines stay as they are, which ftfy would also do.

ftfy's settings keep the text's meaning and look: curly quotes stay curly, ligatures and
full-width characters are kept, HTML entities are decoded only when the text is not HTML
itself, NFC. Lone surrogates (a JSON ``"\\ud83d"`` escape cut from its pair) cannot be stored
as UTF-8: such a text goes through ftfy whole, and what is left unpaired becomes U+FFFD.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

import ftfy
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ftfy.badness import BADNESS_RE, is_bad
from ftfy.chardata import CONTROL_CHARS, HTML_ENTITY_RE

# a space or tab at a line end: the line pass strips it (tasks/normalize.py), so the one scan
# looks for it too
LINE_END = r"[\t\p{Zs}]\n"

FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html="auto",  # decode &amp; etc. unless the text looks like HTML itself
    remove_terminal_escapes=True,
    fix_encoding=True,  # the mojibake repair: "cafÃ©" -> "café"
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=True,
    fix_latin_ligatures=False,  # keep the text as written
    fix_character_width=False,  # full-width CJK punctuation is not an error
    uncurl_quotes=False,  # keep typographic quotes
    fix_line_breaks=False,  # done below, vectorised
    fix_surrogates=True,
    remove_control_chars=True,
    normalization="NFC",
    explain=False,
)
_NO_ENTITIES = FTFY_CONFIG._replace(unescape_html=False)
SURROGATE = re.compile("[\ud800-\udfff]")


# ------------------------------------------------------------------ what ftfy's fixes act on
def _ranges(cps: Sequence[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for cp in sorted(set(cps)):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [(a, b) for a, b in out]


def _nfc_unstable(planes: Sequence[range] | None = None) -> list[tuple[int, int]]:
    """Code points whose presence can make NFC (Python's, which ftfy uses) change a text: a
    non-zero combining class, a character NFC replaces, the second half of a canonical pair
    (and Hangul vowel / trailing jamo), a character whose decomposition starts with one. A
    text without any is in NFC. Outside the default ranges Unicode has no such character (a
    test checks the whole code space)."""
    planes = planes or (range(0x20000), range(0x2F800, 0x30000), range(0xE0000, 0xE1000))
    comb, dec, norm = unicodedata.combining, unicodedata.decomposition, unicodedata.normalize
    out, seconds, firsts = [], {*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)}, []
    for r in planes:
        for cp in r:
            if 0xD800 <= cp <= 0xDFFF:
                continue
            c = chr(cp)
            if comb(c):
                out.append(cp)
            d = dec(c)
            if d and d[0] != "<":
                parts = d.split()
                if len(parts) == 2:
                    seconds.add(int(parts[1], 16))
                firsts.append((cp, norm("NFD", c)[0]))
                if norm("NFC", c) != c:
                    out.append(cp)
    out += seconds
    out += [cp for cp, first in firsts if ord(first) in seconds or comb(first)]
    return _ranges(out)


def _class(ranges: Sequence[tuple[int, int]]) -> str:
    """The inside of an RE2 character class of these ranges."""
    def one(cp: int) -> str:
        return f"\\x{{{cp:x}}}"
    return "".join(one(a) if a == b else f"{one(a)}-{one(b)}" for a, b in ranges)


_CONTROLS = _ranges([*CONTROL_CHARS, *range(0x80, 0xA0)])  # removed / C1 (fix_c1_controls)
# and the line pass's: C0 controls, DEL, U+2028/U+2029 (a superset of both, for one scan)
_ODD = _ranges([*CONTROL_CHARS, *range(0x80, 0xA0), *range(9), *range(0x0B, 0x20), 0x7F, 0x2028,
               0x2029])
_ENTITY = HTML_ENTITY_RE.pattern  # only a match can be decoded (fixes.unescape_html)
_PY_FIX = re.compile(  # what ftfy acts on in a segment besides mojibake (``is_bad``)
    "[" + "".join(chr(c) for a, b in _CONTROLS for c in range(a, b + 1)) + f"]|{_ENTITY}")


def _badness(multiline: bool, exact: bool = False) -> str:
    """ftfy's ``BADNESS_RE`` for RE2, ``\\s`` spelled out as Python's whitespace
    (``str.isspace``) and ``\\w`` as any character but an ASCII non-word one (a superset that
    keeps the pattern small), or with ``exact`` as Python's word characters (``str.isalnum``
    and ``_``). ``multiline``: ``^`` at every line start, as a search over a whole text needs
    to find every line ftfy's segment-by-segment ``is_bad`` would."""
    space = _class(_ranges([c for c in range(0x3001) if chr(c).isspace()]))
    if not exact:
        word = "[^\\x00-\\x2f\\x3a-\\x40\\x5b-\\x5e\\x60\\x7b-\\x7f]"
    else:
        word = "[" + _class(_ranges([c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF
                                     and (chr(c).isalnum() or c == 0x5F)])) + "]"
    subs = {"\\s": f"[{space}]", "\\w": word}
    pattern, out, i, in_class, class_start = BADNESS_RE.pattern, [], 0, False, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            tok = pattern[i:i + 2]
            out.append(tok if in_class else subs.get(tok, tok))
            i, class_start = i + 2, False
            continue
        if in_class:
            in_class = class_start or c != "]"
            class_start = class_start and c == "^"
            out.append(c)
        elif c == "[":
            in_class = class_start = True
            out.append(c)
        elif c == "^":
            out.append("(?m:^)" if multiline else "^")
        elif c == "#":  # a comment, to the end of the line
            while i < len(pattern) and pattern[i] != "\n":
                i += 1
            continue
        elif c not in " \t\n\r\v\f":
            out.append(c)
        i += 1
    return "".join(out)


@functools.cache
def patterns() -> dict[str, str]:
    """The gate's RE2 patterns (~0.05 s to build, once; Arrow compiles one in ~2 ms a call)."""
    nfc = f"[{_class(_nfc_unstable())}]"
    controls = f"[{_class(_CONTROLS)}]"
    bad_text = _badness(multiline=True)
    return {
        # anything any step acts on (the union of the gates, for one scan of every text)
        "any": f"[{_class(_ODD)}]|{_ENTITY}|{nfc}|{bad_text}|{LINE_END}",
        "odd": f"[{_class(_ODD)}]",  # a control, C1, line break: rare
        "controls": controls,  # of those, the ones ftfy removes or fixes
        "nfc": nfc,  # NFC may change the text (or the segment)
        "bad_text": bad_text,  # mojibake in a whole text: every line ftfy's is_bad flags
        "fix_text": f"{controls}|{_ENTITY}|{bad_text}",  # a whole text: more than NFC
        "line_fix": f"{controls}|{_ENTITY}|{_badness(multiline=False)}",  # a segment: ftfy acts
    }


def __getattr__(name: str) -> str:
    if name == "BADNESS_RE2":  # ftfy's BADNESS_RE for RE2, as ``is_bad`` reads it (~0.2 s)
        return _badness_exact()
    raise AttributeError(name)


@functools.cache
def _badness_exact() -> str:
    return _badness(multiline=False, exact=True)


def hits(arr: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(arr, pattern).to_numpy(zero_copy_only=False)


def masks(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per text: ftfy may act on it other than by NFC (a control, an entity, mojibake; a
    superset); only NFC may change it; it holds a control, C1 or line-break character."""
    p = patterns()
    odd = hits(arr, p["odd"])
    fixable = hits(arr, _ENTITY) | hits(arr, p["bad_text"])  # "&" is found fast
    if odd.any():
        at = np.flatnonzero(odd)
        fixable[at] |= hits(arr.take(at), p["controls"])
    return fixable, hits(arr, p["nfc"]) & ~fixable, odd


def needs_ftfy(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Boolean mask: the texts ftfy could change (a superset: ftfy may leave some alone)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    fixable, nfc, _ = masks(arr)
    return pa.array(fixable | nfc, pa.bool_())


# ------------------------------------------------------------------ ftfy, line by line
def _line_hits(lines: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Which segments (lines, each ending in the newline ftfy's segment has) ftfy may act on,
    and which only NFC may change."""
    p = patterns()
    fix = hits(lines, p["line_fix"])
    return fix, hits(lines, p["nfc"]) & ~fix


def _segments(lines: list[str], i: int) -> str:
    return lines[i] + "\n" if i < len(lines) - 1 else lines[i]


def repair(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """ftfy's repair (``ftfy.fix_text`` with ``FTFY_CONFIG``) of every text of `arr`, done by
    ftfy only on the lines it could change (no lone surrogates: Arrow strings are UTF-8)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not len(arr):
        return arr
    fixable, nfc, _ = masks(arr)
    fix = fixable | nfc
    if not fix.any():
        return arr
    return pc.replace_with_mask(arr, pa.array(fix), repair_all(arr.filter(pa.array(fix)),
                                                                  fixable[fix]))


def repair_all(flagged: pa.Array, fixable: np.ndarray) -> pa.Array:
    """ftfy's repair of texts the gates flagged (`fixable`: for more than NFC): step 2 of
    the module's docstring."""
    p = patterns()
    texts = flagged.to_pylist()
    fixable = fixable | np.array([len(t) > FTFY_CONFIG.max_decode_length for t in texts], bool)
    normed = {j: _nfc(texts[j]) for j in np.flatnonzero(~fixable).tolist()}
    normed = {j: t for j, t in normed.items() if t is not texts[j]}
    if normed:
        again = hits(pa.array(list(normed.values()), pa.large_string()), p["fix_text"])
        for (j, t), hit in zip(normed.items(), again.tolist(), strict=True):
            fixable[j] |= hit
            if not hit:
                texts[j] = t
    if fixable.any():
        at = np.flatnonzero(fixable)
        for j, t in zip(at.tolist(), _repair_lines(flagged.take(at), [texts[j] for j in at]),
                        strict=True):
            texts[j] = t
    return pa.array(texts, flagged.type)


def _nfc(text: str) -> str:
    """Python's NFC of `text` (`text` itself when in NFC), line by line: only the lines its
    quick check does not pass are normalised."""
    isn, norm = unicodedata.is_normalized, unicodedata.normalize
    if isn("NFC", text):
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not isn("NFC", line):
            lines[i] = norm("NFC", line)
    return "\n".join(lines)


def _repair_lines(flagged: pa.Array, texts: list[str]) -> list[str]:
    """`repair_all`, line by line."""
    split = pc.split_pattern(flagged, "\n")
    flat = pc.list_flatten(split)
    flat = pc.binary_join_element_wise(flat, pa.scalar("", flat.type),
                                       pa.scalar("\n", flat.type))
    fix, nfc = _line_hits(flat)
    bounds = np.r_[0, np.cumsum(pc.list_value_length(split).to_numpy())]
    lines: list[list[str] | None] = [None] * len(texts)
    todo: dict[int, set[int]] = {}  # text -> its lines for ftfy
    normed: list[tuple[int, int, str]] = []  # (text, line, NFC of the line)
    for where, hits in ((0, fix), (1, nfc)):
        for k in np.flatnonzero(hits).tolist():
            j = int(np.searchsorted(bounds, k, side="right")) - 1
            i = k - int(bounds[j])
            if lines[j] is None:
                lines[j] = texts[j].split("\n")
            if where == 0:
                todo.setdefault(j, set()).add(i)
                continue
            seg = _segments(lines[j], i)  # type: ignore[arg-type]
            out = unicodedata.normalize("NFC", seg)
            if out != seg:
                normed.append((j, i, out))
    for j, i, out in normed:  # what NFC made: ftfy's turn where it acts on that
        if _PY_FIX.search(out) or is_bad(out):
            todo.setdefault(j, set()).add(i)
        else:
            lines[j][i] = out[:-1] if out.endswith("\n") else out  # type: ignore[index]
    out_texts = list(texts)
    for j, segs in todo.items():
        out_texts[j] = _fix_segments(texts[j], lines[j], segs)  # type: ignore[arg-type]
    for j, ls in enumerate(lines):
        if ls is not None and j not in todo:
            out_texts[j] = "\n".join(ls)
    return out_texts


def _fix_segments(text: str, lines: list[str], segs: set[int]) -> str:
    """`text` (split into `lines`, some already put in NFC) with ftfy's per-segment fixer on
    the segments `segs`, with the settings ftfy would use there."""
    if len(text) > FTFY_CONFIG.max_decode_length:  # ftfy cuts long lines: let it do it all
        return ftfy.fix_text(text, FTFY_CONFIG)
    original = text.split("\n")
    lt = text.find("<")  # from the segment with the first '<' on, ftfy decodes no entities
    lt_line = text.count("\n", 0, lt) if lt >= 0 else len(lines)
    for i in sorted(segs):
        cfg = _NO_ENTITIES if i >= lt_line else FTFY_CONFIG
        out = ftfy.fix_and_explain(_segments(original, i), cfg).text
        if i < len(lines) - 1:
            if not out.endswith("\n"):  # never seen: a fix that ate the line's end
                return ftfy.fix_text(text, FTFY_CONFIG)
            out = out[:-1]
        lines[i] = out
    return "\n".join(lines)


def fix_text(text: str) -> str:
    """ftfy with the settings above; lone surrogates become U+FFFD."""
    if SURROGATE.search(text):  # rare: the whole text, as ftfy would take it
        return SURROGATE.sub("\ufffd", ftfy.fix_text(text, FTFY_CONFIG))
    text = repair(pa.array([text], pa.large_string()))[0].as_py()
    return SURROGATE.sub("\ufffd", text) if not text.isascii() else text
