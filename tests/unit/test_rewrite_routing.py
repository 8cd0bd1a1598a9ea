"""Rewrites routed by quality bucket (Nemotron-CC): documents planted in low and high buckets
reach the right prompt families on a real local OpenAI-compatible server (``FakeLLM``, which
records every prompt); a null or unrouted bucket gets no attempt; the rewrite stage defers a
routed prompt to the ``recycle`` stage after the filter, which rewrites the filter's kept
documents; accounting holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llmkit import FakeLLM, doc_shard, rewrite_cfg, rewrite_job

from tasks.prompts import BUILTIN, load_prompt
from tasks.prompts.routing import HIGH_PROMPTS, Routing
from tasks.rewrite import rewrite_llm

# planted: d0, d1 low (Wikipedia rephrase); d2, d3 high (the four knowledge prompts);
# d4 null (never bucketed); d5 in 12..19 too; d6 low
BUCKETS = [0, 11, 12, 19, None, 15, 3]
LOW = {"d0", "d1", "d6"}
HIGH = {"d2", "d3", "d5"}


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    f = FakeLLM()
    yield f
    f.close()


def _bucketed(tmp: Path, buckets: list[int | None], name: str = "in.parquet") -> Path:
    src = doc_shard(tmp, len(buckets))
    t = pq.read_table(src)
    t = t.append_column("gopher_quality_n_words", pa.array([9.0] * len(buckets)))
    t = t.append_column("quality_bucket", pa.array(buckets, pa.int32()))
    out = tmp / name
    pq.write_table(t, out)
    return out


def _family(content: str) -> str:
    """Which built-in prompt a request's user message was rendered from."""
    for name in ("nemotron_wikipedia", *HIGH_PROMPTS):
        head = BUILTIN[name].user.split("{text}")[0][:60]
        if content.startswith(head):
            return name
    raise AssertionError(f"no built-in prompt starts this request: {content[:80]!r}")


def _doc_of(content: str) -> str:
    return "d" + content.split("Document number ", 1)[1].split(".", 1)[0]


def test_the_builtin_routing_splits_the_twenty_buckets() -> None:
    r = load_prompt("nemotron_cc_routed")
    assert isinstance(r, Routing) and r.column == "quality_bucket"
    assert [p.name for p in r.prompts_for(0)] == ["nemotron_wikipedia"]
    assert [p.name for p in r.prompts_for(11)] == ["nemotron_wikipedia"]
    assert [p.name for p in r.prompts_for(12)] == list(HIGH_PROMPTS)
    assert [p.name for p in r.prompts_for(19)] == list(HIGH_PROMPTS)
    assert r.prompts_for(None) == () and r.prompts_for(20) == ()


def test_low_and_high_buckets_reach_the_right_prompts(tmp_path: Path,
                                                      fake_llm: FakeLLM) -> None:
    src = _bucketed(tmp_path, BUCKETS)
    job = {**rewrite_job(tmp_path, src), "mode": "route", "reject_stage": "recycle"}
    cfg = rewrite_cfg(fake_llm.url, prompt="nemotron_cc_routed", mix_ratio=None)
    out = rewrite_llm([job], cfg, str(tmp_path / "cache"))
    asked: dict[str, set[str]] = {}
    for c in fake_llm.calls:
        asked.setdefault(_doc_of(c), set()).add(_family(c))
    assert {d for d in asked if asked[d] == {"nemotron_wikipedia"}} == LOW
    assert {d for d in asked if asked[d] == set(HIGH_PROMPTS)} == HIGH
    assert set(asked) == LOW | HIGH  # d4 (null bucket) never asked
    assert len(fake_llm.calls) == len(LOW) + 4 * len(HIGH)

    kept = pq.read_table(job["kept"])
    rewrites = kept.filter(pa.array([r is not None for r in kept["rewritten_from"].to_pylist()]))
    assert sorted(rewrites["id"].to_pylist()) == sorted(
        [f"{d}~nemotron_wikipedia" for d in LOW] + [f"{d}~{p}" for d in HIGH for p in HIGH_PROMPTS])
    for r in rewrites.to_pylist():
        want = "nemotron_wikipedia" if r["rewritten_from"] in LOW else None
        assert want is None or r["prompt"] == want
        # the original's scores (its bucket too) describe the original, not the rewrite
        assert r["quality_bucket"] is None and r["gopher_quality_n_words"] is None
    originals = kept.filter(pa.array([r is None for r in kept["rewritten_from"].to_pylist()]))
    assert originals["quality_bucket"].to_pylist() == BUCKETS
    s = out["shards"][0]
    assert s["originals"] == 7 and s["attempts"] == 15 and s["rewrites_kept"] == 15
    assert s["docs_in"] == s["docs_kept"] + s["docs_rejected"] == 22
    assert s["by_prompt"]["nemotron_wikipedia"] == {"attempts": 3, "kept": 3}
    assert all(s["by_prompt"][p] == {"attempts": 3, "kept": 3} for p in HIGH_PROMPTS)


