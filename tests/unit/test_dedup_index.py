"""URL dedup and the persistent, incremental dedup index (Parquet parts + DuckDB registry)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import dedup_index
from tasks import filter as filter_stage
from tasks.catalog import Catalog
from tasks.corpus import exact, url
from tasks.corpus.base import decision_path
from tasks.filters import dedup, gopher, minhash
from tasks.schema import DOC_SCHEMA

WORDS = ("river stone cloud lantern orchard meadow harbor violin copper saddle garden "
         "thunder ribbon candle forest marble pepper window sparrow ladder").split()


def doc_text(seed: int, n: int = 120) -> str:
    rng = np.random.default_rng(seed)
    body = " ".join(rng.choice(WORDS, n))
    return f"The story of the {body}. It was told and the end came with the night."


def docs(texts: list[str], urls: list[str | None] | None = None, prefix: str = "d") -> pa.Table:
    n = len(texts)
    urls = urls or [None] * n
    return pa.table({
        "id": [f"{prefix}{i}" for i in range(n)], "text": pa.array(texts, pa.large_string()),
        "source": ["s"] * n, "url": pa.array(urls, pa.string()),
        "fetched_at": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
        "lang": ["en"] * n, "lang_score": pa.array([None] * n, pa.float32()),
        "meta": pa.array([None] * n, pa.string()),
    }, schema=DOC_SCHEMA)


def test_normalized_urls() -> None:
    got = dedup.normalize_urls(pa.array([
        "https://WWW.Example.com:443/a/b/?utm_source=x&id=3#frag", "http://example.com/a/b?id=3",
        "example.com/a/b/?id=3&utm_medium=y", None, "", "https://x.org/p?a=1&fbclid=z&b=2",
    ])).to_pylist()
    assert got == ["example.com/a/b?id=3"] * 3 + [None, None, "x.org/p?a=1&b=2"]
    assert dedup.normalize_urls(pa.array(["https://x.org/p?a=1"]), drop_query=True).to_pylist() \
        == ["x.org/p"]


def test_url_dedup_keeps_the_first_document_per_url(tmp_path: Path) -> None:
    texts = [doc_text(i) for i in range(5)]
    urls = ["https://a.org/x", "http://www.a.org/x/", "https://a.org/y", None, None]
    pq.write_table(docs(texts, urls), tmp_path / "in.parquet")
    filters = {"gopher_quality": gopher.Config(min_stop_words=0)}
    corpus = {"url_dedup": url.Config()}
    sc = str(tmp_path / "sc.parquet")
    filter_stage.score_shard(str(tmp_path / "in.parquet"), sc, filters, corpus)
    filter_stage.corpus_keys(sc, 0, filters, corpus, [str(tmp_path / "keys")], str(tmp_path))
    cands = pq.read_table(decision_path(tmp_path / "keys", 0))
    assert cands.column("row").to_pylist() == [0, 1, 2]  # no URL: not a candidate
    res = filter_stage.filter_local([sc], str(tmp_path / "out"), filters, corpus)[0]
    assert (res["docs_kept"], res["docs_rejected"]) == (4, 1)
    rej = pq.read_table(tmp_path / "out" / "rejected" / "part-00000.parquet")
    assert rej.column("reject_reason").to_pylist() == ["url_dedup.duplicate"]
    assert rej.column("id").to_pylist() == ["d1"]


def test_snapshot_sees_earlier_parts_only(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.duckdb")
    assert dedup_index.snapshot(cat, "web", "up1") == []
    assert dedup_index.register(cat, "web", "f1", "up1", ["a.parquet"], 10, "run1")
    assert not dedup_index.register(cat, "web", "f1", "up1", ["a.parquet"], 10, "run1")  # no-op
    assert dedup_index.register(cat, "web", "f2", "up2", ["b.parquet"], 5, "run2")
    dedup_index.register(cat, "other", "g1", "up9", ["z.parquet"], 1, "run3")
    # a re-run over up1 sees what it saw the first time (nothing); up2 sees up1's part
    assert dedup_index.snapshot(cat, "web", "up1") == []
    assert [p["stage_version"] for p in dedup_index.snapshot(cat, "web", "up2")] == ["f1"]
    assert [p["stage_version"] for p in dedup_index.snapshot(cat, "web", "up3")] == ["f1", "f2"]


CORPUS = {"exact_dedup": exact.Config(), "url_dedup": url.Config(),
          "minhash_dedup": minhash.Config()}


def _score(tmp: Path, name: str, table: pa.Table) -> str:
    src, out = tmp / f"{name}-in.parquet", tmp / f"{name}-sc.parquet"
    pq.write_table(table, src)
    filter_stage.score_shard(str(src), str(out), {}, CORPUS)
    return str(out)


def test_index_finds_exact_url_and_near_copies_of_earlier_runs(tmp_path: Path) -> None:
    old_texts = [doc_text(i) for i in range(20)]
    old_urls = [f"https://old.org/{i}" for i in range(20)]
    day1 = _score(tmp_path, "day1", docs(old_texts, old_urls, "a"))
    res = filter_stage.decide_shard(day1, str(tmp_path / "k1.parquet"),
                                    str(tmp_path / "r1.parquet"), {}, CORPUS,
                                    [str(tmp_path / "none")] * 3, 0,
                                    str(tmp_path / "index1.parquet"))
    assert res["docs_kept"] == 20
    index = pq.read_table(tmp_path / "index1.parquet")
    assert set(index.column_names) == {dedup.HASH_COLUMN, dedup.URL_HASH_COLUMN,
                                       minhash.BANDS_COLUMN, minhash.SIG_COLUMN}  # no text
    parts = [{"files": [str(tmp_path / "index1.parquet")]}]

    variant = old_texts[3].split()
    variant[10] = "zeppelin"  # one word of ~130 changed: Jaccard well above 0.8
    new_texts = [old_texts[0].upper(), " ".join(variant), doc_text(100), doc_text(101)]
    new_urls = [None, None, "http://www.old.org/7/", "https://new.org/1"]
    day2 = _score(tmp_path, "day2", docs(new_texts, new_urls, "b"))
    for name, rule, rows in (
        ("exact_dedup", "exact_dedup.seen_before", [0]),  # case-folded exact copy
        ("url_dedup", "url_dedup.seen_before", [2]),  # same page, URL spelled differently
        ("minhash_dedup", "minhash_dedup.seen_before", [0, 1]),  # the copy and the variant
    ):
        out = tmp_path / name
        filter_stage.filter_local([day2], str(out), {}, {name: CORPUS[name]}, parts)
        rej = pq.read_table(out / "rejected" / "part-00000.parquet")
        assert rej.column("reject_reason").to_pylist() == [rule] * len(rows), name
        assert sorted(int(i[1:]) for i in rej.column("id").to_pylist()) == rows, name
    # without the index nothing was seen before
    filter_stage.filter_local([day2], str(tmp_path / "alone"), {}, CORPUS)
    assert pq.read_table(tmp_path / "alone" / "rejected" / "part-00000.parquet").num_rows == 0
