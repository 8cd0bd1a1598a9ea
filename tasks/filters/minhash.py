"""Near-duplicate detection: MinHash signatures per document, LSH bands, verified clusters.

The near-duplicate counterpart of ``tasks.filters.dedup`` and used the same way: scores (the
signature and its band keys) are computed once per shard and stored; survivors are chosen
across all shards by a deterministic order, the smallest (shard, row) of each cluster.

Pipeline
--------
1. ``signatures``: a document is the set of its word ``ngram``-shingles (lowercased ``\\w+``
   words, Unicode-aware). Each word is hashed with xxhash64 (seeded); a shingle's 64-bit hash is
   the polynomial combination ``h = ((w0 * P + w1) * P + w2) ...`` in wrapping uint64 arithmetic,
   followed by the murmur3 64-bit finaliser (so the shingle hash is not linear in the word
   hashes). ``num_perm`` hash functions are then applied and the minimum kept per function.
   The hash functions are **multiply-shift** (Dietzfelbinger et al. 1997):
   ``g_i(x) = ((a_i * x + b_i) mod 2**64) >> 32`` with ``a_i`` odd and ``a_i, b_i`` drawn from
   ``numpy.random.default_rng(seed)``; values are 32-bit, the signature is uint32.
   Because the shift is monotone, the minimum is taken on the 64-bit products and shifted once.
   A text with fewer than ``ngram`` words is one shingle (all its words); a text with no word
   gets the all-``0xFFFFFFFF`` signature (so word-less texts are near-duplicates of each other
   and of nothing else).
2. ``band_keys``: the signature is cut into ``bands`` bands of ``rows`` values; each band is
   hashed to one uint64 key. Two documents are LSH candidates when they share a key in the same
   band; at Jaccard ``s`` that happens with probability ``1 - (1 - s**rows)**bands``
   (1 - 1e-9 at s = 0.8 with the defaults 50 x 5; 0.80 at s = 0.5, 0.16 at s = 0.3: the
   bands are generous on purpose, the verification below decides).
3. ``clusters`` (in ``minhash_clusters.py``, re-exported here): candidates are verified
   (estimated Jaccard >= threshold removes LSH false positives), and the verified pairs are
   merged with a vectorised union-find over all shards.
   Clusters are connected components, so membership is transitive (A~B and B~C put A and C in
   one cluster even when A and C differ more). The survivor of each cluster is its smallest
   (shard, row); every other member is dropped.

Defaults: ``num_perm=250, bands=50, rows=5, ngram=5, threshold=0.8, seed=1``. With 250
permutations the estimated Jaccard has a standard deviation of about ``sqrt(J(1-J)/250)``
(0.025 at J = 0.8), so pairs right at the threshold are found about half the time, pairs at
J >= 0.85 almost always. Measured on planted pairs of known Jaccard (tests/bench/
test_bench_minhash.py): recall 0.976 and precision 0.965 at J >= 0.8, where 100 permutations
(20 x 5) gave 0.926 / 0.972 at the same speed.

Languages written without spaces (zh, ja, th) give few, long ``\\w+`` "words"; their shingles
are coarse and MinHash finds mostly exact copies there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from typing import Annotated

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import ConfigDict, Field, model_validator

from tasks.filters.base import FilterConfig
from tasks.filters.minhash_clusters import (  # noqa: F401 - step 3, callers use minhash.*
    Candidates,
    SigSource,
    _matrix,
    _union,
    clusters,
    duplicates,
)
from tasks.identity import SCORED

NAME = "minhash_dedup"
RULE = "minhash_dedup.near_duplicate"
SCORE_VERSION = 1
SIG_COLUMN = "minhash_dedup_sig"  # fixed_size_list<uint32>[num_perm], stored per shard
BANDS_COLUMN = "minhash_dedup_bands"  # fixed_size_list<uint64>[bands], stored per shard

MAX_HASH = np.uint32(0xFFFFFFFF)
_WORD = re.compile(r"\w+")
_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the shingle polynomial
_BAND_SEED = np.uint64(0x2545F4914F6CDD1D)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT32 = np.uint64(32)
_SHIFT33 = np.uint64(33)
_BLOCK = 1 << 17  # shingles per vectorised block (1 MiB of uint64)
_DOCS = 4096  # documents tokenised at a time



class Config(FilterConfig):
    """MinHash-LSH near-duplicate parameters (``bands * rows`` must equal ``num_perm``)."""

    model_config = ConfigDict(extra="forbid")

    num_perm: Annotated[int, SCORED] = Field(
        250, ge=1, description="hash functions per signature (score)")
    bands: Annotated[int, SCORED] = Field(50, ge=1, description="LSH bands (score)")
    rows: Annotated[int, SCORED] = Field(5, ge=1, description="signature values per band (score)")
    ngram: Annotated[int, SCORED] = Field(5, ge=1, description="words per shingle (score)")
    seed: Annotated[int, SCORED] = Field(
        1, ge=0, lt=2**63, description="seed of word hashes and permutations (score)")
    threshold: float = Field(
        0.8, ge=0, le=1,
        description="verified pairs need estimated Jaccard >= this to join a cluster",
    )

    @model_validator(mode="after")
    def _bands_cover_signature(self) -> Config:
        if self.bands * self.rows != self.num_perm:
            raise ValueError(
                f"bands * rows must equal num_perm: {self.bands} * {self.rows} != {self.num_perm}"
            )
        return self


# --------------------------------------------------------------------------- hashing


def _fmix64(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """murmur3's 64-bit finaliser (a bijection) in wrapping uint64 arithmetic; into ``out``
    (may be ``x`` itself) or a new array."""
    if out is None:
        out = x.copy()
    elif out is not x:
        out[...] = x
    tmp = np.empty_like(out)
    for mult in (_FMIX1, _FMIX2):
        np.right_shift(out, _SHIFT33, out=tmp)
        out ^= tmp
        out *= mult
    np.right_shift(out, _SHIFT33, out=tmp)
    out ^= tmp
    return out


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def _shingle_hashes(
    words: Sequence[list[str]], ngram: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 shingle hashes of all documents, in document order, and shingles per doc."""
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    n_words = int(lens.sum())
    wh = np.fromiter(
        map(xxhash.xxh64_intdigest, map(str.encode, chain.from_iterable(words)), repeat(seed)),
        dtype=np.uint64, count=n_words,
    )
    counts = np.where(lens >= ngram, lens - ngram + 1, np.minimum(lens, 1))
    if n_words == 0:
        return wh, counts
    # doc-local position of every word; a shingle starts at every position <= max(len-ngram, 0)
    offsets = np.cumsum(lens) - lens
    doc_of = np.repeat(np.arange(len(lens)), lens)
    pos = np.arange(n_words, dtype=np.int64) - offsets[doc_of]
    starts = np.flatnonzero(pos <= np.maximum(lens - ngram, 0)[doc_of])
    left = lens[doc_of[starts]] - pos[starts]  # words from the start to the document's end
    acc = wh[starts]
    for j in range(1, ngram):
        nxt = wh[np.minimum(starts + j, n_words - 1)]
        acc = np.where(j < left, acc * _POLY + nxt, acc)
    return _fmix64(acc), counts


