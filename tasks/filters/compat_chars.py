"""Character data for the datatrove-compatible mode (``compat: datatrove``).

Two things are described here, as data, so that ``compat_words`` can split text the way
datatrove 0.10.1 does without loading its tokenizer:

- datatrove's own punctuation sets (``datatrove.utils.text``): ``PUNCTUATION_SET`` (a token
  made only of these characters is a "symbol", not a word, for Gopher quality) and
  ``TERMINAL_PUNCTUATION`` (what ends a line for FineWeb's line-punctuation rule);
- the character classes of the English word tokenizer datatrove uses for every document (a
  blank spaCy English pipeline plus its rule-based sentencizer): which characters it treats as
  letters (lower, upper, either), punctuation, quotes, hyphens, currency signs, units and
  icons. Its prefix, suffix and infix rules are written in terms of these classes.

Everything is built once per process (``functools.cache``).
"""

from __future__ import annotations

import functools
import unicodedata

Spans = tuple[tuple[int, int], ...]


def _class_body(spans: Spans) -> str:
    """A regex character-class body (no brackets) for inclusive code point spans."""
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in spans)


Bodies = tuple[str, str]  # (BMP part, astral part) of a character class body


def _bodies(spans: Spans) -> Bodies:
    """Class bodies split at U+FFFF: ``re`` looks up a class of BMP characters in a table but
    scans one with astral ranges range by range, so the astral part goes behind a guard."""
    bmp = tuple((a, min(b, 0xFFFF)) for a, b in spans if a <= 0xFFFF)
    astral = tuple((max(a, 0x10000), b) for a, b in spans if b > 0xFFFF)
    return _class_body(bmp), _class_body(astral)


def _spans(chars: set[str]) -> Spans:
    out: list[list[int]] = []
    for cp in sorted(map(ord, chars)):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return tuple((a, b) for a, b in out)


def _expand(spans: Spans) -> set[str]:
    return {chr(c) for a, b in spans for c in range(a, b + 1)}


# --------------------------------------------------------------------------- datatrove's sets

# ASCII and CJK punctuation, a few symbols, and the C0/C1 control characters except tab and
# line feed (datatrove's PUNCTUATION string, as a set).
_DT_PUNCT = (
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    "\u00ab\u00b4\u00bb\u2013\u2014\u2019\u201c\u201d\u201e\u2026\u2236\u2501\u25ba"
    "\u3001\u3002\u3008\u3009\u300a\u300b\u300c\u300d\u3010\u3011"
    "\uff01\uff05\uff08\uff09\uff0c\uff0e\uff11\uff1a\uff1b\uff1f\uff5e"
)
_CONTROLS: Spans = ((0x00, 0x08), (0x0B, 0x1F), (0x7F, 0x9F))

