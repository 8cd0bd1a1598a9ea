"""Word n-grams of evaluation items, as a set of 64-bit hashes, and the scan of training text
against it.

Words are runs of Python's ``\\w`` (letters and digits of every script, and ``_``), lower-cased;
punctuation and whitespace only separate words, so "The cat, sat." and "the cat sat" have the
same n-grams (GPT-3 and lm-evaluation-harness's decontamination also drop punctuation and case).
An n-gram's hash chains its words' xxh3-64 hashes through splitmix64's finaliser, so word order
counts. The index holds each distinct n-gram hash of the evaluation items once, with a bitmask
of the tasks that have it: its memory is 16 bytes per distinct evaluation n-gram, whatever the
size of the corpus scanned against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

WORD = re.compile(r"\w+")
MAX_TASKS = 64  # one bit per task in the owners mask
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def words(text: str) -> list[str]:
    return [m.group().lower() for m in WORD.finditer(text)]


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character offsets (start, end) of each word of ``text``, in the order of ``words``."""
    return [m.span() for m in WORD.finditer(text)]


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def _word_hashes(flat: list[str]) -> np.ndarray:
    """xxh3-64 of each word, each distinct word hashed once."""
    if not flat:
        return np.zeros(0, np.uint64)
    enc = pc.dictionary_encode(pa.array(flat, pa.large_string()))
    uniq = enc.dictionary.to_pylist()
    table = np.fromiter((xxhash.xxh3_64_intdigest(w.encode("utf-8")) for w in uniq),
                        np.uint64, len(uniq))
    return table[enc.indices.to_numpy(zero_copy_only=False)]


@dataclass
class Grams:
    """Every n-gram of a batch of texts: its hash, its text's position in the batch and the
    index of its first word within that text. Texts shorter than n words have none."""

    hashes: np.ndarray  # uint64
    doc: np.ndarray  # int64
    pos: np.ndarray  # int64
    n_words: np.ndarray  # int64, per text


def ngrams(word_lists: list[list[str]], n: int) -> Grams:
    lens = np.fromiter((len(w) for w in word_lists), np.int64, len(word_lists))
    h = _word_hashes([w for ws in word_lists for w in ws])
    doc_of = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    m = max(len(h) - n + 1, 0)
    gram = h[:m].copy()
    with np.errstate(over="ignore"):  # 64-bit hashing wraps on purpose
        for i in range(1, n):
            gram = _mix(gram * _GOLD + h[i:i + m] + np.uint64(i))
        gram = _mix(gram + np.uint64(n))
    whole = doc_of[:m] == doc_of[n - 1:n - 1 + m]  # all n words in one text
    starts = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=starts[1:])
    idx = np.flatnonzero(whole)
    return Grams(gram[idx], doc_of[idx], idx - starts[doc_of[idx]], lens)


@dataclass
class EvalIndex:
    """The distinct n-gram hashes of the evaluation items (sorted) and, per hash, the tasks
    that have it (bit t = ``tasks[t]``)."""

    n: int
    hashes: np.ndarray  # uint64, sorted, unique
    owners: np.ndarray  # uint64 bitmask
    tasks: list[str]

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """Position of each hash in the index, -1 where it is not there."""
        if len(self.hashes) == 0:
            return np.full(len(h), -1, np.int64)
        pos = np.searchsorted(self.hashes, h)
        found = (pos < len(self.hashes))
        found[found] = self.hashes[pos[found]] == h[found]
        return np.where(found, pos, -1).astype(np.int64)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, n=np.int64(self.n), hashes=self.hashes, owners=self.owners,
                 tasks=np.array(self.tasks, dtype=str))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> EvalIndex:
        with np.load(path) as z:
            return cls(int(z["n"]), z["hashes"], z["owners"], [str(t) for t in z["tasks"]])


def build_index(texts: list[str], tasks: list[str], n: int) -> tuple[EvalIndex, list[np.ndarray]]:
    """The index over the items' texts (``tasks[i]`` is item i's task) and, per item, the index
    positions of its distinct n-grams (empty for an item shorter than n words)."""
    names = sorted(set(tasks))
    if len(names) > MAX_TASKS:
        raise ValueError(f"at most {MAX_TASKS} evaluation tasks at once, got {len(names)}")
    bit = {t: np.uint64(1) << np.uint64(i) for i, t in enumerate(names)}
    g = ngrams([words(t) for t in texts], n)
    hashes, inverse = np.unique(g.hashes, return_inverse=True)
    owners = np.zeros(len(hashes), np.uint64)
    item_bits = np.array([bit[t] for t in tasks], np.uint64) if tasks else np.zeros(0, np.uint64)
    np.bitwise_or.at(owners, inverse, item_bits[g.doc])
    order = np.argsort(g.doc, kind="stable")
    bounds = np.searchsorted(g.doc[order], np.arange(len(texts) + 1))
    per_item = [np.unique(inverse[order[bounds[i]:bounds[i + 1]]]) for i in range(len(texts))]
    return EvalIndex(n, hashes, owners, names), per_item


@dataclass
class Match:
    """What one training text shares with the index."""

    starts: np.ndarray  # word index of each matching n-gram's first word
    hits: np.ndarray  # index positions of the matching n-grams
    owners: int  # OR of their tasks' bits


def scan(texts: list[str], index: EvalIndex) -> dict[int, Match]:
    """The texts (by position) that share at least one n-gram with the index."""
    g = ngrams([words(t) for t in texts], index.n)
    pos = index.lookup(g.hashes)
    hit = pos >= 0
    out: dict[int, Match] = {}
    docs, starts, hits = g.doc[hit], g.pos[hit], pos[hit]
    for d in np.unique(docs):
        sel = docs == d
        own = np.bitwise_or.reduce(index.owners[hits[sel]]) if sel.any() else np.uint64(0)
        out[int(d)] = Match(starts[sel], hits[sel], int(own))
    return out


def task_names(owners: int, tasks: list[str]) -> list[str]:
    return [t for i, t in enumerate(tasks) if owners >> i & 1]


def cut(text: str, starts: np.ndarray, n: int, margin: int = 0) -> tuple[str, int]:
    """``text`` without the spans its matching n-grams cover: from the first character of an
    n-gram's first word to the last character of its last word, widened by ``margin``
    characters on each side; overlapping spans merge. Returns the text and the number of
    spans removed."""
    spans = word_spans(text)
    pieces: list[list[int]] = []
    for s in sorted(int(x) for x in starts):
        a = max(spans[s][0] - margin, 0)
        b = min(spans[s + n - 1][1] + margin, len(text))
        if pieces and a <= pieces[-1][1]:
            pieces[-1][1] = max(pieces[-1][1], b)
        else:
            pieces.append([a, b])
    out, last = [], 0
    for a, b in pieces:
        out.append(text[last:a])
        last = b
    out.append(text[last:])
    return "".join(out), len(pieces)
