"""datatrove's n-gram repetition numbers (Gopher repetition, ``compat: datatrove``).

- *top n-gram*: the n-gram (tokens joined with spaces) that occurs most often, ties to the one
  seen first; its characters x its count. No n-gram (fewer than n tokens): 0.
- *duplicated n-grams*: n-grams written without spaces, read greedily from the start: one that
  equals an n-gram read before counts its characters and the reading jumps past it; others
  are remembered and the reading moves one token on.

``ngram_chars`` returns both, for every n asked, in plain Python for short texts and with numpy
for long ones (the same numbers; a test compares them). The numpy path numbers the joined
n-grams by a 64-bit polynomial hash of their characters with their length, finds the greedy
reading's repeats among the positions whose number occurred before, and checks every repeat
against the text; a hash collision there sends the text to the plain path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence

import numpy as np

NUMPY_MIN_TOKENS = 500  # fewer tokens: plain Python is faster than numpy's setup
_BASE = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_BASE_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _top_plain(ws: Sequence[str], n: int) -> int:
    grams = Counter(zip(*(ws[i:] for i in range(n)), strict=False))
    if not grams:
        return 0
    top, k = grams.most_common(1)[0]  # ties: the n-gram seen first
    return (sum(map(len, top)) + n - 1) * k


def _dup_plain(n: int, m: int, joined: str, offsets: Sequence[int]) -> int:
    if m <= 0:
        return 0
    grams = [joined[offsets[i]:offsets[i + n]] for i in range(m)]
    if len(set(grams)) == m:
        return 0
    seen: set[str] = set()
    chars = i = 0
    while i < m:
        g = grams[i]
        if g in seen:
            chars += len(g)
            i += n
        else:
            seen.add(g)
            i += 1
    return chars


def _plain(ws: Sequence[str], top_ns: Sequence[int], dup_ns: Sequence[int]) -> list[int]:
    joined = "".join(ws)
    offsets = [0]
    for w in ws:
        offsets.append(offsets[-1] + len(w))
    return ([_top_plain(ws, n) for n in top_ns]
            + [_dup_plain(n, len(ws) - n + 1, joined, offsets) for n in dup_ns])


class _Groups:
    """Positions grouped by equal keys, numbered in order of first appearance (a hash table,
    no sort): ``number`` per position, ``first`` (position) and ``count`` per group, and
    ``repeats``: the positions whose key appeared before."""

    def __init__(self, key: np.ndarray) -> None:
        import pandas as pd  # its factorize: a C hash table

        number, _ = pd.factorize(key)
        self.number = number
        seen_max = np.maximum.accumulate(number)
        is_first = np.empty(len(number), dtype=bool)
        is_first[0] = True
        np.greater(number[1:], seen_max[:-1], out=is_first[1:])
        self.first = np.flatnonzero(is_first)
        self.repeats = np.flatnonzero(~is_first)

    def count(self) -> np.ndarray:
        return np.bincount(self.number, minlength=len(self.first))


def _tops_np(ids: np.ndarray, lens: np.ndarray, vocab: int, top_ns: Sequence[int]) -> list[int]:
    """Top n-grams, numbered exactly: (number of the (n-1)-gram, next token) grouped."""
    out: dict[int, int] = {}
    gram = ids
    for n in range(2, max(top_ns) + 1):
        m = len(ids) - n + 1
        if m <= 0:
            out[n] = 0
            continue
        g = _Groups(gram[:m] * vocab + ids[n - 1:])
        gram = g.number
        if n in top_ns:
            count = g.count()
            top = int(np.argmax(count))  # ties: the first maximum, i.e. the n-gram seen first
            start = int(g.first[top])
            out[n] = (int(lens[start:start + n].sum()) + n - 1) * int(count[top])
    return [out[n] for n in top_ns]


def _dup_np(n: int, offsets: np.ndarray, off: list[int], prefix: np.ndarray,
            powers: np.ndarray, joined: str) -> int | None:
    """Greedy duplicated n-gram characters; None on a hash collision."""
    m = len(offsets) - n
    if m <= 0:
        return 0
    a, b = offsets[:m], offsets[n:]
    with np.errstate(over="ignore"):
        key = (prefix[b] - prefix[a]) * powers[a] * _MIX + (b - a).astype(np.uint64)
    g = _Groups(key)
    if not len(g.repeats):
        return 0
    return _walk(n, g.repeats, g.first[g.number], g.number, off, joined)


def _walk(n: int, repeats: np.ndarray, earliest: np.ndarray, number: np.ndarray,
          off: list[int], joined: str) -> int | None:
    """The greedy reading, repeat by repeat, for when it jumped over a first occurrence."""
    rep = repeats.tolist()
    rep_earliest = earliest[repeats].tolist()
    rep_number = number[repeats].tolist()
    skipped = bytearray(off[-1] + 1)  # positions the reading jumped over
    adopted: dict[int, int] = {}  # number -> first position read, when its earliest was skipped
    chars = k = 0
    while k < len(rep):
        i, j = rep[k], rep_earliest[k]
        if skipped[j]:
            j = adopted.setdefault(rep_number[k], i)
            if j == i:  # the first occurrence that was read: remembered, not a repeat
                k += 1
                continue
        lo, hi = off[i], off[i + n]
        if joined[lo:hi] != joined[off[j]:off[j + n]]:
            return None
        chars += hi - lo
        skipped[i + 1:i + n] = b"\x01" * (n - 1)
        k = bisect_left(rep, i + n, k + 1)
    return chars


def ngram_chars(ws: Sequence[str], top_ns: Sequence[int], dup_ns: Sequence[int]) -> list[int]:
    """[top n-gram characters for n in top_ns..., duplicated characters for n in dup_ns...]."""
    if len(ws) < NUMPY_MIN_TOKENS:
        return _plain(ws, top_ns, dup_ns)
    # token numbers from Python's string hash; as many numbers as distinct tokens means the
    # hash told every token apart
    import pandas as pd

    ids, vocab = pd.factorize(np.array(ws, dtype=object))
    lens = np.fromiter(map(len, ws), np.int64, len(ws))
    out = _tops_np(ids.astype(np.int64), lens, len(vocab), top_ns)
    joined = "".join(ws)
    chars = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    with np.errstate(over="ignore"):
        inv_powers = np.cumprod(np.full(len(chars), _BASE_INV, dtype=np.uint64))
        inv_powers = np.concatenate([[np.uint64(1)], inv_powers[:-1]])
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(chars * inv_powers)])
        powers = np.cumprod(np.full(len(chars) + 1, _BASE, dtype=np.uint64)) * _BASE_INV
    off = offsets.tolist()
    for n in dup_ns:
        d = _dup_np(n, offsets, off, prefix, powers, joined)
        if d is None:
            return _plain(ws, top_ns, dup_ns)
        out.append(d)
    return out
