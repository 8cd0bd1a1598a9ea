"""Hashed n-gram features (DSIR, Xie et al. 2023): each document as the bucket ids of its
word unigrams, bigrams, ... (``ngrams``) hashed into ``num_buckets`` buckets.

Words as in the DSIR package's ``wordpunct`` tokenizer: the lower-cased text cut into runs of
word characters and runs of other non-space characters (``\\w+|[^\\w\\s]+``); word characters
here are letters, combining marks, digits and ``_`` of every script. Everything runs on a
whole batch with Arrow kernels and numpy: one regex pass, one split, a dictionary of the
batch's distinct words (each hashed once with xxh3-64), n-gram hashes combined from word
hashes with a 64-bit mixer, then ``% num_buckets``. No Python loop per word or document.

A document's features are a list of bucket ids (``uint16`` when ``num_buckets`` fits, else
``uint32``), one per n-gram, in no particular order: the bag of n-grams, so counts are
``bincount`` and a linear score is a gather and a per-document sum.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

# runs of characters that are neither word characters nor spaces become words of their own
_PUNCT_RUN = r"([^\p{L}\p{M}\p{N}_\s\p{Z}]+)"
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def bucket_type(num_buckets: int) -> pa.DataType:
    return pa.uint16() if num_buckets <= 1 << 16 else pa.uint32()


def words(text: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Each text's words (lower-cased, punctuation runs split off); null stays null."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    spaced = pc.replace_substring_regex(pc.utf8_lower(text), _PUNCT_RUN, r" \1 ")
    return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(spaced))


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def _word_hashes(values: pa.Array) -> np.ndarray:
    """xxh3-64 of each word, computing each distinct word of the batch once."""
    if len(values) == 0:
        return np.zeros(0, np.uint64)
    enc = pc.dictionary_encode(values)
    uniq = enc.dictionary.cast(pa.large_binary()).to_pylist()
    table = np.fromiter((xxhash.xxh3_64_intdigest(w) for w in uniq), np.uint64, len(uniq))
    return table[enc.indices.to_numpy(zero_copy_only=False)]


def hashed_ngrams(text: pa.Array | pa.ChunkedArray, num_buckets: int = 10_000,
                  ngrams: int = 2) -> pa.ListArray:
    """Per document, the buckets of its 1..``ngrams``-grams of words (a null text -> null)."""
    toks = words(text)
    values = toks.flatten()
    doc_of = np.repeat(np.arange(len(toks)), np.diff(toks.offsets.to_numpy()))
    nonempty = pc.greater(pc.binary_length(values), 0)  # an empty text splits into [""]
    if not pc.all(nonempty).as_py():
        values = values.filter(nonempty)
        doc_of = doc_of[nonempty.to_numpy(zero_copy_only=False)]
    n_words = np.bincount(doc_of, minlength=len(toks))
    h = _word_hashes(values)
    total = len(h)
    nb = np.uint64(num_buckets)
    with np.errstate(over="ignore"):  # 64-bit hashing wraps on purpose
        # per word position j, the bucket of the n-gram starting at j (-1: none)
        parts = [(_mix(h) % nb).astype(np.int64)]
        gram = h
        for n in range(2, ngrams + 1):
            m = max(total - n + 1, 0)
            gram = _mix(gram[:m] * _GOLD + h[n - 1:n - 1 + m] + np.uint64(n))
            whole = doc_of[:m] == doc_of[n - 1:n - 1 + m]  # its n words in one document
            b = np.where(whole, (gram % nb).astype(np.int64), -1)
            parts.append(np.concatenate([b, np.full(total - m, -1, np.int64)]))
    grid = np.stack(parts, axis=1) if total else np.zeros((0, ngrams), np.int64)
    keep = grid >= 0
    values = grid[keep]  # row-major: each document's n-grams stay contiguous
    per_doc = np.bincount(doc_of, weights=keep.sum(axis=1), minlength=len(n_words))
    out_offsets = np.zeros(len(n_words) + 1, np.int64)
    np.cumsum(per_doc.astype(np.int64), out=out_offsets[1:])
    vtype = bucket_type(num_buckets)
    ids = pa.array(values.astype(vtype.to_pandas_dtype()), vtype)
    return pa.ListArray.from_arrays(pa.array(out_offsets.astype(np.int32)), ids,
                                    mask=pc.is_null(toks) if toks.null_count else None)


def flat(features: pa.ListArray | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(bucket ids of every document, one after another; each document's n-gram count);
    a null document has none."""
    if isinstance(features, pa.ChunkedArray):
        features = features.combine_chunks()
    offsets = features.offsets.to_numpy().astype(np.int64)
    values = features.values.to_numpy()[offsets[0]:offsets[-1]]
    return values, np.diff(offsets)


def counts(features: pa.ListArray | pa.ChunkedArray, num_buckets: int) -> np.ndarray:
    """How often each bucket occurs over all documents (int64, length ``num_buckets``)."""
    values, _ = flat(features)
    return np.bincount(values, minlength=num_buckets).astype(np.int64)


def doc_sums(features: pa.ListArray | pa.ChunkedArray, vector: np.ndarray) -> np.ndarray:
    """Per document, the sum of ``vector`` over its n-grams (a linear score such as
    log p_target(x) - log p_raw(x)); 0.0 for a document without n-grams."""
    values, lengths = flat(features)
    doc = np.repeat(np.arange(len(lengths)), lengths)
    return np.bincount(doc, weights=vector[values], minlength=len(lengths))


def draws(ids: pa.Array | pa.ChunkedArray, seed: int, salt: str) -> np.ndarray:
    """A uniform draw in [0, 1) per document id, fixed by (seed, salt, id)."""
    prefix = f"{seed}\x00{salt}\x00".encode()
    vals = pc.cast(ids, pa.large_binary()).to_pylist()
    h = np.fromiter((xxhash.xxh3_64_intdigest(prefix + (v or b"")) for v in vals),
                    np.uint64, len(vals))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
