"""DSIR as a corpus rule (tasks/select/dsir.py): features stored by the score step, importance
resampling decided by the filter step, on a corpus where the answer is known."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from test_select_features import SOFTWARE, planted_corpus

from tasks import filter as filter_lib
from tasks.corpus.base import RuleContext
from tasks.select import dsir
from tasks.select import features as fx


def _run(tmp: Path, corpus: dict[str, Any], cfg: dsir.Config, name: str = "out"
         ) -> dict[str, Any]:
    """Score (once per corpus) and decide in this process, as the two stages do."""
    scored = []
    for i, p in enumerate(corpus["shards"]):
        s = tmp / "scored" / f"part-{i:05d}.parquet"
        if not s.is_file():
            filter_lib.score_shard(p, str(s), {}, {"dsir": cfg})
        scored.append(str(s))
    out = tmp / name
    stats = filter_lib.filter_local(scored, str(out), {}, {"dsir": cfg})
    read = [(pq.read_table(out / kind / f"part-{i:05d}.parquet"), kind)
            for i in range(len(scored)) for kind in ("kept", "rejected")]
    kept = pa.concat_tables([t for t, k in read if k == "kept"])
    rejected = pa.concat_tables([t for t, k in read if k == "rejected"])
    decided = json.loads(json.dumps(dsir.decide(
        [str(out / "corpus" / "0" / "keys" / f"part-{i:05d}.parquet")
         for i in range(len(scored))], tmp / f"{name}-again", cfg,
        RuleContext(n_shards=len(scored), work_dir=tmp / "w"))))
    return {"kept": kept, "rejected": rejected, "stats": stats, "decided": decided}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return planted_corpus(tmp_path_factory.mktemp("dsir-corpus"))


def test_resampling_finds_the_planted_documents(corpus: dict[str, Any], tmp_path: Path) -> None:
    planted = corpus["planted"]
    cfg = dsir.Config(target={"paths": [corpus["reference"]]}, k=len(planted))
    got = _run(tmp_path, corpus, cfg)
    kept_ids = set(got["kept"].column("id").to_pylist())
    assert len(kept_ids) == len(planted)  # exactly k, resampled without replacement
    hits = len(kept_ids & planted)
    # precision = recall here (k = planted); random would give planted / pool (about 0.1)
    assert hits / len(planted) >= 0.6, (hits, len(planted))
    # every dropped document says why, and the accounting holds
    reasons = set(got["rejected"].column("reject_reason").to_pylist())
    assert reasons == {dsir.RULE}
    assert len(kept_ids) + len(got["rejected"]) == corpus["pool"]
    assert sum(s["rejections"][dsir.RULE]["first"] for s in got["stats"]) == \
        corpus["pool"] - len(planted)
    # the score (weight - lowest weight) is on every ranked document, >= 0; the features are
    # not copied to the outputs
    for t in (got["kept"], got["rejected"]):
        assert dsir.SCORE in t.column_names and dsir.FEATURES not in t.column_names
        assert t.column(dsir.SCORE).null_count == 0
        assert min(t.column(dsir.SCORE).to_pylist()) >= 0
    # the kept documents' scores are the highest ones, up to the Gumbel noise
    assert np.median(got["kept"].column(dsir.SCORE).to_numpy()) > \
        np.percentile(got["rejected"].column(dsir.SCORE).to_numpy(), 90)


def test_the_selection_is_closer_to_the_target_by_kl(corpus: dict[str, Any],
                                                     tmp_path: Path) -> None:
    """KL(target || selection) is below that of a uniform sample of the same size. (On a
    pool this small, any 20 % misses n-gram buckets the whole pool has, so both are above
    KL(target || pool): the paper's reduction is measured on millions of documents.)"""
    cfg = dsir.Config(target={"paths": [corpus["reference"]]}, percent=20)
    d = _run(tmp_path, corpus, cfg)["decided"]
    assert d["ranked"] == corpus["pool"] and d["kept"] == math.ceil(corpus["pool"] * 0.2)
    assert d["kl_target_selected"] < 0.75 * d["kl_target_uniform"]
    assert d["kl_reduction"] == pytest.approx(d["kl_target_raw"] - d["kl_target_selected"],
                                              abs=1e-5)
    assert d["target_docs"] == corpus["ref_docs"]


def test_weights_are_the_log_likelihood_ratio(corpus: dict[str, Any], tmp_path: Path) -> None:
    """The fanned-out decide computes, per document, what the formula says, computed here
    document by document from the texts."""
    cfg = dsir.Config(target={"paths": [corpus["reference"]]}, k=5, chunk_words=None)
    got = _run(tmp_path, corpus, cfg)
    target, _ = dsir.target_counts(cfg.target, cfg.num_buckets, cfg.ngrams)
    pool = pa.concat_tables([pq.read_table(p) for p in corpus["shards"]])
    raw = fx.counts(fx.hashed_ngrams(pool.column("text")), cfg.num_buckets)
    log_diff = np.log(target / target.sum() + 1e-8) - np.log(raw / raw.sum() + 1e-8)
    want = {}  # every document's weight, one document at a time
    rows = fx.hashed_ngrams(pool.column("text")).to_pylist()  # per document (test_features)
    for doc_id, row in zip(pool.column("id").to_pylist(), rows, strict=True):
        want[doc_id] = float(np.inner(np.bincount(row, minlength=10_000), log_diff))
    both = pa.concat_tables([got["kept"].select(["id", dsir.SCORE]),
                             got["rejected"].select(["id", dsir.SCORE])])
    have = dict(zip(both.column("id").to_pylist(), both.column(dsir.SCORE).to_pylist(),
                    strict=True))
    assert have.keys() == want.keys()
    low = got["decided"]["min_log_weight"]  # the stored score is the weight minus the lowest
    assert low == pytest.approx(min(want.values()))
    assert np.allclose([have[k] + low for k in want], list(want.values()), rtol=1e-9,
                       atol=1e-6)
    # chunk_words (the default) scales each document's mean log ratio per n-gram
    lengths = {k: len(v) for k, v in zip(pool.column("id").to_pylist(), fx.hashed_ngrams(
        pool.column("text")).to_pylist(), strict=True)}
    normed = _run(tmp_path, corpus, dsir.Config(target=cfg.target, k=5), "normed")
    n2 = pa.concat_tables([normed["kept"].select(["id", dsir.SCORE]),
                           normed["rejected"].select(["id", dsir.SCORE])])
    per_chunk = dsir.chunk_ngrams(128, 2)
    low = normed["decided"]["min_log_weight"]
    for doc_id, w in zip(n2.column("id").to_pylist(), n2.column(dsir.SCORE).to_pylist(),
                         strict=True):
        assert w + low == pytest.approx(want[doc_id] / max(lengths[doc_id], 1) * per_chunk,
                                        rel=1e-9, abs=1e-6)


def test_a_source_of_the_pool_as_target(corpus: dict[str, Any], tmp_path: Path) -> None:
    pool = pa.concat_tables([pq.read_table(p, columns=["source"]) for p in corpus["shards"]])
    n_python = pool.column("source").to_pylist().count("python-docs")
    cfg = dsir.Config(target={"source": "python-docs"}, k=n_python)
    got = _run(tmp_path, corpus, cfg)
    kept = got["kept"].column("source").to_pylist()
    assert got["decided"]["target_docs"] == n_python
    assert kept.count("python-docs") >= n_python - 1
    assert all(s in SOFTWARE for s in kept)


def test_seed_and_size_are_decisions_the_features_are_scores() -> None:
    base = dsir.Config(target={"source": "x"})
    assert base.percent == 10  # neither k nor percent: 10 %
    same = [dsir.Config(target={"source": "y"}, k=3, seed=7, chunk_words=None, when="before")]
    assert all(c.score_params() == base.score_params() for c in same)
    assert dsir.Config(target={"source": "x"}, num_buckets=20_000).score_params() != \
        base.score_params()
    assert dsir.Config(target={"source": "x"}, ngrams=1).score_params() != base.score_params()
    with pytest.raises(ValidationError, match="not both"):
        dsir.Config(target={"source": "x"}, k=3, percent=5)
    with pytest.raises(ValidationError, match="exactly one of paths or source"):
        dsir.Config(target={})
    with pytest.raises(ValidationError, match="no such file"):
        dsir.Config(target={"paths": ["/nonexistent/ref.jsonl"]})


def test_the_seed_changes_only_the_draw(corpus: dict[str, Any], tmp_path: Path) -> None:
    """Same seed, same selection; another seed resamples (with weights this far apart, most
    of the selection stays)."""
    cfg = dict(target={"paths": [corpus["reference"]]}, percent=30, chunk_words=4)
    a = _run(tmp_path, corpus, dsir.Config(**cfg), "a")
    a2 = _run(tmp_path, corpus, dsir.Config(**cfg), "a2")
    b = _run(tmp_path, corpus, dsir.Config(**cfg, seed=1), "b")
    ids = [set(x["kept"].column("id").to_pylist()) for x in (a, a2, b)]
    assert ids[0] == ids[1] and ids[0] != ids[2]
    assert len(ids[0] & ids[2]) > len(ids[0]) / 2


def test_an_empty_target_is_an_error(corpus: dict[str, Any], tmp_path: Path) -> None:
    ref = tmp_path / "empty.jsonl"
    ref.write_text('{"text": ""}\nnot json\n{"other": 1}\n')
    with pytest.raises(ValueError, match="target set has no words"):
        _run(tmp_path, corpus, dsir.Config(target={"paths": [str(ref)]}))


def test_a_shard_left_empty_still_gets_its_score_histograms(corpus: dict[str, Any],
                                                            tmp_path: Path) -> None:
    """A small k leaves whole shards without a kept document; the filter stage's score
    histograms read those empty files too."""
    from tasks.histograms import score_histograms

    got = _run(tmp_path, corpus, dsir.Config(target={"paths": [corpus["reference"]]}, k=1))
    assert len(got["kept"]) == 1
    files = sorted((tmp_path / "out").glob("*/part-*.parquet"))
    assert any(pq.read_metadata(f).num_rows == 0 for f in files)
    md = score_histograms(files)
    assert f"`{dsir.SCORE}`" in md and f"n = {corpus['pool']}, null = 0" in md