def test_the_mixer_and_a_failed_attempt_keep_the_accounting(tmp_path: Path) -> None:
    # a reply that the distill prompt's parser rejects (empty after its lead-in), and the
    # 1:1 mixer: 7 originals allow 7 of the rewrites that parsed
    srv = FakeLLM(reply=lambda n: "Paraphrased Text:" if n % 5 == 0 else f"Rewritten {n}")
    try:
        src = _bucketed(tmp_path, BUCKETS)
        job = {**rewrite_job(tmp_path, src), "mode": "route", "reject_stage": "recycle"}
        out = rewrite_llm([job], rewrite_cfg(srv.url, prompt="nemotron_cc_routed"),
                          str(tmp_path / "cache"))
    finally:
        srv.close()
    s = out["shards"][0]
    assert s["docs_in"] == 7 + 15 == s["docs_kept"] + s["docs_rejected"]
    assert s["rewrites_kept"] == 7 and s["docs_kept"] == 14
    rej = pq.read_table(job["rejected"])
    reasons = rej["reject_reason"].to_pylist()
    assert len(reasons) == s["docs_rejected"] and "rewrite.mix_ratio" in reasons
    assert set(rej["reject_stage"].to_pylist()) == {"recycle"}
    assert sum(c["kept"] for c in s["by_prompt"].values()) == 7


def test_a_routing_file_and_its_digest(tmp_path: Path, fake_llm: FakeLLM) -> None:
    mine = tmp_path / "teach.yaml"
    mine.write_text("user: 'Teach this:\n\n{text}'\n")
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n"
                      "  - {buckets: [0, 4], prompts: [nemotron_wikipedia]}\n"
                      "  - {buckets: [18, 19], prompts: [teach.yaml, nemotron_distill]}\n")
    r = load_prompt(str(routes))
    assert isinstance(r, Routing) and r.name == "routes"
    assert [p.name for p in r.prompts_for(19)] == ["teach", "nemotron_distill"]
    assert r.prompts_for(10) == ()  # the middle is not rewritten
    before = r.digest()
    mine.write_text("user: 'Teach this well:\n\n{text}'\n")
    assert load_prompt(str(routes)).digest() != before  # a prompt file's content versions it

    src = _bucketed(tmp_path, [2, 10, 19])
    job = {**rewrite_job(tmp_path, src), "mode": "route", "reject_stage": "recycle"}
    rewrite_llm([job], rewrite_cfg(fake_llm.url, prompt=str(routes), mix_ratio=None),
                str(tmp_path / "cache"))
    got = sorted((_doc_of(c), c.split("\n")[0][:16]) for c in fake_llm.calls)
    assert [d for d, _ in got] == ["d0", "d2", "d2"]
    assert any(head.startswith("Teach this well") for _, head in got)


def test_a_routed_run_shares_answers_with_an_unrouted_one(tmp_path: Path,
                                                         fake_llm: FakeLLM) -> None:
    src = _bucketed(tmp_path, [0, 1])
    cache = str(tmp_path / "cache")
    job = {**rewrite_job(tmp_path, src), "mode": "route", "reject_stage": "recycle"}
    rewrite_llm([job], rewrite_cfg(fake_llm.url, prompt="nemotron_cc_routed"), cache)
    assert len(fake_llm.calls) == 2
    out = rewrite_llm([rewrite_job(tmp_path, src, key="1")],
                      rewrite_cfg(fake_llm.url, prompt="nemotron_wikipedia"), cache)
    assert len(fake_llm.calls) == 2 and out["run"]["cache_hits"] == 2


def test_recycled_rejects_are_routed_by_their_bucket(tmp_path: Path, fake_llm: FakeLLM) -> None:
    t = pq.read_table(_bucketed(tmp_path, [2, None, 19]))
    rej = t.append_column("reject_stage", pa.array(["filter"] * 3)).append_column(
        "reject_reason", pa.array(["gopher_quality.min_words"] * 3))
    pq.write_table(rej, tmp_path / "rej.parquet")
    pq.write_table(t.slice(0, 0), tmp_path / "real.parquet")
    job = {**rewrite_job(tmp_path, tmp_path / "rej.parquet"), "mode": "recycle",
           "reject_stage": "recycle", "real": str(tmp_path / "real.parquet"), "filters": {}}
    out = rewrite_llm([job], rewrite_cfg(fake_llm.url, prompt="nemotron_cc_routed",
                                         select="rejected", mix_ratio=None),
                      str(tmp_path / "cache"))
    assert sorted((_doc_of(c), _family(c)) for c in fake_llm.calls) == sorted(
        [("d0", "nemotron_wikipedia")] + [("d2", p) for p in HIGH_PROMPTS])
    s = out["shards"][0]
    assert s["attempts"] == 5 and s["rewrites_kept"] == 5
    assert s["docs_in"] == s["docs_kept"] + s["docs_rejected"]


