"""MinHash-LSH near-duplicate detection (tasks.filters.minhash).

The planted corpus: 300 real documents of >= 100 words from the sample, near copies (a few
words replaced or deleted, true 5-gram Jaccard in [0.85, 0.98]), exact copies and far copies
(true Jaccard <= 0.5), spread over 3 shards. Ground truth is the exact Jaccard of every pair that
shares a shingle; precision and recall are measured against all pairs with true Jaccard >= 0.8.
Near copies start at 0.85, not 0.8: the estimate's standard deviation is ~0.025 at the default
250 permutations, so a pair at exactly 0.8 is verified about half the time (module docstring).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from tasks.filters import minhash as mh

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
N_ORIGINALS = 300


# --------------------------------------------------------------------------- exact reference


def words_of(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = words_of(text)
    if not w:
        return set()
    if len(w) < n:
        return {tuple(w)}
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def all_pair_jaccard(sets: list[set]) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair of documents sharing at least one shingle."""
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            index[sh].append(i)
    inter: Counter[tuple[int, int]] = Counter()
    for docs in index.values():
        if len(docs) > 1:
            inter.update(combinations(docs, 2))
    return {
        (i, j): c / (len(sets[i]) + len(sets[j]) - c) for (i, j), c in inter.items()
    }


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines]


def _edit(words: list[str], rng: random.Random, tag: str) -> None:
    """One edit in place: replace a word by a new one, or delete a word."""
    i = rng.randrange(len(words))
    if rng.random() < 0.5:
        words[i] = f"zq{tag}x{rng.randrange(10**6)}"
    else:
        del words[i]


def _copy_with_jaccard(text: str, rng: random.Random, lo: float, hi: float, tag: str) -> str:
    """Edit a copy of ``text`` one word at a time until its true Jaccard is in [lo, hi]."""
    orig = shingle_set(text)
    target = rng.uniform(lo, hi)
    words = words_of(text)
    while True:
        trial = list(words)
        _edit(trial, rng, tag)
        j = jaccard(orig, shingle_set(" ".join(trial)))
        if j < lo:  # overshot: keep the previous state if it is in range, else go on
            if jaccard(orig, shingle_set(" ".join(words))) <= hi:
                break
        words = trial
        if j <= target:
            break
    return " ".join(words)


