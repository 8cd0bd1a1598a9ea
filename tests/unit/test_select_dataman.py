"""DataMan pieces: reply parsing (labelled lines and the released rater's terse form), the
ratings of every document through a real local OpenAI-compatible server (cached, marked,
resumable), the filter's threshold and domain rules, and the per-domain top k % rule."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llmkit import FakeLLM, doc_shard

from tasks import filter as filter_lib
from tasks.prompts.ratings import DATAMAN, DATAMAN_CRITERIA, DATAMAN_DOMAINS, OVERALL, parse_dataman
from tasks.select import dataman, dataman_filter, dataman_topk
from tasks.select.annotate import LLMConfig

LABELLED = "\n".join(f"[{i}] {c}: {1 + i % 5}/5" for i, c in
                     enumerate(DATAMAN_CRITERIA, start=1)) + \
    f"\n[14] {OVERALL}: 4/5\nDomain Type: G"


def test_the_prompt_names_every_criterion_and_domain() -> None:
    assert len(DATAMAN_CRITERIA) == 13 and len(DATAMAN_DOMAINS) == 15
    for name in (*DATAMAN_CRITERIA, OVERALL, *DATAMAN_DOMAINS.values()):
        assert name in DATAMAN
    assert "{example}" in DATAMAN


def test_labelled_replies_parse() -> None:
    ratings, domain = parse_dataman(LABELLED)
    assert domain == "Mathematics" and ratings[OVERALL] == 4
    assert [ratings[c] for c in DATAMAN_CRITERIA] == [1 + i % 5 for i in range(1, 14)]
    r, d = parse_dataman("**Accuracy**: 5/5\n**Overall Score:** 3\nDomain: [H] Coding")
    assert r["Accuracy"] == 5 and r[OVERALL] == 3 and d == "Coding" and r["Coherence"] is None


def test_the_released_raters_terse_reply_parses() -> None:
    ratings, domain = parse_dataman("E\n" + "\n".join(["4"] * 13 + ["5"]))
    assert domain == "Technology" and ratings[OVERALL] == 5 and ratings["Sensitivity"] == 4


@pytest.mark.parametrize("reply", [None, "", "I cannot rate this.", "Overall Score: 9/5"])
def test_replies_without_a_valid_overall_score_give_none(reply: str | None) -> None:
    ratings, domain = parse_dataman(reply)
    assert ratings[OVERALL] is None and domain is None


def test_every_document_is_rated_once_and_cached(tmp_path: Path) -> None:
    src = doc_shard(tmp_path, 12)
    llm = FakeLLM()

    def reply(n: int) -> str:  # "Document number <i>": overall 1 + i % 5, domain by parity
        i = int(llm.calls[n - 1].split("Document number ")[1].split(".")[0])
        if i == 5:
            return "Sorry, no."
        return (f"[1] Accuracy: 3/5\n[14] Overall Score: {1 + i % 5}/5\n"
                f"Domain Type: {'G' if i % 2 else 'A'}")

    llm.reply = reply
    cfg = LLMConfig(backend="openai", base_url=llm.url, model="fake",
                    max_concurrency=3).model_dump()
    job = {"key": "0", "src": str(src), "kept": str(tmp_path / "kept.parquet"),
           "marker": str(tmp_path / "0.json")}
    try:
        res = dataman.rate_shards([job], cfg, str(tmp_path / "cache"))
        s = res["shards"][0]
        assert len(llm.calls) == 12 and res["llm"]["new_generations"] == 12
        assert s["docs_in"] == s["docs_kept"] == 12 and s["unparsed"] == 1
        assert s["domains"] == {"Medicine": 6, "Mathematics": 5}
        t = pq.read_table(job["kept"])
        assert set(dataman.columns()) <= set(t.column_names)
        for i, (sc, dom, acc) in enumerate(zip(t.column("dataman_score").to_pylist(),
                                               t.column("dataman_domain").to_pylist(),
                                               t.column("dataman_accuracy").to_pylist(),
                                               strict=True)):
            if i == 5:
                assert sc is None and dom is None and acc is None
            else:
                assert sc == 1 + i % 5 and acc == 3
                assert dom == ("Mathematics" if i % 2 else "Medicine")
        assert Path(job["marker"]).is_file()
        again = dataman.rate_shards([job], cfg, str(tmp_path / "cache"))
        assert again["shards"][0]["docs_in"] == 12 and len(llm.calls) == 12  # marked: skipped
        Path(job["marker"]).unlink()
        third = dataman.rate_shards([job], cfg, str(tmp_path / "cache"))
        assert len(llm.calls) == 12 and third["llm"]["cache_hits"] == 12  # all from the cache
    finally:
        llm.close()


def _rated(tmp: Path) -> Path:
    t = pq.read_table(doc_shard(tmp, 8))
    t = t.append_column("dataman_score", pa.array([5, 4, 3, 2, 1, None, 4, 2], pa.float32()))
    t = t.append_column("dataman_domain", pa.array(["Law", "Law", "Law", "Law", None, "Law",
                                                    "Coding", "Coding"]))
    p = tmp / "rated.parquet"
    pq.write_table(t, p)
    return p


def test_the_filter_keeps_a_minimum_score_and_chosen_domains() -> None:
    t = pa.table({"dataman_score": pa.array([5, 2, None, 4], pa.float32()),
                  "dataman_domain": ["Law", "Law", "Coding", None]})
    r = dataman_filter.rules(t, dataman_filter.Config(min_score=3, domains=["Law"]))
    assert r["dataman.below_min_score"].to_pylist() == [False, True, None, False]
    assert r["dataman.domain_excluded"].to_pylist() == [False, False, True, None]
    with pytest.raises(ValueError, match="unknown DataMan domains"):
        dataman_filter.Config(domains=["Cooking"])


def test_top_k_per_domain_keeps_each_domains_best(tmp_path: Path) -> None:
    scored = str(_rated(tmp_path))
    stats = filter_lib.filter_local([scored], str(tmp_path / "out"), {},
                                    {"tasks.select.dataman_topk": dataman_topk.Config(
                                        percent=50)})
    assert stats[0]["docs_in"] == stats[0]["docs_kept"] + stats[0]["docs_rejected"] == 8
    kept = pq.read_table(tmp_path / "out" / "kept" / "part-00000.parquet")
    # Law (4 ranked): 5, 4 kept; Coding (2): 4 kept; no domain (1): kept; null score: kept
    assert sorted(kept.column("id").to_pylist()) == ["d0", "d1", "d4", "d5", "d6"]
    rej = pq.read_table(tmp_path / "out" / "rejected" / "part-00000.parquet")
    assert set(rej.column("reject_reason").to_pylist()) == {"dataman_topk.below_cut"}


@pytest.mark.parametrize("section", ["## Embeddings: stage `embed`",
                                     "## FineWeb-Edu: stage `fineweb_edu`",
                                     "## DataMan ratings: stage `dataman`"])
def test_the_documented_recipes_validate(section: str) -> None:
    import re

    import yaml

    from tasks.recipe import parse_recipe
    from tasks.stages import build

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "selection.md").read_text(encoding="utf-8")
    part = doc.split(section, 1)[1].split("\n## ", 1)[0]
    snippet = re.search(r"```yaml\n(.*?)```", part, re.S)
    assert snippet, section
    raw = yaml.safe_load(snippet.group(1))
    raw.update(name="doc", input={"paths": [str(root / "data" / "sample" / "sample.jsonl")]})
    names = [s.name for s in build(parse_recipe(raw))]
    assert names.index("rewrite") < names.index(
        {"## E": "embed", "## F": "fineweb_edu", "## D": "dataman"}[section[:4]]) \
        < names.index("score")
