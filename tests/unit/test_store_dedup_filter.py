"""Content addressing, exact dedup across shards, and the score/decide split."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import filter as filter_stage
from tasks.corpus import exact
from tasks.corpus.base import RuleContext, decision_path
from tasks.filters import dedup, gopher
from tasks.schema import DOC_SCHEMA
from tasks.store import StageDir, merge_counts, run_marked, version_of

EN = ("The quick brown fox jumps over the lazy dog and then it runs to the river with the other "
      "animals of the forest, where they have a long and pleasant talk about the weather. ") * 4


def test_version_is_a_function_of_config_and_inputs() -> None:
    a = version_of("filter", {"x": 1, "y": [1, 2]}, ["in1"])
    assert a == version_of("filter", {"y": [1, 2], "x": 1}, ["in1"])  # key order irrelevant
    assert a != version_of("filter", {"x": 2, "y": [1, 2]}, ["in1"])
    assert a != version_of("filter", {"x": 1, "y": [1, 2]}, ["in2"])
    assert a != version_of("score", {"x": 1, "y": [1, 2]}, ["in1"])


def test_stage_dir_manifest_and_shard_markers(tmp_path: Path) -> None:
    sd = StageDir(tmp_path, "ingest", "abc")
    assert not sd.done()
    stats = run_marked(str(sd.shard_marker("00001")), lambda n: {"docs_in": n}, 3)
    assert stats["docs_in"] == 3 and sd.shard_done("00001") == stats
    # the marker keeps where the shard's time went
    assert set(stats["profile"]) == {"wall_s", "cpu_s", "read_bytes", "write_bytes"}
    assert sd.shard_done("00002") is None
    sd.finish({"docs_in": 3, "docs_kept": 3, "docs_rejected": 0})
    assert sd.done() and sd.manifest()["version"] == "abc"


def test_merge_counts() -> None:
    m = merge_counts([
        {"docs_in": 3, "docs_kept": 2, "docs_rejected": 1, "rejections": {"r": {"first": 1,
                                                                                 "alone": 2}}},
        {"docs_in": 2, "docs_kept": 2, "docs_rejected": 0, "rejections": {}},
    ])
    assert m == {"docs_in": 5, "docs_kept": 4, "docs_rejected": 1,
                 "rejections": {"r": {"first": 1, "alone": 2}}}


def test_normalised_hash_and_first_survivor_across_shards() -> None:
    h = dedup.hash_texts(pa.array(["Hello  World", "hello world\n", "other"]))
    assert h[0] == h[1] and h[0] != h[2]
    keys = pa.table({"hash": pa.concat_arrays([h, h.slice(0, 1)]),
                     "shard": pa.array([1, 1, 1, 0], pa.int32()),
                     "row": pa.array([0, 1, 2, 5], pa.int64())})
    drop = dedup.duplicates(keys).to_pylist()
    # shard 0 row 5 comes first in (shard, row) order, so both shard-1 copies go
    assert sorted((d["shard"], d["row"]) for d in drop) == [(1, 0), (1, 1)]


def _docs(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.table({
        "id": [f"d{i}" for i in range(n)], "text": pa.array(texts, pa.large_string()),
        "source": ["s"] * n, "url": pa.array([None] * n, pa.string()),
        "fetched_at": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
        "lang": ["en"] * n, "lang_score": pa.array([None] * n, pa.float32()),
        "meta": pa.array([None] * n, pa.string()),
    }, schema=DOC_SCHEMA)


def test_score_then_decide_with_dedup(tmp_path: Path) -> None:
    filters = {"gopher_quality": gopher.Config()}
    corpus = {"exact_dedup": exact.Config()}
    texts = [EN, "too short", EN.replace("fox", "cat"), EN]
    pq.write_table(_docs(texts), tmp_path / "in.parquet")
    sc = str(tmp_path / "sc.parquet")
    stats = filter_stage.score_shard(str(tmp_path / "in.parquet"), sc, filters, corpus)
    assert stats["docs_in"] == stats["docs_kept"] == 4
    keys_dir, dec_dir = tmp_path / "keys", tmp_path / "dec"
    filter_stage.corpus_keys(sc, 0, filters, corpus, [str(keys_dir)], str(tmp_path / "w"))
    cands = pq.read_table(decision_path(keys_dir, 0))
    assert cands.column("row").to_pylist() == [0, 2, 3]  # "too short" fails min_words
    ctx = RuleContext(n_shards=1, work_dir=tmp_path / "w")
    exact.decide([str(decision_path(keys_dir, 0))], dec_dir, corpus["exact_dedup"], ctx)
    assert pq.read_table(decision_path(dec_dir, 0)).column("row").to_pylist() == [3]
    res = filter_stage.decide_shard(sc, str(tmp_path / "k.parquet"), str(tmp_path / "r.parquet"),
                                    filters, corpus, [str(dec_dir)], 0)
    assert (res["docs_kept"], res["docs_rejected"]) == (2, 2)
    rej = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert {r["id"]: r["reject_reason"] for r in rej} == {
        "d1": "gopher_quality.min_words", "d3": "exact_dedup.duplicate"}
    assert res["rejections"]["gopher_quality.min_words"] == {"alone": 1, "first": 1}
    # a new threshold is a new decision over the same stored scores
    loose = {"gopher_quality": gopher.Config(min_words=1, min_stop_words=0)}
    res2 = filter_stage.decide_shard(sc, str(tmp_path / "k2.parquet"),
                                     str(tmp_path / "r2.parquet"), loose)
    assert res2["docs_kept"] == 4
