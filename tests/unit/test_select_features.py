"""Hashed n-gram features (tasks/select/features.py), and the planted corpus the selection
tests share: English documents of the sample, software documentation planted among
encyclopedia summaries and dictionary entries, with other documentation pages as the target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tasks.select import features as fx
from tasks.store import write_parquet

ROOT = Path(__file__).resolve().parents[2]
SOFTWARE = {"postgresql-docs", "python-docs", "django-docs", "apache-httpd-docs",
            "debian-handbook"}


def planted_corpus(tmp: Path, shards: int = 3) -> dict[str, object]:
    """Pool: every 5th English document of the sample (software documentation planted among
    the others), as ``shards`` Parquet shards. Reference: the other English documentation
    pages (none of them in the pool), as JSONL."""
    docs = [json.loads(line) for line in
            (ROOT / "data" / "sample" / "sample.jsonl").read_text().splitlines()]
    pool = [d for i, d in enumerate(docs) if i % 5 == 0 and d["lang"] == "en"]
    ref = [d for i, d in enumerate(docs) if i % 5 and d["lang"] == "en"
           and d["source"] in SOFTWARE]
    tmp.mkdir(parents=True, exist_ok=True)
    ref_path = tmp / "reference.jsonl"
    ref_path.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in ref))
    paths = []
    for s in range(shards):
        part = pool[s::shards]
        t = pa.table({"id": [d["id"] for d in part],
                      "text": pa.array([d["text"] for d in part], pa.large_string()),
                      "source": [d["source"] for d in part], "lang": [d["lang"] for d in part]})
        paths.append(str(tmp / f"part-{s:05d}.parquet"))
        write_parquet(t, Path(paths[-1]))
    planted = {d["id"] for d in pool if d["source"] in SOFTWARE}
    return {"shards": paths, "reference": str(ref_path), "planted": planted,
            "pool": len(pool), "ref_docs": len(ref)}


def test_words_split_punctuation_and_keep_every_script() -> None:
    got = fx.words(pa.array(["Hello, World!!  x_1", "Ça va? नमस्ते दुनिया", None, "", "  "]))
    assert got.to_pylist() == [["hello", ",", "world", "!!", "x_1"],
                               ["ça", "va", "?", "नमस्ते", "दुनिया"], None, [""], [""]]


def test_each_document_has_one_bucket_per_ngram() -> None:
    texts = ["one two three", "a", "", None, "x y, z"]
    f = fx.hashed_ngrams(pa.array(texts), 10_000, 2)
    assert f.type == pa.list_(pa.uint16())
    assert [None if x is None else len(x) for x in f.to_pylist()] == [5, 1, 0, None, 7]
    assert all(0 <= b < 10_000 for x in f.to_pylist() if x for b in x)
    f3 = fx.hashed_ngrams(pa.array(texts), 1 << 20, 3)
    assert f3.type == pa.list_(pa.uint32())
    assert [None if x is None else len(x) for x in f3.to_pylist()] == [6, 1, 0, None, 9]


def test_features_depend_on_the_document_only() -> None:
    """The same text gets the same buckets whatever batch, chunking or position it is in."""
    texts = [json.loads(x)["text"] for x in
             (ROOT / "data" / "sample" / "sample.jsonl").read_text().splitlines()[:60]]
    whole = fx.hashed_ngrams(pa.array(texts)).to_pylist()
    alone = [fx.hashed_ngrams(pa.array([t])).to_pylist()[0] for t in texts[::7]]
    assert alone == whole[::7]
    chunked = fx.hashed_ngrams(pa.chunked_array([texts[:25], texts[25:]])).to_pylist()
    assert chunked == whole


def test_word_order_matters_for_bigrams_only() -> None:
    a, b = fx.hashed_ngrams(pa.array(["red apple", "apple red"]), 1 << 16).to_pylist()
    ua, ub = fx.hashed_ngrams(pa.array(["red apple", "apple red"]), 1 << 16, 1).to_pylist()
    assert sorted(ua) == sorted(ub) and sorted(a) != sorted(b)
    # a bigram is not the same bucket as either of its words
    assert len(set(a)) == 3


def test_counts_and_sums_agree_with_a_loop() -> None:
    f = fx.hashed_ngrams(pa.array(["a b a b", "c", None, "", "b a"]), 64)
    vec = np.random.default_rng(0).normal(size=64)
    rows = f.to_pylist()
    assert np.allclose(fx.doc_sums(f, vec), [sum(vec[i] for i in (r or [])) for r in rows])
    want = np.zeros(64, np.int64)
    for r in rows:
        for i in r or []:
            want[i] += 1
    assert (fx.counts(f, 64) == want).all()
    # a slice of a list array (offsets not starting at 0) reads the same
    assert np.allclose(fx.doc_sums(f.slice(1), vec), fx.doc_sums(f, vec)[1:])


def test_draws_are_uniform_and_fixed_by_seed_and_id() -> None:
    ids = pa.array([f"doc-{i}" for i in range(20_000)])
    u = fx.draws(ids, 0, "s")
    assert ((u >= 0) & (u < 1)).all() and abs(u.mean() - 0.5) < 0.01
    assert (fx.draws(ids.slice(5, 3), 0, "s") == u[5:8]).all()
    assert (fx.draws(ids, 1, "s") != u).mean() > 0.99
    assert (fx.draws(ids, 0, "t") != u).mean() > 0.99


@pytest.mark.parametrize("shards", [1, 3])
def test_planted_corpus_is_what_the_selection_tests_assume(tmp_path: Path, shards: int) -> None:
    c = planted_corpus(tmp_path, shards)
    assert len(c["shards"]) == shards  # type: ignore[arg-type]
    assert 0 < len(c["planted"]) < c["pool"] / 5  # type: ignore[arg-type, operator]
    assert c["ref_docs"] > 2 * len(c["planted"])  # type: ignore[arg-type, operator]
