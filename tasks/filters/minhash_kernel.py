"""MinHash signatures in one compiled pass over a block of documents (numba).

The same signature as ``minhash._signature_block``, the numpy reference (the module docstring
of ``tasks.filters.minhash`` defines it; tests compare the two): words are maximal runs of the
characters ``\\w`` matches in the lowercased text, each hashed with xxh64 (seeded) over its
UTF-8 bytes, shingles combined by the polynomial and murmur3's finaliser, the minimum of each
multiply-shift permutation kept. Here one loop does it all per document, so no Python string
is made per word: the reference spends most of its time making and hashing those strings
(``re.findall``, then ``xxhash`` per word).

The text reaches the kernel as UTF-32 code points (``str.lower`` first, in Python, so the
lowercasing is Python's); ``word_table`` marks the code points ``\\w`` matches, built once per
process from the ``re`` module itself. A lone surrogate (only a ``str`` built in Python can hold
one) passes the UTF-32 encoding (``surrogatepass``) and, being no word character, separates
words as in the reference.

Compiled on first use, cached on disk beside this file (numba's ``cache=True``): a process
after the first loads the machine code instead of compiling it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import numba as nb
import numpy as np

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_POLY = np.uint64(0x9E3779B97F4A7C15)  # as minhash._POLY
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_MAX64 = np.uint64(0xFFFFFFFFFFFFFFFF)
BLOCK_CHARS = 1 << 22  # code points per kernel call (16 MiB of UTF-32), whole documents

_table: np.ndarray | None = None
_table_lock = threading.Lock()


def word_table() -> np.ndarray:
    """``table[c]``: whether ``re``'s ``\\w`` matches code point ``c`` (all 0x110000)."""
    global _table
    with _table_lock:
        if _table is None:
            every = np.arange(0x110000, dtype=np.uint32).tobytes().decode(
                "utf-32-le", "surrogatepass")  # every code point, in order
            t = np.zeros(0x110000, dtype=np.bool_)
            for m in re.finditer(r"\w+", every):
                t[m.start():m.end()] = True
            _table = t
        return _table


@nb.njit(cache=True, inline="always")
def _rotl(x: np.uint64, r: np.uint64) -> np.uint64:
    return (x << r) | (x >> (np.uint64(64) - r))


@nb.njit(cache=True, inline="always")
def _read64(buf: np.ndarray, p: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8):
        v |= np.uint64(buf[p + k]) << np.uint64(8 * k)
    return v


@nb.njit(cache=True, inline="always")
def _round(acc: np.uint64, lane: np.uint64) -> np.uint64:
    acc = acc + lane * _P2
    acc = _rotl(acc, np.uint64(31))
    return acc * _P1


@nb.njit(cache=True)
def xxh64(buf: np.ndarray, n: int, seed: np.uint64) -> np.uint64:
    """XXH64 of ``buf[:n]`` (the reference algorithm, for any length)."""
    p = 0
    if n >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        while p + 32 <= n:
            v1 = _round(v1, _read64(buf, p))
            v2 = _round(v2, _read64(buf, p + 8))
            v3 = _round(v3, _read64(buf, p + 16))
            v4 = _round(v4, _read64(buf, p + 24))
            p += 32
        h = (_rotl(v1, np.uint64(1)) + _rotl(v2, np.uint64(7)) + _rotl(v3, np.uint64(12))
             + _rotl(v4, np.uint64(18)))
        for v in (v1, v2, v3, v4):
            h ^= _round(np.uint64(0), v)
            h = h * _P1 + _P4
    else:
        h = seed + _P5
    h += np.uint64(n)
    while p + 8 <= n:
        h ^= _round(np.uint64(0), _read64(buf, p))
        h = _rotl(h, np.uint64(27)) * _P1 + _P4
        p += 8
    if p + 4 <= n:
        lane = np.uint64(0)
        for k in range(4):
            lane |= np.uint64(buf[p + k]) << np.uint64(8 * k)
        h ^= lane * _P1
        h = _rotl(h, np.uint64(23)) * _P2 + _P3
        p += 4
    while p < n:
        h ^= np.uint64(buf[p]) * _P5
        h = _rotl(h, np.uint64(11)) * _P1
        p += 1
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@nb.njit(cache=True, inline="always")
def _fmix64(x: np.uint64) -> np.uint64:
    x ^= x >> np.uint64(33)
    x *= _FMIX1
    x ^= x >> np.uint64(33)
    x *= _FMIX2
    x ^= x >> np.uint64(33)
    return x