# Sentence-ending marks of many scripts: the marks spaCy's sentencizer splits after, plus
# newer ones datatrove added for its terminal-punctuation set.
_SENTENCIZER: Spans = (
    (0x21, 0x21), (0x2E, 0x2E), (0x3F, 0x3F), (0x589, 0x589), (0x61F, 0x61F), (0x6D4, 0x6D4),
    (0x700, 0x702), (0x7F9, 0x7F9), (0x964, 0x965), (0x104A, 0x104B), (0x1362, 0x1362),
    (0x1367, 0x1368), (0x166E, 0x166E), (0x1735, 0x1736), (0x1803, 0x1803), (0x1809, 0x1809),
    (0x1944, 0x1945), (0x1AA8, 0x1AAB), (0x1B5A, 0x1B5B), (0x1B5E, 0x1B5F), (0x1C3B, 0x1C3C),
    (0x1C7E, 0x1C7F), (0x203C, 0x203D), (0x2047, 0x2049), (0x2E2E, 0x2E2E), (0x2E3C, 0x2E3C),
    (0xA4FF, 0xA4FF), (0xA60E, 0xA60F), (0xA6F3, 0xA6F3), (0xA6F7, 0xA6F7), (0xA876, 0xA877),
    (0xA8CE, 0xA8CF), (0xA92F, 0xA92F), (0xA9C8, 0xA9C9), (0xAA5D, 0xAA5F), (0xAAF0, 0xAAF1),
    (0xABEB, 0xABEB), (0xFE52, 0xFE52), (0xFE56, 0xFE57), (0xFF01, 0xFF01), (0xFF0E, 0xFF0E),
    (0xFF1F, 0xFF1F), (0xFF61, 0xFF61), (0x3002, 0x3002), (0x10A56, 0x10A57),
    (0x11047, 0x11048), (0x110BE, 0x110C1), (0x11141, 0x11143), (0x111C5, 0x111C6),
    (0x111CD, 0x111CD), (0x111DE, 0x111DF), (0x11238, 0x11239), (0x1123B, 0x1123C),
    (0x112A9, 0x112A9), (0x1144B, 0x1144C), (0x115C2, 0x115C3), (0x115C9, 0x115D7),
    (0x11641, 0x11642), (0x1173C, 0x1173E), (0x11A42, 0x11A43), (0x11A9B, 0x11A9C),
    (0x11C41, 0x11C42), (0x16A6E, 0x16A6F), (0x16AF5, 0x16AF5), (0x16B37, 0x16B38),
    (0x16B44, 0x16B44), (0x1BC9F, 0x1BC9F), (0x1DA88, 0x1DA88),
)
_DATATROVE_EXTRA_TERMINAL: Spans = (
    (0x61D, 0x61E), (0x837, 0x837), (0x839, 0x839), (0x83D, 0x83E), (0x17D4, 0x17D6),
    (0x17D9, 0x17DA), (0x1B7D, 0x1B7E), (0x2E53, 0x2E54), (0x10F55, 0x10F59),
    (0x10F86, 0x10F89), (0x11944, 0x11944), (0x11946, 0x11946), (0x11EF7, 0x11EF8),
    (0x11F43, 0x11F44), (0x16E98, 0x16E98),
)

SENTENCE_CHARS: frozenset[str] = frozenset(_expand(_SENTENCIZER))
TERMINAL_PUNCTUATION: frozenset[str] = frozenset(
    SENTENCE_CHARS | _expand(_DATATROVE_EXTRA_TERMINAL))
PUNCTUATION_SET: frozenset[str] = frozenset(set(_DT_PUNCT) | _expand(_CONTROLS)
                                            | TERMINAL_PUNCTUATION)
# C4 (datatrove's C4QualityFilter): a kept line ends in one of these and not in "..."
C4_END_PUNCTUATION: tuple[str, ...] = (".", "?", "!", '"', "'")


# --------------------------------------------------------------------------- letters

# Latin letters, by block (the tokenizer's Latin ranges); case comes from the Unicode category,
# except that the IPA / phonetic and Latin Extended-E ranges count as lower case throughout.
_LATIN: Spans = (
    (0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x24F), (0x250, 0x2AF),
    (0x1D00, 0x1D25), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1EFF), (0x2C60, 0x2C7B),
    (0x2C7E, 0x2C7F), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E), (0xA790, 0xA7B9),
    (0xA7FA, 0xA7FA), (0xAB30, 0xAB5A), (0xAB60, 0xAB64), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),
)
_LATIN_GAPS: Spans = ((0x1C0, 0x1C3),)  # click letters: not in the Latin ranges
_ALWAYS_LOWER: Spans = ((0x250, 0x2AF), (0x1D00, 0x1D25), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A),
                        (0xAB30, 0xAB5A), (0xAB60, 0xAB64))
# Cyrillic and Greek: the Russian, Tatar, Ukrainian and Macedonian alphabets and the
# monotonic Greek one (not every letter of those blocks)
_OTHER_LOWER = ("ёабвгдежзийклмнопрстуфхцчшщъыьэюя" "әөүҗңһ" "іїєґ" "ѓѕјљњќѐѝ"
                "αβγδεζηθικλμνξοπρςστυφχψω" "άέίόώήύ")