@pytest.mark.parametrize("text, match", [
    ("routes: []\n", "non-empty"),
    ("routes:\n  - {buckets: [5, 1], prompts: [wrap_qa]}\n", "low <= high"),
    ("routes:\n  - {buckets: [0, 1], prompts: []}\n", "non-empty list"),
    ("routes:\n  - {buckets: [0, 1], prompts: [wrap_qa, wrap_qa]}\n", "twice"),
    ("routes:\n  - {buckets: [0, 1], prompts: [nemotron_cc_routed]}\n", "routing"),
    ("routes:\n  - {buckets: [0, 1], prompts: [no_such]}\n", "unknown prompt"),
    ("rout: 1\nroutes:\n  - {buckets: [0, 1], prompts: [wrap_qa]}\n", "unknown key"),
])
def test_bad_routing_files_are_recipe_errors(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_prompt(str(p))


def test_documents_without_a_bucket_column_fail_with_a_named_fix(tmp_path: Path,
                                                                 fake_llm: FakeLLM) -> None:
    job = {**rewrite_job(tmp_path, doc_shard(tmp_path, 2)), "mode": "route"}
    with pytest.raises(ValueError, match="quality_buckets corpus rule"):
        rewrite_llm([job], rewrite_cfg(fake_llm.url, prompt="nemotron_cc_routed"),
                    str(tmp_path / "cache"))


# ---------------------------------------------------------------- the stages' wiring
class _Ex:
    """The executor's one call these stages make for an HTTP backend, run in this process."""

    def task(self, fn: Any, *args: Any, desc: str = "task") -> Any:
        return fn(*args)


def _run(tmp: Path, url: str, **rewrite: Any) -> Any:
    from tasks.recipe import parse_recipe
    from tasks.stage import RunInfo

    raw = {"name": "routed", "input": {"paths": [str(tmp / "x.jsonl")], "format": "jsonl"},
           "stages": {"rewrite": {"backend": "openai", "base_url": url, "model": "fake",
                                  "prompt": "nemotron_cc_routed", **rewrite},
                      "filter": {"filters": {}, "corpus": {
                          "quality_buckets": {"columns": ["dclm_fasttext_score"]}}}}}
    (tmp / "x.jsonl").write_text('{"text": "x"}\n')
    return RunInfo("r1", parse_recipe(raw), tmp / "root", catalog=None)


def test_the_rewrite_stage_defers_a_routed_prompt_to_recycle(tmp_path: Path,
                                                             fake_llm: FakeLLM) -> None:
    from tasks.stage import Manifest, Upstream
    from tasks.stages.rewrite import Recycle, Rewrite
    from tasks.store import StageDir

    run = _run(tmp_path, fake_llm.url, mix_ratio=None)
    assert Rewrite().config(run) is None  # pass-through before the filter: no bucket yet
    up = Upstream()
    root = run.data_root
    kept = []
    for i, b in enumerate(([1, 13], [None, 19, 5])):
        d = tmp_path / f"k{i}"
        d.mkdir()
        part = root / "stages" / "filter" / "v" / "kept" / f"part-0000{i}.parquet"
        part.parent.mkdir(parents=True, exist_ok=True)
        _bucketed(d, b).rename(part)
        kept.append(str(part.relative_to(root)))
    up.add(Manifest("filter", "v", 5, 5, 0, {"kept": kept, "rejected": []}), docs=True)
    stage = Recycle()
    assert stage.enabled(run, up)
    body = stage.run(run, up, StageDir(root, "recycle", "v2"), _Ex())
    # originals: the filter's 5 kept; attempts: 1 + 4 + 4 + 1 (bucket 5 is low)
    assert body["docs_in"] == 5 + 10 and body["docs_kept"] == 15 and body["docs_rejected"] == 0
    assert body["llm"]["by_prompt"]["nemotron_wikipedia"] == {"attempts": 2, "kept": 2}
    assert body["llm"]["attempts"] == 10 and body["llm"]["prompt"] == "nemotron_cc_routed"
    rows = pa.concat_tables([pq.read_table(root / p) for p in body["outputs"]["kept"]],
                            promote_options="permissive")
    assert len(rows) == 15 and rows["rewritten_from"].null_count == 5
    assert json.dumps(body["llm"])  # the manifest's llm block stays JSON
