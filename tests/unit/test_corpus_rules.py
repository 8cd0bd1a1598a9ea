"""Corpus rules (tasks/corpus/): top k % / quantile of a score column, before or after the
document rules, ties and nulls; exact dedup survivors across shards — run the way the filter
stage runs them (keys per shard -> decide -> per-shard decisions), in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tasks import filter as filter_stage
from tasks.corpus import get_rule, top_k
from tasks.filters import gopher
from tasks.schema import DOC_SCHEMA

WORDS = ("the and with that river stone cloud lantern orchard meadow harbor violin copper "
         "saddle garden thunder").split()


def _shard(tmp: Path, i: int, scores: list[float | None], n_words: list[int],
           source: str = "s") -> str:
    n = len(scores)
    rng = np.random.default_rng(i)
    texts = [" ".join(rng.choice(WORDS, w)) + "." for w in n_words]
    t = pa.table({"id": [f"s{i}-{r}" for r in range(n)], "text": pa.array(texts, pa.large_string()),
                  "source": [source] * n, "url": pa.array([None] * n, pa.string()),
                  "fetched_at": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
                  "lang": ["en"] * n, "lang_score": pa.array([None] * n, pa.float32()),
                  "meta": pa.array([None] * n, pa.string())}, schema=DOC_SCHEMA)
    t = t.append_column("quality", pa.array(scores, pa.float64()))
    src, out = tmp / f"in-{i}.parquet", tmp / f"sc-{i}.parquet"
    pq.write_table(t, src)
    filter_stage.score_shard(str(src), str(out), {"gopher_quality": gopher.Config()})
    return str(out)


def _rejected(out: Path, shards: int) -> dict[str, str]:
    got = {}
    for i in range(shards):
        for r in pq.read_table(out / "rejected" / f"part-{i:05d}.parquet").to_pylist():
            got[r["id"]] = r["reject_reason"]
    return got


def test_top_k_keeps_exactly_k_percent_ties_by_position(tmp_path: Path) -> None:
    shards = [_shard(tmp_path, 0, [0.9, 0.5, 0.5, None], [60] * 4),
              _shard(tmp_path, 1, [0.1, 0.5, 0.7, 0.2], [60] * 4)]
    rule = {"top_k": top_k.Config(column="quality", percent=50)}
    stats = filter_stage.filter_local(shards, str(tmp_path / "out"), {}, rule)
    rej = _rejected(tmp_path / "out", 2)
    # 7 ranked (the null is not ranked and never dropped); ceil(3.5) = 4 kept: 0.9, 0.7 and
    # the first two 0.5s by (shard, row): s0-1, s0-2; s1-1's 0.5 loses the tie
    assert rej == {"s1-0": "top_k.below_cut", "s1-1": "top_k.below_cut",
                   "s1-3": "top_k.below_cut"}
    assert sum(s["docs_kept"] for s in stats) == 5
    assert stats[1]["rejections"]["top_k.below_cut"] == {"alone": 3, "first": 3}


def test_top_k_stratified_by_a_column_keeps_k_percent_of_each_group(tmp_path: Path) -> None:
    # source a scores high, source b low: unstratified, the top half would be all of a
    shards = [_shard(tmp_path, 0, [0.9, 0.8, 0.7, 0.6], [60] * 4, source="a"),
              _shard(tmp_path, 1, [0.4, 0.1, 0.3, 0.2], [60] * 4, source="b")]
    cfg = top_k.Config(column="quality", percent=50, by="source")
    stats = filter_stage.filter_local(shards, str(tmp_path / "out"), {}, {"top_k": cfg})
    assert set(_rejected(tmp_path / "out", 2)) == {"s0-2", "s0-3", "s1-1", "s1-3"}
    assert sum(s["docs_kept"] for s in stats) == 4
    flat = filter_stage.filter_local(shards, str(tmp_path / "flat"), {},
                                     {"top_k": top_k.Config(column="quality", percent=50)})
    assert set(_rejected(tmp_path / "flat", 2)) == {"s1-0", "s1-1", "s1-2", "s1-3"}
    assert sum(s["docs_kept"] for s in flat) == 4
    with pytest.raises(ValueError, match="stratify by"):
        filter_stage.filter_local(shards, str(tmp_path / "bad"), {}, {"top_k": top_k.Config(
            column="quality", percent=50, by="no_such_column")})


def test_top_k_quantile_and_lower_is_better(tmp_path: Path) -> None:
    shard = _shard(tmp_path, 0, [1.0, 2.0, 3.0, 4.0, 5.0], [60] * 5)
    cfg = top_k.Config(column="quality", quantile=0.6, higher_is_better=False)
    filter_stage.filter_local([shard], str(tmp_path / "out"), {}, {"top_k": cfg})
    # ascending: "top" = lowest; the 0.6 quantile of the negated scores cuts at 3.0
    assert set(_rejected(tmp_path / "out", 1)) == {"s0-3", "s0-4"}


def test_top_k_before_or_after_the_document_rules(tmp_path: Path) -> None:
    # rows 0 and 1 fail gopher's min_words (5 words); they have the best scores
    shard = _shard(tmp_path, 0, [0.9, 0.8, 0.3, 0.2, 0.1, 0.05], [5, 5, 60, 60, 60, 60])
    filters = {"gopher_quality": gopher.Config()}
    after = filter_stage.filter_local([shard], str(tmp_path / "a"), filters,
                                      {"top_k": top_k.Config(column="quality", percent=50)})
    rej = _rejected(tmp_path / "a", 1)
    # after: ranks the 4 passing docs, keeps 2 (0.3, 0.2)
    assert {k for k, v in rej.items() if v == "top_k.below_cut"} == {"s0-4", "s0-5"}
    assert after[0]["docs_kept"] == 2
    before = filter_stage.filter_local(
        [shard], str(tmp_path / "b"), filters,
        {"top_k": top_k.Config(column="quality", percent=50, when="before")})
    rej = _rejected(tmp_path / "b", 1)
    # before: ranks all 6, keeps 0.9, 0.8, 0.3; its drops are named before the word rule
    assert {k for k, v in rej.items() if v == "top_k.below_cut"} == {"s0-3", "s0-4", "s0-5"}
    assert rej["s0-0"] == rej["s0-1"] == "gopher_quality.min_words"
    assert before[0]["docs_kept"] == 1
    counts = before[0]["rejections"]
    assert counts["gopher_quality.min_words"] == {"alone": 2, "first": 2}
    assert counts["top_k.below_cut"] == {"alone": 3, "first": 3}


def test_top_k_config_errors() -> None:
    with pytest.raises(ValidationError, match="exactly one of percent or quantile"):
        top_k.Config(column="x")
    with pytest.raises(ValidationError):
        top_k.Config(column="x", percent=0)
    with pytest.raises(KeyError, match="unknown corpus rule"):
        get_rule("nope")


def test_top_k_names_a_missing_column(tmp_path: Path) -> None:
    shard = _shard(tmp_path, 0, [0.5], [60])
    with pytest.raises(ValueError, match="no column 'missing'"):
        filter_stage.filter_local([shard], str(tmp_path / "o"), {},
                                  {"top_k": top_k.Config(column="missing", percent=10)})


def test_recipe_names_rules_by_key_or_import_path() -> None:
    from tasks.recipe import RecipeError, parse_recipe

    raw = {"name": "r", "input": {"paths": ["x"]},
           "stages": {"filter": {"corpus": {"top_k": {"column": "q", "percent": 10},
                                            "tasks.corpus.top_k": {"column": "q",
                                                                   "quantile": 0.9}}}}}
    f = parse_recipe(raw).stages.filter
    assert list(f.corpus_rules()) == ["exact_dedup", "top_k", "tasks.corpus.top_k"]
    raw["stages"]["filter"]["corpus"] = {"top_k": {"percent": 10}}
    with pytest.raises(RecipeError, match="corpus.*column"):
        parse_recipe(raw)
    raw["stages"]["filter"]["corpus"] = {"no_such.module": {}}
    with pytest.raises(RecipeError, match="cannot import 'no_such.module'"):
        parse_recipe(raw)