_OTHER_UPPER = ("ЁАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ" "ӘӨҮҖҢҺ" "ІЇЄҐ" "ЃЅЈЉЊЌЀЍ"
                "\u0391\u0392\u0393\u0394\u0395\u0396\u0397\u0398\u0399\u039a\u039b\u039c"
                "\u039d\u039e\u039f\u03a0\u03a1\u03a2\u03a3\u03a4\u03a5\u03a6\u03a7\u03a8"
                "\u03a9" "ΆΈΊΌΏΉΎ")
# Scripts without case, whole blocks (digits and marks inside them included): Ethiopic,
# Bengali, Hebrew, Arabic/Persian, Sinhala, Devanagari, Kannada, Tamil, Telugu, Hangul,
# kana, and CJK (with its symbols and punctuation block, U+3000-303F).
_UNCASED: Spans = (
    (0x1200, 0x137F), (0x980, 0x9FF), (0x591, 0x5F4), (0xFB1D, 0xFB4F),
    (0x620, 0x64A), (0x66E, 0x6D5), (0x6E5, 0x6FF), (0x750, 0x77F), (0x8A0, 0x8BD),
    (0xFB50, 0xFBB1), (0xFBD3, 0xFD3D), (0xFD50, 0xFDC7), (0xFDF0, 0xFDFB), (0xFE70, 0xFEFC),
    (0x1EE00, 0x1EEBB), (0xD80, 0xDFF), (0x900, 0x97F), (0xC80, 0xCFF), (0xB80, 0xBFF),
    (0xC00, 0xC7F), (0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3040, 0x30FF),
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF),
    (0x2E80, 0x2FDF), (0x2FF0, 0x303F),
    (0x31C0, 0x31EF), (0x3200, 0x33FF), (0xF900, 0xFAFF), (0xFE30, 0xFE4F), (0x1F200, 0x1F2FF),
    (0x2F800, 0x2FA1F),
)


@functools.cache
def letters() -> tuple[Bodies, Bodies, Bodies]:
    """(any letter, lower-case letter, upper-case letter): regex class bodies. Uncased scripts
    count as both lower and upper case."""
    latin = _expand(_LATIN) - _expand(_LATIN_GAPS)
    always_lower = _expand(_ALWAYS_LOWER)
    lower = {c for c in latin if unicodedata.category(c) == "Ll" or c in always_lower}
    upper = {c for c in latin if unicodedata.category(c) == "Lu" and c not in always_lower}
    lower |= set(_OTHER_LOWER)
    upper |= set(_OTHER_UPPER)
    bmp, astral = _bodies(_UNCASED)  # (the cased letters are all in the BMP)
    return tuple((_class_body(_spans(s)) + bmp, astral)  # type: ignore[return-value]
                 for s in (latin | lower | upper, lower, upper))


# --------------------------------------------------------------------------- punctuation

# the tokenizer's punctuation, quotes and hyphens (single characters; "……" is "…" twice)
PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》\u3008\u3009\u2329\u232a⟦⟧"
HYPHENS: tuple[str, ...] = ("-", "–", "—", "--", "---", "——", "~")
# currency signs: $ £ € ¥ ฿ ₽ ﷼ and the Currency Symbols block U+20A0-20BF; and three dollars
CURRENCY_CHARS = "$£€¥฿₽﷼" + "".join(map(chr, range(0x20A0, 0x20C0)))
CURRENCY_WORDS: tuple[str, ...] = ("US$", "C$", "A$")
# units split off a number ("5km" -> "5", "km"); longest first (as in the tokenizer's list,
# which has no "тб")
UNITS: tuple[str, ...] = tuple(sorted(set(
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz "
    "m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² "
    "дм³ см см² см³ мм мм² мм³ нм кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ "
    "كم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ غرام جرام جم كغ ملغ كوب اكواب".split()),
    key=lambda u: (-len(u), u)))

