"""`datamill inspect` (tasks/inspect.py): per filter rule, dropped documents and the kept ones
nearest its threshold, read back from a real (small) score -> filter pass over sample text."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import inspect as ins
from tasks.corpus import get_rule
from tasks.corpus.base import RuleContext, decision_path
from tasks.corpus.exact import Config as ExactConfig
from tasks.corpus.top_k import Config as TopKConfig
from tasks.filter import corpus_keys, decide_shard, score_shard
from tasks.filters.base import REGISTRY, get_filter
from tasks.filters.gopher import Config as GopherConfig
from tasks.filters.minhash import Config as MinHashConfig
from tasks.schema import DOC_SCHEMA
from tasks.store import merge_counts

ROOT = Path(__file__).resolve().parents[2]
EVIL_TEXT = ("short <script>alert('x')</script> **bold** | [x](y) [bold]rich[/bold] "
             "<img src=x onerror=alert(1)> \x1b[31mred")
EVIL_SOURCE = "<script>s</script>**src**|[x](y)"


def _docs() -> list[dict[str, Any]]:
    lines = (ROOT / "data" / "sample" / "sample.jsonl").read_text(encoding="utf-8")
    docs = [json.loads(x) for x in lines.splitlines()[:400:4]]
    twin = next(d for d in docs if len(d["text"].split()) > 120)
    docs.append({**twin, "id": twin["id"] + "-copy"})  # an exact duplicate, later shard
    near = next(d for d in docs[::-1] if len(d["text"].split()) > 150 and d is not twin)
    words = near["text"].split()
    docs.append({**near, "id": near["id"] + "-near",  # a near duplicate: one word changed
                 "text": " ".join(words[:-1] + ["changed"])})
    docs.append({"id": "evil", "source": EVIL_SOURCE, "lang": "en", "text": EVIL_TEXT})
    return [{c: d.get(c) for c in DOC_SCHEMA.names} for d in docs]


def build_run(root: Path, filters: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run with an ingest and a filter stage folder as the stages write them: two shards,
    gopher_quality (or ``filters``), exact dedup and a top_k corpus rule, decided by
    tasks/filter.py."""
    docs = _docs()
    half = len(docs) // 2
    ingest = root / "stages" / "ingest" / "i1"
    shards = []
    for k, part in enumerate((docs[:half], docs[half:])):
        p = ingest / "kept" / f"part-{k:05d}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part, schema=DOC_SCHEMA), p)
        shards.append(p)
    (ingest / "manifest.json").write_text(json.dumps({
        "docs_in": len(docs), "docs_kept": len(docs), "docs_rejected": 0,
        "outputs": {"kept": [str(p.relative_to(root)) for p in shards]}}))
    filters = filters or {"gopher_quality": GopherConfig()}
    corpus = {"exact_dedup": ExactConfig(), "minhash_dedup": MinHashConfig(),
              "top_k": TopKConfig(column="gopher_quality_alpha_words_frac", percent=90)}
    out = root / "stages" / "filter" / "f1"
    scored = [str(out / "scored" / f"part-{k:05d}.parquet") for k in range(len(shards))]
    for p, s in zip(shards, scored, strict=True):
        score_shard(str(p), s, filters, corpus)
    keys = [str(out / "corpus" / str(i) / "keys") for i in range(len(corpus))]
    decs = [str(out / "corpus" / str(i) / "decisions") for i in range(len(corpus))]
    for k, s in enumerate(scored):
        corpus_keys(s, k, filters, corpus, keys, str(out / "work"))
    stats = {}
    for i, name in enumerate(corpus):
        Path(decs[i]).mkdir(parents=True)
        stats[name] = get_rule(name).decide(
            [str(decision_path(keys[i], k)) for k in range(len(scored))], Path(decs[i]),
            corpus[name], RuleContext(n_shards=len(scored), work_dir=out / "w"))
    kept = [out / "kept" / f"part-{k:05d}.parquet" for k in range(len(scored))]
    rej = [out / "rejected" / f"part-{k:05d}.parquet" for k in range(len(scored))]
    counts = merge_counts([decide_shard(s, str(kp), str(rp), filters, corpus, decs, k)
                           for k, (s, kp, rp) in enumerate(zip(scored, kept, rej, strict=True))])
    manifest = {**counts, "version": "f1", "corpus": stats, "outputs": {
        "kept": [str(p.relative_to(root)) for p in kept],
        "rejected": [str(p.relative_to(root)) for p in rej]},
        "config": {"filter": {"filters": {n: c.model_dump() for n, c in filters.items()},
                              "exact_dedup": corpus["exact_dedup"].model_dump(),
                              "minhash_dedup": corpus["minhash_dedup"].model_dump(),
                              "url_dedup": None,
                              "corpus": {"top_k": corpus["top_k"].model_dump()}}}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    stage = {"cached": False, "seconds": 1.0}
    return {"run_id": "r-test", "recipe": "t", "status": "completed",
            "started_at": "2024-01-01", "metrics": [], "evals": [],
            "rejections": [{"stage": "filter", "rule": r, "docs": c["first"],
                            "docs_alone": c["alone"]} for r, c in counts["rejections"].items()],
            "stages": [{**stage, "stage": "ingest", "version": "i1", "docs_in": len(docs),
                        "docs_kept": len(docs), "docs_rejected": 0, "output_path": str(ingest)},
                       {**stage, "stage": "filter", "version": "f1",
                        "docs_in": counts["docs_in"], "docs_kept": counts["docs_kept"],
                        "docs_rejected": counts["docs_rejected"], "output_path": str(out)}]}


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_run(tmp_path_factory.mktemp("mini"))


def _table(run: dict[str, Any], part: str) -> pa.Table:
    folder = Path(run["stages"][-1]["output_path"])
    return pa.concat_tables([pq.read_table(p) for p in sorted((folder / part).glob("*.parquet"))])


def _strict(out: dict[str, Any]) -> dict[str, Any]:
    def no_constants(name: str) -> None:
        raise ValueError(f"{name} in JSON")

    return json.loads(json.dumps(out, allow_nan=False), parse_constant=no_constants)


def test_rules_scores_and_nearest_kept(mini: dict[str, Any]) -> None:
    out = _strict(ins.inspect_run(mini, n=3))
    rules = {r["rule"]: r for r in out["rules"]}
    assert out["docs_in"] == out["docs_kept"] + out["docs_rejected"]
    mw = rules["gopher_quality.min_words"]
    assert mw["score_column"] == "gopher_quality_n_words" and mw["thresholds"] == [50]
    assert mw["dropped_first"] > 3 and len(mw["dropped"]) == 3
    rej = _table(mini, "rejected").to_pylist()
    by_id = {r["id"]: r for r in rej}
    for d in mw["dropped"]:  # each shown document: really dropped first by it, below 50
        assert by_id[d["id"]]["reject_reason"] == "gopher_quality.min_words"
        assert d["score"] == by_id[d["id"]]["gopher_quality_n_words"] < 50 == d["threshold"]
        assert d["excerpt"] and "\n" not in d["excerpt"]
    # nearest kept: the kept documents with the smallest |n_words - 50|, brute force
    kept = _table(mini, "kept").to_pylist()
    dist = sorted(abs(r["gopher_quality_n_words"] - 50) for r in kept)
    assert [d["distance"] for d in mw["nearest_kept"]] == dist[:3]
    mean = rules["gopher_quality.mean_word_length"]
    assert mean["thresholds"] == [3.0, 10.0]  # two-sided: each doc's nearest threshold
    assert all(d["threshold"] in (3.0, 10.0) for d in mean["nearest_kept"])
    top = rules["top_k.below_cut"]  # a corpus rule with a column and a cut
    assert top["score_column"] == "gopher_quality_alpha_words_frac"
    cut = top["thresholds"][0]
    assert all(d["score"] <= cut for d in top["dropped"])
    assert all(d["score"] >= cut for d in top["nearest_kept"])


def test_duplicates_show_their_kept_twin(mini: dict[str, Any]) -> None:
    out = ins.inspect_run(mini, rules=["exact_dedup", "minhash_dedup"], n=5)
    exact, near = out["rules"]
    assert exact["rule"] == "exact_dedup.duplicate" and exact["nearest_kept"] is None
    assert "twin" in exact["note"]
    [dup] = exact["dropped"]
    assert dup["id"].endswith("-copy") and dup["twin_id"] == dup["id"].removesuffix("-copy")
    assert dup["score"] is None and dup["threshold"] is None
    assert near["rule"] == "minhash_dedup.near_duplicate" and near["nearest_kept"] is None
    [nd] = near["dropped"]  # the MinHash cluster's survivor is its kept twin
    assert nd["id"].endswith("-near") and nd["twin_id"] == nd["id"].removesuffix("-near")


def test_filters_by_source_and_lang_and_rules(mini: dict[str, Any]) -> None:
    out = ins.inspect_run(mini, rules=["gopher_quality"], lang="fr", n=50, random_kept=50)
    assert {r["rule"].split(".")[0] for r in out["rules"]} == {"gopher_quality"}
    docs = [d for r in out["rules"] for d in r["dropped"] + (r["nearest_kept"] or [])]
    docs += out["random_kept"]
    assert docs and all(d["lang"] == "fr" or d["lang"].startswith("fr-") for d in docs)
    mw = next(r for r in out["rules"] if r["rule"] == "gopher_quality.min_words")
    rej = _table(mini, "rejected").to_pylist()
    assert mw["matching"] == sum(1 for r in rej if r["reject_reason"] == mw["rule"]
                                 and r["lang"].split("-")[0] == "fr")
    src = ins.inspect_run(mini, source=EVIL_SOURCE, n=5)
    shown = [d for r in src["rules"] for d in r["dropped"]]
    assert [d["id"] for d in shown] == ["evil"]
    with pytest.raises(ValueError, match="no rule nope"):
        ins.inspect_run(mini, rules=["nope"])


def test_lang_matches_subtags() -> None:
    rb = pa.record_batch({"source": ["a", "a", "b", "a"], "lang": ["en", "en-US", "eng", None]})
    assert ins._mask(rb, None, "en").tolist() == [True, True, False, False]
    assert ins._mask(rb, "a", "en").tolist() == [True, True, False, False]
    assert ins._mask(rb, "b", None).tolist() == [False, False, True, False]


def test_random_kept_is_seeded(mini: dict[str, Any]) -> None:
    kept = set(_table(mini, "kept").column("id").to_pylist())
    a = [d["id"] for d in ins.inspect_run(mini, n=0, random_kept=6, seed=1)["random_kept"]]
    b = [d["id"] for d in ins.inspect_run(mini, n=0, random_kept=6, seed=1)["random_kept"]]
    c = [d["id"] for d in ins.inspect_run(mini, n=0, random_kept=6, seed=2)["random_kept"]]
    assert a == b and len(set(a)) == 6 and set(a) <= kept and a != c


def test_topn_keeps_the_smallest() -> None:
    rng = np.random.default_rng(0)
    keys = rng.random(500)
    top = ins.TopN(7)
    for i, k in enumerate(keys):
        top.offer(float(k), 0, i, {"i": i})
    assert [p["i"] for _, _, p in top.items()] == list(np.argsort(keys)[:7])
    assert ins.TopN(0).items() == []


def test_excerpt_and_finite() -> None:
    assert ins.excerpt("a\n\n b\tc\x1b[31m\u202e", 100) == "a b c\ufffd[31m\ufffd"
    assert ins.excerpt("word " * 100, 12) == "word word wo…"
    assert ins.finite(float("nan")) is None and ins.finite(np.float32(0.5)) == 0.5
    assert ins.finite(math.inf) is None and ins.finite(np.int64(3)) == 3


def test_scalar_rules_match_what_each_filter_decides() -> None:
    """For every registered filter with a schema and default config, each rule mapped to a
    (column, thresholds) really flips at those thresholds: the mapping is the filter's own."""
    mapped = 0
    for name in REGISTRY:
        mod = get_filter(name)
        schema = getattr(mod, "SCORE_SCHEMA", None)
        try:
            cfg = mod.Config()
        except Exception:  # needs a file (blocklists): checked below
            continue
        if schema is None:
            continue
        for rule in mod.rules(schema.empty_table(), cfg):
            sc = ins.scalar_of(mod.NAME, rule.split(".", 1)[1], cfg.model_dump(),
                               set(schema.names))
            if sc is None:
                continue
            col, thresholds = sc
            mapped += 1
            for t in thresholds:
                typ = schema.field(col).type
                eps = 1.0 if pa.types.is_integer(typ) else max(abs(t), 1.0) * 1e-3
                vals = pa.array([t - eps, t + eps], pa.float64()).cast(typ)
                cols = {f.name: (vals if f.name == col else pa.nulls(2, f.type))
                        for f in schema}
                fails = mod.rules(pa.table(cols), cfg)[rule].to_pylist()
                assert fails[0] != fails[1], (rule, col, t, fails)
    assert mapped >= 20
    assert ins.scalar_of("word_blocklist", "hits", {"min_hits": 2}, {"word_blocklist_hits"}
                         ) == ("word_blocklist_hits", [2.0])
    assert ins.scalar_of("c4_quality", "lorem_ipsum", {"min_sentences": 3},
                         {"c4_quality_lorem_ipsum", "c4_quality_n_sentences"}) is None


def test_no_filter_stage_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="no filter stage"):
        ins.inspect_run({"run_id": "x", "stages": []})


def test_a_run_with_every_filter(tmp_path: Path) -> None:
    """Every registered filter that runs on its defaults (blocklists need a file), in one run:
    every rule that dropped documents is shown with those documents, dropped by it."""
    filters = {}
    for name in REGISTRY:
        try:
            filters[name] = get_filter(name).Config()
        except Exception:  # needs a file
            continue
    assert len(filters) >= 5
    run = build_run(tmp_path, filters)
    out = _strict(ins.inspect_run(run, n=2))
    rules = {r["rule"]: r for r in out["rules"]}
    fired = {r["rule"]: r["docs"] for r in run["rejections"] if r["docs"] > 0}
    assert len({r.split(".", 1)[0] for r in fired}) >= 3  # several filters dropped something
    reasons = {r["id"]: r["reject_reason"] for r in _table(run, "rejected").to_pylist()}
    for rule, n in fired.items():
        assert rules[rule]["dropped_first"] == n, rule
        assert 0 < len(rules[rule]["dropped"]) <= 2
        assert all(reasons[d["id"]] == rule for d in rules[rule]["dropped"]), rule