def tokenize(text: str | None) -> list[str]:
    """Lowercased Unicode ``\\w+`` words (``None`` -> no words)."""
    return _WORD.findall(text.lower()) if text else []


def signatures(
    texts: Iterable[str | None], num_perm: int = 250, ngram: int = 5, seed: int = 1
) -> np.ndarray:
    """MinHash signatures, shape ``(len(texts), num_perm)``, uint32 (see the module docstring).

    Deterministic for ``(num_perm, ngram, seed)`` and independent of batching: a document's
    signature does not depend on the other texts in the call. ``None`` counts as empty.
    Works through the texts ``_DOCS`` at a time, so memory stays bounded for long inputs.
    """
    texts = texts if isinstance(texts, Sequence) else list(texts)
    out = np.full((len(texts), num_perm), MAX_HASH, dtype=np.uint32)
    a, b = _permutations(num_perm, seed)
    for s in range(0, len(texts), _DOCS):
        _signature_block(texts[s:s + _DOCS], ngram, seed, a, b, out[s:s + _DOCS])
    return out


def _signature_block(texts: Sequence[str | None], ngram: int, seed: int,
                     a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    sh, counts = _shingle_hashes([tokenize(t) for t in texts], ngram, seed)
    docs = np.flatnonzero(counts)  # documents with at least one shingle (others stay MAX)
    ends = np.cumsum(counts[docs])
    # blocks of whole documents of about _BLOCK shingles (a long document may be a block
    # alone); per block, one contiguous 1-D pass per hash function (cache-friendly)
    i = 0
    while i < len(docs):
        lo = int(ends[i] - counts[docs[i]])
        j = max(int(np.searchsorted(ends, lo + _BLOCK, side="right")), i + 1)
        hi = int(ends[j - 1])
        x = sh[lo:hi]
        starts = ends[i:j] - counts[docs[i:j]] - lo
        v = np.empty_like(x)
        mins = np.empty((len(a), j - i), dtype=np.uint64)
        for p in range(len(a)):
            np.multiply(x, a[p], out=v)
            v += b[p]
            np.minimum.reduceat(v, starts, out=mins[p])
        out[docs[i:j]] = (mins.T >> _SHIFT32).astype(np.uint32)
        i = j


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 key per band, shape ``(n_docs, bands)``: band ``k`` hashes
    ``sig[:, k*rows:(k+1)*rows]`` (and ``k``, so keys of different bands differ too)."""
    sig = np.asarray(sig)
    if sig.ndim != 2 or sig.shape[1] != bands * rows:
        raise ValueError(f"signature shape {sig.shape} is not (n, bands * rows = {bands * rows})")
    out = np.empty((len(sig), bands), dtype=np.uint64)
    init = _fmix64(np.arange(bands, dtype=np.uint64) + _BAND_SEED)
    step = max(_BLOCK // bands, 1)  # documents per cache-sized block
    for lo in range(0, len(sig), step):
        acc = out[lo:lo + step]
        acc[...] = init
        for r in range(rows):
            acc *= _POLY
            np.add(acc, sig[lo:lo + step, r::rows], out=acc, casting="unsafe")  # value r
            _fmix64(acc, out=acc)
    return out


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float | np.ndarray:
    """Fraction of equal signature values: a float for two signatures, else an array over the
    leading axes (broadcasting)."""
    eq = np.asarray(sig_a) == np.asarray(sig_b)
    r = eq.mean(axis=-1)
    return float(r) if np.ndim(r) == 0 else r


def hash_texts(texts: pa.Array | pa.ChunkedArray | Sequence[str | None],
               config: Config | None = None) -> pa.Table:
    """Per-shard scores: ``SIG_COLUMN`` (fixed_size_list<uint32>[num_perm]) and
    ``BANDS_COLUMN`` (fixed_size_list<uint64>[bands]), one row per text, same order."""
    cfg = config or Config()
    if isinstance(texts, pa.ChunkedArray | pa.Array):
        texts = texts.to_pylist()
    sig = signatures(texts, cfg.num_perm, cfg.ngram, cfg.seed)
    keys = band_keys(sig, cfg.bands, cfg.rows)
    return pa.table({
        SIG_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), cfg.num_perm),
        BANDS_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel()), cfg.bands),
    })


def candidates(scored: pa.Table, shard: int, rows: np.ndarray | None = None) -> pa.Table:
    """The ``keys`` table ``clusters`` takes, for one shard: columns ``shard`` (int32),
    ``row`` (int64), ``bands`` and ``sig`` (from ``BANDS_COLUMN`` / ``SIG_COLUMN`` of
    ``scored``), for ``rows`` (default: all rows)."""
    if rows is None:
        rows = np.arange(len(scored), dtype=np.int64)
    idx = pa.array(np.asarray(rows, dtype=np.int64))
    return pa.table({
        "shard": pa.array(np.full(len(idx), shard, dtype=np.int32)),
        "row": idx,
        "bands": scored.column(BANDS_COLUMN).take(idx),
        "sig": scored.column(SIG_COLUMN).take(idx),
    })