# Icons: Unicode "other symbols" (So) of Unicode 11, i.e. So without what later versions added.
_NEWER_SYMBOLS: Spans = (
    (0x166D, 0x166D), (0x2B97, 0x2B97), (0x2BC9, 0x2BC9), (0x2BFF, 0x2BFF), (0x2E50, 0x2E51),
    (0x32FF, 0x32FF), (0xFD40, 0xFD4F), (0xFDCF, 0xFDCF), (0xFDFE, 0xFDFF), (0x1019C, 0x1019C),
    (0x11FD5, 0x11FDC), (0x11FE1, 0x11FF1), (0x1CF50, 0x1CFC3), (0x1D1E9, 0x1D1EA),
    (0x1E14F, 0x1E14F), (0x1ED2E, 0x1ED2E), (0x1F10D, 0x1F10F), (0x1F16C, 0x1F16F),
    (0x1F1AD, 0x1F1AD), (0x1F6D5, 0x1F6D7), (0x1F6DD, 0x1F6DF), (0x1F6FA, 0x1F6FC),
    (0x1F7E0, 0x1F7EB), (0x1F7F0, 0x1F7F0), (0x1F8B0, 0x1F8B1), (0x1F90C, 0x1F90F),
    (0x1F93F, 0x1F93F), (0x1F971, 0x1F972), (0x1F977, 0x1F979), (0x1F97B, 0x1F97B),
    (0x1F9A3, 0x1F9AF), (0x1F9BA, 0x1F9BF), (0x1F9C3, 0x1F9CF), (0x1FA00, 0x1FA53),
    (0x1FA70, 0x1FAFF), (0x1FB00, 0x1FBCA),
)


@functools.cache
def icons() -> frozenset[str]:
    newer = _expand(_NEWER_SYMBOLS)
    return frozenset(chr(c) for c in range(0x20000)  # no "So" character lies above U+1FFFF
                     if unicodedata.category(chr(c)) == "So" and chr(c) not in newer)


@functools.cache
def icon_class() -> Bodies:
    return _bodies(_spans(set(icons())))


@functools.cache
def prefix_chars() -> frozenset[str]:
    """Characters the tokenizer splits off the start of a chunk, one at a time ("+" only
    when no digit follows, "." only as a run of two or more: both handled by the caller)."""
    return frozenset(set("§%=—–") | set(PUNCT) | set(QUOTES) | set(CURRENCY_CHARS) | icons())


# --------------------------------------------------------------------------- patterns


def one_of(bmp: str, astral: str = "") -> str:
    """A regex for one character of a class (bodies from compat_chars): BMP characters looked
    up in a table, astral ones (a slow range scan) only behind a guard."""
    if not astral:
        return f"[{bmp}]"
    return f"(?:[{bmp}]|(?=[\\U00010000-\\U0010ffff])[{astral}])"


def url_pattern(lower: str) -> str:
    """A URL (scheme optional) as one token: user info, a public IPv4 address or a host name
    with a lower-case top-level domain, a port, a path."""
    octet_first = r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])"
    octet = r"(?:1?\d{1,2}|2[0-4]\d|25[0-5])"
    octet_last = r"(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4])"
    private = (r"(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
               r"(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})")
    ipv4 = rf"{private}{octet_first}(?:\.{octet}){{2}}(?:\.{octet_last})"
    label_char = "A-Za-z0-9\u00a1-\uffff"
    host = rf"(?:(?:[{label_char}][{label_char}_-]{{0,62}})?[{label_char}]\.)+(?:{lower}){{2,63}}"
    return (rf"^(?:[\w\+\-\.]{{2,}}://)?(?:\S+(?::\S*)?@)?(?:{ipv4}|{host})(?::\d{{2,5}})?"
            r"(?:[/?#]\S*)?$")