@nb.njit(cache=True, inline="always")
def _utf8(buf: np.ndarray, n: int, c: int) -> int:
    """Write code point ``c`` at ``buf[n:]`` as UTF-8; the new length (``buf`` has room)."""
    if c < 0x80:
        buf[n] = c
        return n + 1
    if c < 0x800:
        buf[n] = 0xC0 | (c >> 6)
        buf[n + 1] = 0x80 | (c & 0x3F)
        return n + 2
    if c < 0x10000:
        buf[n] = 0xE0 | (c >> 12)
        buf[n + 1] = 0x80 | ((c >> 6) & 0x3F)
        buf[n + 2] = 0x80 | (c & 0x3F)
        return n + 3
    buf[n] = 0xF0 | (c >> 18)
    buf[n + 1] = 0x80 | ((c >> 12) & 0x3F)
    buf[n + 2] = 0x80 | ((c >> 6) & 0x3F)
    buf[n + 3] = 0x80 | (c & 0x3F)
    return n + 4


@nb.njit(cache=True)
def _block(cps: np.ndarray, starts: np.ndarray, is_word: np.ndarray, seed: np.uint64,
           ngram: int, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Signatures of the documents ``cps[starts[d]:starts[d + 1]]`` into ``out[d]`` (rows of
    a document without words are left as they are: all-MAX)."""
    longest = 0
    for d in range(len(starts) - 1):
        longest = max(longest, starts[d + 1] - starts[d])
    wh = np.empty(longest + 1, dtype=np.uint64)  # a document has fewer words than chars
    buf = np.empty(4 * longest + 8, dtype=np.uint8)  # a word's UTF-8: <= 4 bytes a char
    mins = np.empty(len(a), dtype=np.uint64)
    for d in range(len(starts) - 1):
        i, end, words = starts[d], starts[d + 1], 0
        while i < end:
            if not is_word[cps[i]]:
                i += 1
                continue
            n = 0
            while i < end and is_word[cps[i]]:
                n = _utf8(buf, n, cps[i])
                i += 1
            wh[words] = xxh64(buf, n, seed)
            words += 1
        if words == 0:
            continue
        # a shingle per start while ngram words remain; a shorter text is one shingle
        shingles = words - ngram + 1 if words >= ngram else 1
        width = ngram if words >= ngram else words
        mins[:] = _MAX64
        for s in range(shingles):
            acc = wh[s]
            for k in range(1, width):
                acc = acc * _POLY + wh[s + k]
            h = _fmix64(acc)
            for p in range(len(a)):
                mins[p] = min(mins[p], a[p] * h + b[p])
        for p in range(len(a)):
            out[d, p] = np.uint32(mins[p] >> np.uint64(32))


def signature_rows(texts: Sequence[str | None], ngram: int, seed: int, a: np.ndarray,
                   b: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = the signature of ``texts[i]`` (``out`` starts all-MAX: rows of texts
    without words stay so), in calls of whole documents up to ``BLOCK_CHARS`` code points
    (one document may be longer), lowercased a block at a time."""
    table = word_table()
    i = 0
    while i < len(texts):
        start, block, size = i, [], 0
        while i < len(texts) and (not block or size + len(texts[i] or "") <= BLOCK_CHARS):
            low = texts[i].lower() if texts[i] else ""  # type: ignore[union-attr]
            block.append(low)
            size += len(low)
            i += 1
        cps = np.frombuffer("".join(block).encode("utf-32-le", "surrogatepass"),
                            dtype=np.uint32)
        starts = np.zeros(len(block) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, block), dtype=np.int64, count=len(block)),
                  out=starts[1:])
        _block(cps, starts, table, np.uint64(seed), ngram, a, b, out[start:i])