@pytest.fixture(scope="module")
def planted(sample_texts: list[str]) -> dict:
    rng = random.Random(20240601)
    long = [t for t in sample_texts if len(words_of(t)) >= 100]
    originals = rng.sample(long, N_ORIGINALS)
    texts = list(originals)
    for k, text in enumerate(originals):
        if k % 3 != 2:  # two thirds get a near copy (true J in [0.85, 0.98])
            texts.append(_copy_with_jaccard(text, rng, 0.85, 0.98, f"n{k}"))
        if k % 2 == 0:  # half get a far copy (true J in [0.2, 0.5])
            texts.append(_copy_with_jaccard(text, rng, 0.2, 0.5, f"f{k}"))
    for k in range(0, 30, 3):  # a few exact copies (J = 1) of originals
        texts.append(originals[k])
    # spread over 3 shards of different sizes, in random order
    order = list(range(len(texts)))
    rng.shuffle(order)
    cuts = [0, len(texts) // 5, len(texts) // 2, len(texts)]
    place = {}  # doc index -> (shard, row)
    shards = []
    for s in range(3):
        members = order[cuts[s]:cuts[s + 1]]
        shards.append([texts[d] for d in members])
        for r, d in enumerate(members):
            place[d] = (s, r)
    sets = [shingle_set(t) for t in texts]
    truth = all_pair_jaccard(sets)
    return {"texts": texts, "shards": shards, "place": place, "truth": truth}


def _keys(shards: list[list[str]], cfg: mh.Config | None = None) -> pa.Table:
    parts = []
    for s, texts in enumerate(shards):
        scored = mh.hash_texts(pa.array(texts, pa.large_string()), cfg)
        parts.append(mh.candidates(scored, s))
    return pa.concat_tables(parts)


def _by_place(result: pa.Table) -> dict[tuple[int, int], dict]:
    return {(r["shard"], r["row"]): r for r in result.to_pylist()}


# --------------------------------------------------------------------------- signatures


def test_identical_texts_same_signature(sample_texts: list[str]) -> None:
    t = sample_texts[100]
    s = mh.signatures([t, t, t.upper()])
    assert s.shape == (3, 250)
    assert s.dtype == np.uint32
    assert np.array_equal(s[0], s[1])
    assert np.array_equal(s[0], s[2])  # words are lowercased
    assert mh.estimated_jaccard(s[0], s[1]) == 1.0
    assert not np.array_equal(s[0], mh.signatures([sample_texts[101]])[0])


def test_signatures_deterministic_and_batch_independent(
    sample_texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = sample_texts[:300]
    a = mh.signatures(batch)
    b = mh.signatures(iter(batch))
    assert np.array_equal(a, b)
    monkeypatch.setattr(mh, "_DOCS", 7)  # internal document / shingle blocking
    monkeypatch.setattr(mh, "_BLOCK", 50)
    assert np.array_equal(mh.signatures(batch), a)
    monkeypatch.undo()
    single = np.vstack([mh.signatures([t]) for t in batch[:40]])
    assert np.array_equal(single, a[:40])
    other_seed = mh.signatures(batch[:5], seed=2)
    assert not np.array_equal(other_seed, a[:5])
    assert mh.signatures(batch[:5], num_perm=64).shape == (5, 64)


def test_short_and_empty_texts() -> None:
    s = mh.signatures(["", None, "  ,;!! ", "a b c", "A, b  c!", "a b d", "x"])
    assert (s[:3] == mh.MAX_HASH).all()  # no words: all max values
    assert np.array_equal(s[3], s[4])  # fewer words than ngram: one shingle of all words
    assert not np.array_equal(s[3], s[5])
    assert (s[6] != mh.MAX_HASH).any()
    assert mh.signatures([]).shape == (0, 250)
    # Unicode words
    u = mh.signatures(["Ça coûte très cher à Zürich aujourd'hui", "ça COÛTE très cher à zürich"])
    assert mh.estimated_jaccard(u[0], u[1]) > 0


def test_estimated_jaccard_close_to_true(sample_texts: list[str]) -> None:
    rng = random.Random(5)
    long = [t for t in sample_texts if len(words_of(t)) >= 150][:12]
    checked = []
    for k, text in enumerate(long):
        lo = 0.15 + 0.07 * k  # true Jaccard from ~0.15 to ~0.95 across the pairs
        copy = _copy_with_jaccard(text, rng, lo, lo + 0.05, f"e{k}")
        true_j = jaccard(shingle_set(text), shingle_set(copy))
        sig = mh.signatures([text, copy])
        est = mh.estimated_jaccard(sig[0], sig[1])
        assert abs(est - true_j) <= 0.1, (k, true_j, est)
        checked.append(true_j)
    assert min(checked) < 0.3 and max(checked) > 0.85
    # vectorised form
    sig = mh.signatures(long[:4])
    est = mh.estimated_jaccard(sig[:2], sig[2:])
    assert isinstance(est, np.ndarray) and est.shape == (2,)


def test_band_keys() -> None:
    sig = mh.signatures(["one two three four five six seven", "eight nine ten eleven twelve"],
                        num_perm=100)
    k = mh.band_keys(sig, 20, 5)
    assert k.shape == (2, 20) and k.dtype == np.uint64
    assert np.array_equal(mh.band_keys(sig, 20, 5), k)
    edited = sig.copy()
    edited[0, 7] ^= 1  # a value of band 1 (columns 5..9)
    k2 = mh.band_keys(edited, 20, 5)
    assert (k2[0] != k[0]).tolist() == [i == 1 for i in range(20)]
    same = np.vstack([sig[0], sig[0]])
    ks = mh.band_keys(same, 20, 5)
    assert np.array_equal(ks[0], ks[1])
    assert len(set(ks[0].tolist())) == 20  # bands of equal values still get distinct keys
    with pytest.raises(ValueError):
        mh.band_keys(sig, 10, 5)  # 50 != 100


def test_config() -> None:
    c = mh.Config()
    assert (c.num_perm, c.bands, c.rows, c.ngram, c.threshold, c.seed) == (250, 50, 5, 5, 0.8, 1)
    assert mh.Config(num_perm=128, bands=16, rows=8).bands == 16
    with pytest.raises(ValidationError, match="bands \\* rows"):
        mh.Config(bands=10)
    with pytest.raises(ValidationError):
        mh.Config(bogus=1)
    with pytest.raises(ValidationError):
        mh.Config(threshold=1.5)
    assert set(c.score_params()) == {"num_perm", "bands", "rows", "ngram", "seed"}


def test_hash_texts_columns() -> None:
    cfg = mh.Config(num_perm=64, bands=16, rows=4)
    t = mh.hash_texts(pa.array(["a b c d e f", None, ""], pa.large_string()), cfg)
    assert t.column_names == [mh.SIG_COLUMN, mh.BANDS_COLUMN]
    assert t.schema.field(mh.SIG_COLUMN).type == pa.list_(pa.uint32(), 64)
    assert t.schema.field(mh.BANDS_COLUMN).type == pa.list_(pa.uint64(), 16)
    assert len(t) == 3
    assert t.column(mh.SIG_COLUMN)[1].as_py() == [int(mh.MAX_HASH)] * 64


# --------------------------------------------------------------------------- clusters


def test_planted_corpus_precision_recall(planted: dict) -> None:
    texts, place, truth = planted["texts"], planted["place"], planted["truth"]
    keys = _keys(planted["shards"])
    result = mh.clusters(keys, threshold=0.8)
    assert len(result) == len(texts)
    by_place = _by_place(result)

    true_pairs = {p for p, j in truth.items() if j >= 0.8}
    cluster_of = {d: (by_place[place[d]]["cluster_shard"], by_place[place[d]]["cluster_row"])
                  for d in range(len(texts))}
    members = defaultdict(list)
    for d, c in cluster_of.items():
        members[c].append(d)
    predicted = {tuple(sorted(p)) for m in members.values() for p in combinations(m, 2)}

    planted_near = N_ORIGINALS * 2 // 3
    assert len(true_pairs) >= planted_near  # the planted near copies (and exact copies)
    hit = len(true_pairs & predicted)
    precision = hit / len(predicted)
    recall = hit / len(true_pairs)
    assert precision >= 0.95, (precision, sorted(predicted - true_pairs)[:10])
    assert recall >= 0.95, (recall, sorted(true_pairs - predicted)[:10])
    # no far copy (true J <= 0.5) ends up with its original
    far = {p for p, j in truth.items() if j <= 0.5}
    assert not (far & predicted)

    # survivors: the smallest (shard, row) of each cluster; every other member dropped
    for c, m in members.items():
        places = sorted(place[d] for d in m)
        assert c == places[0]
        for d in m:
            r = by_place[place[d]]
            assert r["cluster_size"] == len(m)
            assert r["dropped"] == (place[d] != places[0])
    meta = result.schema.metadata
    assert int(meta[b"verified_pairs"]) >= len(true_pairs & predicted) - len(members)

    drops = mh.duplicates(keys)
    expected = sorted(p for p, r in by_place.items() if r["dropped"])
    assert list(zip(drops.column("shard").to_pylist(), drops.column("row").to_pylist(),
                    strict=True)) == expected


def test_clusters_deterministic_and_order_free(planted: dict) -> None:
    keys = _keys(planted["shards"])
    a = mh.clusters(keys)
    b = mh.clusters(_keys(planted["shards"]))
    assert a.equals(b)
    perm = np.random.default_rng(3).permutation(len(keys))
    shuffled = mh.clusters(keys.take(pa.array(perm)))
    assert _by_place(shuffled) == _by_place(a)


def test_clusters_input_forms(planted: dict) -> None:
    keys = _keys(planted["shards"][:2])
    ref = mh.clusters(keys)
    sig = np.asarray(keys.column("sig").combine_chunks().flatten()).reshape(len(keys), -1)
    bands = np.asarray(keys.column("bands").combine_chunks().flatten()).reshape(len(keys), -1)
    plain = {"shard": keys.column("shard").to_numpy(), "row": keys.column("row").to_numpy(),
             "bands": bands}
    asked: list[np.ndarray] = []

    def lazy(pos: np.ndarray) -> np.ndarray:
        asked.append(pos)
        return sig[pos]

    assert mh.clusters(plain, sig).equals(ref)
    assert mh.clusters(plain, lazy).equals(ref)
    assert asked and all(len(p) < len(keys) for p in asked)  # only candidates are loaded
    with pytest.raises(ValueError, match="no signatures"):
        mh.clusters(plain)
    dup = pa.concat_tables([keys.slice(0, 3), keys.slice(0, 1)])
    with pytest.raises(ValueError, match="duplicate"):
        mh.clusters(dup)


def test_clusters_threshold_and_small_cases() -> None:
    base = " ".join(f"w{i}" for i in range(200))
    near = base.replace("w100", "changed")  # true J = 191/201 ~ 0.95
    texts = [base, near, "something else entirely different words here", "", ""]
    keys = _keys([texts])
    r = _by_place(mh.clusters(keys))
    assert r[(0, 1)]["cluster_row"] == 0 and r[(0, 1)]["dropped"]
    assert r[(0, 0)]["cluster_size"] == 2 and not r[(0, 0)]["dropped"]
    assert r[(0, 2)]["cluster_size"] == 1 and not r[(0, 2)]["dropped"]
    # word-less texts are near-duplicates of each other only
    assert r[(0, 4)]["cluster_row"] == 3 and r[(0, 4)]["dropped"]
    strict = _by_place(mh.clusters(keys, threshold=1.0))
    assert strict[(0, 1)]["cluster_size"] == 1
    # empty input
    empty = mh.clusters(keys.slice(0, 0))
    assert len(empty) == 0 and empty.column_names[-1] == "dropped"
    assert len(mh.duplicates(keys.slice(0, 0))) == 0


def test_big_bucket_of_copies_is_one_cluster() -> None:
    text = " ".join(f"tok{i}" for i in range(60))
    shards = [[text] * 40, [text] * 30]
    r = mh.clusters(_keys(shards))
    assert set(r.column("cluster_size").to_pylist()) == {70}
    assert r.column("dropped").to_pylist().count(False) == 1
    assert int(r.schema.metadata[b"candidate_pairs"]) == 69  # each copy compared once
