"""Corpus rule ``quality_buckets`` (Nemotron-CC's ensemble of classifiers as integer quality
buckets): the buckets equal a hand computation of the weighted percentile thresholds and the
max over columns; it drops nothing and annotates every document it ranked; the documented
recipe validates."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from tasks import filter as filter_stage
from tasks.corpus.base import RuleContext
from tasks.schema import DOC_SCHEMA
from tasks.select import buckets

ROOT = Path(__file__).resolve().parents[2]


def _shard(tmp: Path, i: int, cols: dict[str, list[float | None]], texts: list[str]) -> str:
    n = len(texts)
    t = pa.table({"id": [f"s{i}-{r}" for r in range(n)], "text": pa.array(texts, pa.large_string()),
                  "source": ["s"] * n, "url": pa.array([None] * n, pa.string()),
                  "fetched_at": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
                  "lang": ["en"] * n, "lang_score": pa.array([None] * n, pa.float32()),
                  "meta": pa.array([None] * n, pa.string())}, schema=DOC_SCHEMA)
    for name, v in cols.items():
        t = t.append_column(name, pa.array(v, pa.float64()))
    src, out = tmp / f"in-{i}.parquet", tmp / f"sc-{i}.parquet"
    pq.write_table(t, src)
    filter_stage.score_shard(str(src), str(out), {})
    return str(out)


def _buckets(out: Path, shards: int, part: str = "kept") -> dict[str, int | None]:
    got: dict[str, int | None] = {}
    for i in range(shards):
        p = out / part / f"part-{i:05d}.parquet"
        if p.is_file():
            for r in pq.read_table(p, columns=["id", "quality_bucket"]).to_pylist():
                got[r["id"]] = r["quality_bucket"]
    return got


def test_two_columns_max_of_hand_computed_percentile_scores(tmp_path: Path) -> None:
    # a = .1 .. .8, b = 8 .. 1 over two shards; one document neither classifier scored.
    # weight docs, 4 buckets: thresholds at 1/4, 2/4, 3/4 of the 8 documents by the
    # inverted CDF = the 2nd, 4th, 6th smallest: a -> .2, .4, .6; b -> 2, 4, 6.
    # a's integer scores (thresholds <= score): .1:0 .2:1 .3:1 .4:2 .5:2 .6:3 .7:3 .8:3
    # b's, doc by doc (8..1):                    3    3    3    2    2    1    1    0
    # max:                                       3    3    3    2    2    3    3    3
    a = [.1, .2, .3, .4, .5, .6, .7, .8, None]
    b = [8, 7, 6, 5, 4, 3, 2, 1, None]
    text = ["word " * 20] * 9
    shards = [_shard(tmp_path, 0, {"a": a[:5], "b": b[:5]}, text[:5]),
              _shard(tmp_path, 1, {"a": a[5:], "b": b[5:]}, text[5:])]
    cfg = buckets.Config(columns=["a", "b"], buckets=4, weight="docs")
    stats = filter_stage.filter_local(shards, str(tmp_path / "out"), {},
                                      {"quality_buckets": cfg})
    assert _buckets(tmp_path / "out", 2) == {
        "s0-0": 3, "s0-1": 3, "s0-2": 3, "s0-3": 2, "s0-4": 2,
        "s1-0": 3, "s1-1": 3, "s1-2": 3, "s1-3": None}
    # it decides nothing: every document kept, accounted
    assert sum(s["docs_in"] for s in stats) == 9
    assert sum(s["docs_kept"] for s in stats) == 9
    assert sum(s["docs_rejected"] for s in stats) == 0



def test_byte_weighting_moves_the_thresholds(tmp_path: Path) -> None:
    # scores 1..4 with texts of 1, 1, 1 and 5 bytes; 2 buckets: the median by bytes
    # (cumulative 1, 2, 3, 8 of 8: half reached at the 4th) is 4, by documents it is 2
    shard = _shard(tmp_path, 0, {"a": [1, 2, 3, 4]}, ["x", "y", "z", "abcde"])
    for weight, want in (("bytes", [0, 0, 0, 1]), ("docs", [0, 1, 1, 1])):
        cfg = buckets.Config(columns=["a"], buckets=2, weight=weight)
        stats = filter_stage.filter_local([shard], str(tmp_path / weight), {},
                                          {"quality_buckets": cfg})
        got = _buckets(tmp_path / weight, 1)
        assert [got[f"s0-{r}"] for r in range(4)] == want, weight
        assert stats[0]["docs_kept"] == 4


def test_twenty_buckets_of_a_uniform_column_and_the_statistics(tmp_path: Path) -> None:
    # 100 documents scored 0..99 alike: thresholds at the 5th..95th percentiles are
    # 4, 9, ..., 94, so a score s has min((s + 1) // 5, 19); bucket 0 holds 4 documents,
    # 1..18 five each, 19 six
    keys = pa.table({"shard": pa.array(np.zeros(100, np.int32)),
                     "row": pa.array(np.arange(100, dtype=np.int64)),
                     "weight": pa.array(np.ones(100, np.int64)),
                     "score_0": pa.array(np.arange(100, dtype=np.float64))})
    pq.write_table(keys, tmp_path / "k.parquet")
    cfg = buckets.Config(columns=["c"], weight="docs")
    st = buckets.decide([str(tmp_path / "k.parquet")], tmp_path / "d", cfg,
                        RuleContext(n_shards=1, work_dir=tmp_path / "w"))
    assert st["columns"]["c"]["thresholds"] == [float(5 * k - 1) for k in range(1, 20)]
    assert [st["buckets"][str(b)] for b in range(20)] == [4] + [5] * 18 + [6]
    assert st["ranked"] == 100 and st["null"] == 0
    dec = pq.read_table(tmp_path / "d" / "part-00000.parquet")
    assert dec.column("quality_bucket").to_pylist() == [min((s + 1) // 5, 19)
                                                        for s in range(100)]
    assert dec.column("rule").null_count == 100  # annotations only: nothing dropped


def test_ties_share_a_bucket_and_the_stats_say_which_column_set_the_max(
        tmp_path: Path) -> None:
    # an integer classifier (0..3) with many ties, beside a continuous one
    edu = [0, 0, 0, 0, 1, 1, 2, 3]
    ft = [.9, .1, .2, .3, .4, .5, .6, .7]
    shard = _shard(tmp_path, 0, {"edu": edu, "ft": ft}, ["w " * 10] * 8)
    cfg = buckets.Config(columns=["edu", "ft"], buckets=4, weight="docs")
    filter_stage.filter_local([shard], str(tmp_path / "out"), {}, {"quality_buckets": cfg})
    got = _buckets(tmp_path / "out", 1)
    # edu thresholds (2nd, 4th, 6th smallest of 0 0 0 0 1 1 2 3): 0, 0, 1 -> 0:2 1:3 2:3 3:3
    # ft thresholds (.2, .4, .6)       -> .9:3 .1:0 .2:1 .3:1 .4:2 .5:2 .6:3 .7:3
    assert [got[f"s0-{r}"] for r in range(8)] == [3, 2, 2, 2, 3, 3, 3, 3]
    st = buckets.decide([str(tmp_path / "out" / "corpus" / "0" / "keys" / "part-00000.parquet")],
                        tmp_path / "again", cfg, RuleContext(1, tmp_path / "w"))
    assert st["columns"]["edu"]["thresholds"] == [0.0, 0.0, 1.0]
    # a column is credited where it raised the max above the columns before it: ft only on
    # row 0 (3 > edu's 2); ties stay with the earlier column
    assert (st["columns"]["edu"]["set_max"], st["columns"]["ft"]["set_max"]) == (7, 1)


def test_before_buckets_the_rejected_documents_too(tmp_path: Path) -> None:
    from tasks.filters import gopher

    texts = ["the river and the stone with that cloud " * 8, "tiny"]
    src = tmp_path / "in.parquet"
    n = 2
    t = pa.table({"id": ["long", "short"], "text": pa.array(texts, pa.large_string()),
                  "source": ["s"] * n, "url": pa.array([None] * n, pa.string()),
                  "fetched_at": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
                  "lang": ["en"] * n, "lang_score": pa.array([None] * n, pa.float32()),
                  "meta": pa.array([None] * n, pa.string())}, schema=DOC_SCHEMA)
    pq.write_table(t.append_column("q", pa.array([0.2, 0.9])), src)
    filters = {"gopher_quality": gopher.Config()}
    filter_stage.score_shard(str(src), str(tmp_path / "sc.parquet"), filters)
    # 4 buckets. after: "long" alone is ranked, every threshold is its 0.2 -> 3; before:
    # thresholds over (0.2, 0.9) are 0.2, 0.2, 0.9 -> long 2, short 3
    for when, long, short in (("after", 3, None), ("before", 2, 3)):
        cfg = buckets.Config(columns=["q"], buckets=4, weight="docs", when=when)
        out = tmp_path / when
        filter_stage.filter_local([str(tmp_path / "sc.parquet")], str(out), filters,
                                  {"quality_buckets": cfg})
        assert _buckets(out, 1, "rejected") == {"short": short}  # gopher rejects "tiny"
        assert _buckets(out, 1, "kept") == {"long": long}


def test_bad_configs_and_a_missing_column_are_named() -> None:
    with pytest.raises(ValidationError, match="twice"):
        buckets.Config(columns=["a", "a"])
    with pytest.raises(ValidationError):
        buckets.Config(columns=[])
    scored = pa.table({"x": [1.0], "text": ["t"], "lang": ["en"]})
    with pytest.raises(ValueError, match="no column"):
        buckets.keys(scored, 0, np.arange(1), buckets.Config(columns=["a"]),
                     RuleContext(1, Path(".")))


def test_the_documented_recipe_validates() -> None:
    from tasks.recipe import parse_recipe

    doc = (ROOT / "docs" / "selection.md").read_text()
    section = doc.split("## Nemotron-CC quality buckets", 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert snippet, "docs/selection.md: no recipe snippet in the quality buckets section"
    raw = yaml.safe_load(snippet.group(1))
    raw.setdefault("name", "buckets-doc")
    raw.setdefault("input", {"paths": [str(ROOT / "data" / "sample" / "sample.jsonl")],
                             "format": "jsonl"})
    r = parse_recipe(raw)
    cfg = r.stages.filter.corpus["quality_buckets"]
    assert isinstance(cfg, buckets.Config) and cfg.buckets == 20
    assert r.stages.rewrite.prompt == "nemotron_cc_routed"
    # every key of the rule's config is in the section's table, with its default
    for name, field in buckets.Config.model_fields.items():
        m = re.search(rf"^\| `{name}` \| ([^|]+) \|", section, re.M)
        assert m, name
        default = field.get_default(call_default_factory=True)
        assert m.group(1).strip() == ("—" if field.is_required() else f"`{default}`"), name


def test_the_report_draws_a_histogram_per_selector_column(tmp_path: Path) -> None:
    """quality_bucket (an annotation no rule thresholds), a classifier's *_score and a column
    a corpus rule names get their panel in the report's score histograms, every document
    counted."""
    from tasks import plots

    edu = [float(x % 6) for x in range(12)]
    ft = [x / 12 for x in range(12)]
    shard = _shard(tmp_path, 0, {"edu": edu, "dclm_fasttext_score": ft},
                   ["w " * 10] * 12)
    folder = tmp_path / "root" / "stages" / "filter" / "v1"
    cfg = {"columns": ["edu", "dclm_fasttext_score"]}
    filter_stage.filter_local([shard], str(folder), {},
                              {"quality_buckets": buckets.Config(**cfg)})
    manifest = {"docs_in": 12, "rejections": {},
                "config": {"filter": {"filters": {}, "corpus": {"quality_buckets": cfg}}},
                "outputs": {"kept": ["stages/filter/v1/kept/part-00000.parquet"],
                            "rejected": ["stages/filter/v1/rejected/part-00000.parquet"]}}
    data = plots.histogram_data(folder, manifest)
    assert {"quality_bucket", "edu", "dclm_fasttext_score"} <= set(data)
    for col in ("quality_bucket", "edu", "dclm_fasttext_score"):
        h = data[col]
        assert int(h["counts"]["kept"].sum()) + h["nulls"] == 12, col
        assert h["rules"] == [] and h["thresholds"] == []
    png = plots.score_histograms(folder, manifest)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
