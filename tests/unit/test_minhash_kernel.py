"""The compiled MinHash kernel (tasks/filters/minhash_kernel.py) against its definition: the
numpy reference (``minhash.reference_signatures``: ``re`` words, the ``xxhash`` package), on
the sample, on random texts over a Unicode alphabet chosen to be awkward, and per part."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import xxhash

from tasks.filters import minhash as mh
from tasks.filters import minhash_kernel as mk

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
# word and non-word characters of several widths in UTF-8 (1-4 bytes): letters whose lowercase
# is longer (İ) or context-dependent (Σ), digits that are not ASCII (², ٣, ½), the underscore,
# a combining mark (not \w), CJK, an emoji, punctuation and white space
ALPHABET = list("abcxyzABXYZ019_ßİΣσςéÉ中文字²٣½\u0301\u200b😀🀄.,;!?'\"-—()[] \n\t")
LONG = ["a" * 31, "b" * 32, "c" * 33, "d" * 64 + "é", "中" * 20, "x_" * 40]  # xxh64 stripes


def _random_text(rng: random.Random) -> str | None:
    r = rng.random()
    if r < 0.03:
        return None
    if r < 0.06:
        return ""
    parts = []
    for _ in range(rng.randrange(0, 60)):
        if rng.random() < 0.05:
            parts.append(rng.choice(LONG))
        else:
            parts.append("".join(rng.choices(ALPHABET, k=rng.randrange(1, 9))))
        parts.append(rng.choice([" ", "  ", "\n", ", ", "—", ""]))
    return "".join(parts)


def test_xxh64_is_the_xxhash_packages() -> None:
    rng = np.random.default_rng(3)
    buf = rng.integers(0, 256, 300, dtype=np.uint8)
    for n in [*range(0, 80), 95, 96, 97, 127, 128, 129, 255, 300]:
        for seed in (0, 1, 2**63 + 12345, 2**64 - 1, int(rng.integers(0, 2**63))):
            want = xxhash.xxh64_intdigest(bytes(buf[:n]), seed)
            assert int(mk.xxh64(buf, n, np.uint64(seed))) == want, (n, seed)


def test_word_table_is_res_word_class() -> None:
    table = mk.word_table()
    word = re.compile(r"\w")
    want = np.fromiter((word.match(chr(c)) is not None for c in range(0x110000)),
                       dtype=np.bool_, count=0x110000)
    assert np.array_equal(table, want)
    assert table[ord("_")] and table[ord("²")] and not table[0x301] and not table[ord("—")]


def test_kernel_equals_the_reference_on_the_sample() -> None:
    texts = [json.loads(line)["text"] for line in
             SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert np.array_equal(mh.signatures(texts), mh.reference_signatures(texts))


@pytest.mark.parametrize("ngram, num_perm, seed", [(5, 250, 1), (1, 7, 0), (3, 64, 2**62),
                                                   (2, 1, 9)])
def test_kernel_equals_the_reference_on_awkward_unicode(ngram: int, num_perm: int,
                                                        seed: int) -> None:
    rng = random.Random(ngram * 1000 + num_perm)
    texts = [_random_text(rng) for _ in range(400)] + LONG + ["İİİ Σ", "_", "² ٣ ½", "😀 🀄"]
    got = mh.signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed)
    want = mh.reference_signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed)
    assert np.array_equal(got, want)
    assert (got[[t is None or t == "" for t in texts]] == mh.MAX_HASH).all()


def test_blocks_of_whole_documents_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    texts = [_random_text(rng) for _ in range(200)]
    whole = mh.signatures(texts)
    monkeypatch.setattr(mk, "BLOCK_CHARS", 40)  # mostly one document per kernel call
    assert np.array_equal(mh.signatures(texts), whole)
    assert np.array_equal(np.vstack([mh.signatures([t]) for t in texts[:30]]), whole[:30])


def test_a_lone_surrogate_separates_words_as_in_the_reference() -> None:
    # only a str made in Python holds one (Parquet and JSON give valid UTF-8); it is no word
    # character, so it never reaches a hash, but the text must still reach the kernel
    texts = ["ab\ud800cd ef", "ab cd ef", "\udfff"]
    sig = mh.signatures(texts)
    assert np.array_equal(sig, mh.reference_signatures(texts))
    assert np.array_equal(sig[0], sig[1]) and (sig[2] == mh.MAX_HASH).all()
