"""FineWeb-Edu pieces: reply parsing, the ridge head recovering a planted score from
embeddings (held-out fit reported), the head applied shard by shard, the ``edu`` filter's
rounding rule, and the annotation of a sample through a real local OpenAI-compatible server
with the generation cache (a second run sends nothing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llmkit import FakeLLM, doc_shard

from tasks.prompts.ratings import FINEWEB_EDU, parse_edu, render
from tasks.select import edu, edu_filter
from tasks.select import embed as emb
from tasks.select.annotate import LLMConfig
from tasks.store import write_parquet


@pytest.mark.parametrize("reply,want", [
    ("The extract is a lesson.\nEducational score: 4", 4),
    ("Points: 1, 2.\n**Educational score:** 2", 2),
    ('It says "Educational score: 1" then... Educational score: 3', 3),  # the last one
    ("educational score:5", 5),
    ("Educational score: 7", None), ("Educational score: 2.5", None),
    ("I would give it three points.", None), ("", None), (None, None)])
def test_edu_replies_parse(reply: str | None, want: int | None) -> None:
    assert parse_edu(reply) == want


def test_the_prompt_takes_the_text_with_braces_intact() -> None:
    p = render(FINEWEB_EDU, "def f(): return {1: 2}")
    assert "The extract: def f(): return {1: 2}" in p and p.endswith('"Educational score: '
                                                                      '<total points>"')


def _planted(n: int, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.normal(size=dim)  # x @ w ~ N(0, 1): scores 0-5, rarely clipped
    y = np.clip(np.round(2.5 + x @ w), 0, 5)
    return x.astype(np.float32), y


def test_ridge_recovers_a_planted_score() -> None:
    x, y = _planted(600)
    w, b = edu.fit_ridge(x[:500], y[:500], alpha=0.01)
    rep = edu.fit_report(y[500:], edu.predict(x[500:], w, b))
    assert rep["n"] == 100 and rep["rmse"] < 0.5 and rep["f1_at_3"] > 0.9
    const = edu.fit_report(y[500:], np.full(100, y[:500].mean()))
    assert const["rmse"] > 2 * rep["rmse"]  # far better than predicting the mean


def _write_pool(tmp: Path, n: int) -> tuple[Path, Path, np.ndarray]:
    """A docs shard (ids d0..) and its embeddings file holding planted vectors."""
    src = doc_shard(tmp, n)
    x, y = _planted(n, dim=16, seed=1)
    vec = tmp / "emb.parquet"
    write_parquet(pa.table({"id": [f"d{i}" for i in range(n)],
                            "embedding": emb.embedding_array(x)}, schema=emb.schema(16)), vec)
    return src, vec, y


def test_the_head_trains_on_annotations_and_scores_every_document(tmp_path: Path) -> None:
    src, vec, y = _write_pool(tmp_path, 400)
    rows = np.arange(0, 400, 2)  # half the pool annotated, with the planted scores
    ann = tmp_path / "ann.parquet"
    write_parquet(pa.table({"shard": pa.array(np.zeros(len(rows), np.int32)),
                            "row": pa.array(rows, pa.int64()),
                            "id": [f"d{i}" for i in rows],
                            "llm_score": pa.array(y[rows].astype(np.int8))}), ann)
    head = tmp_path / "head.json"
    fit = edu.train_head(str(ann), [str(vec)], 0.01, 0.25, 0, str(head))
    assert 30 < fit["heldout"]["n"] < 70 and fit["heldout"]["rmse"] < 0.6
    assert fit["train"]["n"] + fit["heldout"]["n"] == 200
    stats = edu.apply_shard(str(src), str(vec), str(tmp_path / "kept.parquet"), str(head),
                            "edu_score")
    assert stats["docs_in"] == stats["docs_kept"] == 400 and sum(stats["score_hist"]) == 400
    t = pq.read_table(tmp_path / "kept.parquet")
    s = t.column("edu_score").to_numpy()
    assert t.column("id").to_pylist()[:3] == ["d0", "d1", "d2"]
    assert s.min() >= 0 and s.max() <= 5
    unseen = np.arange(1, 400, 2)  # never annotated: the head generalises to them
    assert np.sqrt(np.mean((s[unseen] - y[unseen]) ** 2)) < 0.6


def test_embeddings_of_other_documents_are_refused(tmp_path: Path) -> None:
    src, vec, _ = _write_pool(tmp_path, 10)
    other = doc_shard(tmp_path / "o", 11)
    with pytest.raises(ValueError, match="rows"):
        edu.apply_shard(str(other), str(vec), str(tmp_path / "k.parquet"),
                        str(tmp_path / "h.json"), "edu_score")


def test_the_edu_filter_rounds_like_fineweb_edu() -> None:
    scores = pa.table({"edu_score": pa.array([0.2, 2.49, 2.5, 2.51, 3.4, None], pa.float32())})
    fails = edu_filter.rules(scores, edu_filter.Config())["edu.below_min_score"]
    # round half to even, as Python's round: 2.5 -> 2 (dropped), 2.51 -> 3 (kept)
    assert fails.to_pylist() == [True, True, True, False, False, None]
    assert edu_filter.rules(scores, edu_filter.Config(min_score=4))[
        "edu.below_min_score"].to_pylist()[4] is True
    with pytest.raises(ValueError, match="fineweb_edu stage"):
        edu_filter.score(pa.table({"text": ["x"]}), edu_filter.Config())


def test_a_sample_is_annotated_through_the_cache(tmp_path: Path) -> None:
    src = doc_shard(tmp_path, 30)
    llm = FakeLLM()
    # the score follows the document: "Document number <i>" -> i % 6; i == 7: no score
    llm.reply = lambda n: ("Nice.\nEducational score: "
                           f"{int(llm.calls[n - 1].split('Document number ')[1].split('.')[0]) % 6}"
                           if "number 7." not in llm.calls[n - 1] else "No idea.")
    cfg = LLMConfig(backend="openai", base_url=llm.url, model="fake", max_concurrency=4,
                    price_per_m_input=1.0, price_per_m_output=2.0).model_dump()
    try:
        rows = edu.sample_rows([str(src)], 12, seed=3)
        assert len(rows[0]) == 12 and list(rows[0]) == sorted(rows[0])
        assert list(edu.sample_rows([str(src)], 12, seed=3)[0]) == list(rows[0])
        out = tmp_path / "ann.parquet"
        stats = edu.annotate_sample([str(src)], rows, cfg, str(out), str(tmp_path / "cache"))
        assert len(llm.calls) == 12 and stats["new_generations"] == stats["requests"] == 12
        assert stats["sampled"] == 12 and stats["cost_run"] == pytest.approx(12 * (10 + 6) / 1e6)
        t = pq.read_table(out)
        for i, s in zip(t.column("row").to_pylist(), t.column("llm_score").to_pylist(),
                        strict=True):
            assert s == (None if i == 7 else i % 6)
        assert stats["unparsed"] == (1 if 7 in rows[0] else 0)
        again = edu.annotate_sample([str(src)], rows, cfg, str(out), str(tmp_path / "cache"))
        assert len(llm.calls) == 12 and again["cache_hits"] == 12  # nothing asked again
        assert again["cost_run"] == 0 and again["cost_total"] == stats["cost_total"]
    finally:
        llm.close()


def test_cross_validation_picks_a_penalty_that_does_not_swamp_a_small_sample() -> None:
    x, y = _planted(120, dim=64, seed=2)  # unit-norm rows: eigenvalues of x'x about n / dim
    alpha = edu.choose_alpha(x[:90], y[:90])
    assert alpha in edu.ALPHAS and alpha < 1.0
    chosen = edu.fit_report(y[90:], edu.predict(x[90:], *edu.fit_ridge(x[:90], y[:90], alpha)))
    heavy = edu.fit_report(y[90:], edu.predict(x[90:], *edu.fit_ridge(x[:90], y[:90], 10.0)))
    assert chosen["rmse"] < heavy["rmse"]
