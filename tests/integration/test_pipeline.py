"""End to end on a slice of the real sample, with real Prefect, Dask, Ray, DuckDB, Parquet."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tasks.catalog import Catalog

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_run(prefect_harness: None, sample_slice: Path, tmp_path_factory: pytest.TempPathFactory,
              write_recipe: Any) -> dict[str, Any]:
    from flows.pipeline import run_recipe

    tmp = tmp_path_factory.mktemp("e2e")
    recipe = write_recipe(tmp / "recipe.yaml", sample_slice, tmp / "root")
    summary = run_recipe(str(recipe))
    return {"summary": summary, "recipe": recipe, "root": tmp / "root", "tmp": tmp}


def stages_of(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in summary["stages"]}


def test_every_stage_accounts_for_every_document(first_run: dict[str, Any]) -> None:
    summary = first_run["summary"]
    assert summary["status"] == "completed"
    st = stages_of(summary)
    assert list(st) == ["ingest", "rewrite", "score", "filter", "tokenize", "train", "evaluate"]
    for s in summary["stages"]:
        assert s["docs_in"] == s["docs_kept"] + s["docs_rejected"], s
    ingest_dir = Path(st["ingest"]["output_path"])
    kept_rows = sum(pq.read_metadata(p).num_rows for p in (ingest_dir / "kept").glob("*.parquet"))
    assert kept_rows == st["ingest"]["docs_kept"]
    # the chain hands kept docs on: each stage's input is the previous stage's kept
    assert st["rewrite"]["docs_in"] == st["ingest"]["docs_kept"]
    assert st["filter"]["docs_in"] == st["score"]["docs_kept"] == st["rewrite"]["docs_kept"]
    assert st["tokenize"]["docs_in"] == st["filter"]["docs_kept"]
    # the data contracts gated the ingest, filter and tokenize outputs (recycle, the filter
    # group's last stage, is off here: the gate acts where the group ends all the same)
    gates = Catalog(first_run["root"] / "catalog.duckdb").contracts(summary["run_id"])
    assert {g["stage"] for g in gates} == {"ingest", "filter", "tokenize"}


def test_rejected_documents_carry_their_reason(first_run: dict[str, Any]) -> None:
    st = stages_of(first_run["summary"])
    fdir = Path(st["filter"]["output_path"])
    rejected = [r for p in sorted((fdir / "rejected").glob("*.parquet"))
                for r in pq.read_table(p).to_pylist()]
    assert len(rejected) == st["filter"]["docs_rejected"] > 0
    assert all(r["reject_stage"] == "filter" and r["reject_reason"] for r in rejected)
    # the planted duplicate (an upper-cased copy) is dropped by exact dedup, not the original
    dups = [r for r in rejected if r["reject_reason"] == "exact_dedup.duplicate"]
    assert any(r["id"].endswith("-copy") for r in dups)
    # catalog per-rule counts agree with the rejected files
    run = Catalog(first_run["root"] / "catalog.duckdb").show(first_run["summary"]["run_id"])
    by_rule = {r["rule"]: r["docs"] for r in run["rejections"] if r["stage"] == "filter"}
    for rule, n in by_rule.items():
        assert n == sum(1 for r in rejected if r["reject_reason"] == rule), rule
    assert sum(by_rule.values()) == len(rejected)
    # score-then-decide: the scores travel with the documents
    assert "gopher_quality_n_words" in pq.read_schema(next((fdir / "kept").glob("*.parquet"))).names


def test_second_run_recomputes_nothing(first_run: dict[str, Any]) -> None:
    from flows.pipeline import run_recipe

    again = run_recipe(str(first_run["recipe"]))
    first, second = stages_of(first_run["summary"]), stages_of(again)
    assert again["run_id"] != first_run["summary"]["run_id"]
    for name, s in second.items():
        assert s["cached"], name
        assert s["version"] == first[name]["version"], name
        assert (s["docs_in"], s["docs_kept"]) == (first[name]["docs_in"], first[name]["docs_kept"])


def test_changing_a_threshold_recomputes_only_from_the_decision_on(
    first_run: dict[str, Any], sample_slice: Path, write_recipe: Any
) -> None:
    from flows.pipeline import run_recipe

    recipe = write_recipe(first_run["tmp"] / "looser.yaml", sample_slice, first_run["root"],
                          min_words=20)
    looser = stages_of(run_recipe(str(recipe), until="filter"))
    first = stages_of(first_run["summary"])
    for name in ("ingest", "rewrite", "score"):
        assert looser[name]["cached"] and looser[name]["version"] == first[name]["version"]
    assert not looser["filter"]["cached"]
    assert looser["filter"]["version"] != first["filter"]["version"]
    assert looser["filter"]["docs_kept"] > first["filter"]["docs_kept"]


def test_checkpoint_loads_with_transformers_and_reproduces_bpb(first_run: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.tokenize import read_heldout

    st = stages_of(first_run["summary"])
    run = Catalog(first_run["root"] / "catalog.duckdb").show(first_run["summary"]["run_id"])
    reported = {e["task"]: e["value"] for e in run["evals"]}
    ckpt = Path(st["train"]["output_path"]) / "checkpoint"
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    docs = read_heldout(Path(st["tokenize"]["output_path"]), max_docs=20).to_pylist()
    seq_len = json.loads((Path(st["tokenize"]["output_path"]) / "meta.json").read_text())["seq_len"]
    # independent re-computation: one window at a time, no batching or padding
    nll, n_bytes = 0.0, 0
    with torch.no_grad():
        for d in docs:
            ids = [tok.eos_token_id] + tok(d["text"], add_special_tokens=False)["input_ids"]
            for start in range(0, len(ids) - 1, seq_len):
                window = torch.tensor([ids[start:start + seq_len + 1]])
                logits = model(window[:, :-1]).logits.double()
                nll += torch.nn.functional.cross_entropy(
                    logits[0], window[0, 1:], reduction="sum").item()
            n_bytes += len(d["text"].encode("utf-8"))
    assert reported["heldout"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-4)
    assert 0 < reported["heldout"] < 10


def test_catalog_runs_and_show_from_the_cli(first_run: dict[str, Any]) -> None:
    root = str(first_run["root"])
    out = subprocess.run([sys.executable, "-m", "flows.cli", "show", "latest", "--json",
                          "--data-root", root], capture_output=True, text=True, check=True)
    shown = json.loads(out.stdout)
    assert set(shown) >= {"run_id", "status", "report", "stages", "rejections", "evals"}
    assert set(shown["stages"][0]) >= {"stage", "version", "docs_in", "docs_kept",
                                       "docs_rejected", "seconds", "output_path"}
    runs = json.loads(subprocess.run(
        [sys.executable, "-m", "flows.cli", "runs", "--json", "--data-root", root],
        capture_output=True, text=True, check=True).stdout)
    assert runs[0]["run_id"] == shown["run_id"]
    assert [r["started_at"] for r in runs] == sorted((r["started_at"] for r in runs),
                                                     reverse=True)
    assert first_run["summary"]["run_id"] in {r["run_id"] for r in runs}


def test_report_and_prefect_artifacts(first_run: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    report = Path(first_run["summary"]["report"]).read_text()
    assert "Funnel" in report and "data:image/png;base64," in report
    assert "exact_dedup.duplicate" in report and "heldout" in report
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["datamill-funnel", "datamill-report", "datamill-eval",
                                        "datamill-loss", "datamill-rejections"])))
    keys = {a.key for a in arts}
    assert {"datamill-funnel", "datamill-report", "datamill-eval", "datamill-loss",
            "datamill-rejections"} <= keys
    # other tests' runs share this Prefect server (some stop before the filter): look for
    # this run's tables among them
    assert any("filter" in str(a.data) for a in arts if a.key == "datamill-funnel")
    assert any("exact_dedup.duplicate" in str(a.data) for a in arts
               if a.key == "datamill-rejections")
    # the flow run in the UI carries the datamill run id as its name
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    run_id = first_run["summary"]["run_id"]
    with get_client(sync_client=True) as client:
        named = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[run_id])))
    assert len(named) == 1 and named[0].state_name == "Completed"


def test_training_metrics_are_in_the_catalog(first_run: dict[str, Any]) -> None:
    run = Catalog(first_run["root"] / "catalog.duckdb").show(first_run["summary"]["run_id"])
    losses = [m["value"] for m in run["metrics"] if m["name"] == "loss"]
    assert len(losses) >= 3
    assert losses[-1] < losses[0]


def test_ingest_counts_every_line_of_the_slice(first_run: dict[str, Any], sample_slice: Path
                                               ) -> None:
    lines = sum(1 for line in sample_slice.read_text().splitlines() if line.strip())
    st = stages_of(first_run["summary"])
    assert st["ingest"]["docs_in"] == lines


def test_crash_mid_stage_rerun_redoes_only_unfinished_shards(first_run: dict[str, Any]) -> None:
    """Simulate a crash inside the filter stage: its manifest was never written and one shard
    had not finished. The re-run completes that shard only and the totals are unchanged."""
    from flows.pipeline import run_recipe

    st = stages_of(first_run["summary"])
    fdir = Path(st["filter"]["output_path"])
    shards = sorted((fdir / "_shards").glob("*.json"))
    assert len(shards) >= 2
    victim = shards[0].stem
    (fdir / "manifest.json").unlink()
    shards[0].unlink()
    (fdir / "kept" / f"part-{victim}.parquet").unlink()
    survivor = fdir / "kept" / f"part-{shards[1].stem}.parquet"
    before = survivor.stat().st_mtime_ns

    again = stages_of(run_recipe(str(first_run["recipe"]), until="filter"))
    assert not again["filter"]["cached"] and again["score"]["cached"]
    assert survivor.stat().st_mtime_ns == before  # finished shard not redone
    assert (fdir / "kept" / f"part-{victim}.parquet").exists()
    for k in ("version", "docs_in", "docs_kept", "docs_rejected"):
        assert again["filter"][k] == st["filter"][k]
    kept_rows = sum(pq.read_metadata(p).num_rows for p in (fdir / "kept").glob("*.parquet"))
    assert kept_rows == st["filter"]["docs_kept"]


def test_multiple_choice_tasks_and_compare(first_run: dict[str, Any]) -> None:
    """Held-out tasks are scored per item; compare pairs items and records a verdict."""
    st = stages_of(first_run["summary"])
    run = Catalog(first_run["root"] / "catalog.duckdb").show(first_run["summary"]["run_id"])
    ev = {(e["task"], e["metric"]): e["value"] for e in run["evals"]}
    for task in ("next_sentence", "final_word"):
        assert ev[(task, "items")] > 0
        assert 0.0 <= ev[(task, "acc")] <= 1.0
        assert ev[(task, "acc_centred")] == pytest.approx((ev[(task, "acc")] - 0.25) / 0.75)
    items = pq.read_table(Path(st["evaluate"]["output_path"]) / "items.parquet").to_pylist()
    bpb_items = [r for r in items if r["task"] == "heldout"]
    assert sum(r["num"] for r in bpb_items) / sum(r["den"] for r in bpb_items) == \
        pytest.approx(ev[("heldout", "bpb")], rel=1e-9)
    # the same model against itself: no difference, "can't tell", recorded in the catalog
    rid = first_run["summary"]["run_id"]
    out = subprocess.run([sys.executable, "-m", "flows.cli", "compare", rid, rid, "--json",
                          "--boot", "200", "--data-root", str(first_run["root"])],
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    assert {(r["task"], r["metric"]) for r in rows} >= {("heldout", "bpb"),
                                                        ("next_sentence", "acc")}
    assert all(r["diff"] == 0 and r["verdict"] == "can't tell" for r in rows)
    import duckdb

    con = duckdb.connect(str(first_run["root"] / "catalog.duckdb"), read_only=True)
    assert con.execute("select count(*) from decisions").fetchone()[0] == len(rows)
    con.close()


def test_multi_seed_shares_seed_zero_and_compare_uses_seeds(
    first_run: dict[str, Any], sample_slice: Path, write_recipe: Any
) -> None:
    from flows.pipeline import run_recipe

    recipe = write_recipe(first_run["tmp"] / "seeds.yaml", sample_slice, first_run["root"],
                          seeds=[0, 1])
    summary = run_recipe(str(recipe))
    trains = [s for s in summary["stages"] if s["stage"] == "train"]
    evals = [s for s in summary["stages"] if s["stage"] == "evaluate"]
    assert len(trains) == 2 and len(evals) == 2
    first_train = stages_of(first_run["summary"])["train"]
    assert trains[0]["version"] == first_train["version"] and trains[0]["cached"]
    assert trains[1]["version"] != first_train["version"] and not trains[1]["cached"]
    run = Catalog(first_run["root"] / "catalog.duckdb").show(summary["run_id"])
    assert {e["seed"] for e in run["evals"]} == {0, 1}
    assert {m["seed"] for m in run["metrics"]} == {0, 1}
    out = subprocess.run([sys.executable, "-m", "flows.cli", "compare",
                          first_run["summary"]["run_id"], summary["run_id"], "--json", "--boot",
                          "200", "--data-root", str(first_run["root"])],
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    bpb = next(r for r in rows if r["task"] == "heldout" and r["metric"] == "bpb")
    assert bpb["seeds"] == 2 and bpb["ci_low"] <= bpb["diff"] <= bpb["ci_high"]
    assert {"signal", "noise", "snr"} <= set(bpb) and bpb["noise"] > 0  # B has two seeds


def test_incremental_ingest_takes_only_new_files(
    prefect_harness: None, sample_lines: list[str], tmp_path: Path, write_recipe: Any
) -> None:
    import yaml

    from flows.pipeline import run_recipe

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "day1.jsonl").write_text("\n".join(sample_lines[0:600:3]) + "\n")
    recipe = write_recipe(tmp_path / "inc.yaml", inbox / "*.jsonl", tmp_path / "root")
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["ingest"]["incremental"] = True
    recipe.write_text(yaml.safe_dump(raw))

    first = stages_of(run_recipe(str(recipe), until="filter"))
    assert first["ingest"]["docs_in"] == 200
    again = run_recipe(str(recipe), until="filter")  # same files: nothing to do
    assert again["status"] == "completed"
    assert [s["stage"] for s in again["stages"]] == ["ingest"]
    assert again["stages"][0]["docs_in"] == 0
    (inbox / "day2.jsonl").write_text("\n".join(sample_lines[1:300:3]) + "\n")
    delta = stages_of(run_recipe(str(recipe), until="filter"))
    assert delta["ingest"]["docs_in"] == 100  # day 2 only
    import duckdb

    con = duckdb.connect(str(tmp_path / "root" / "catalog.duckdb"), read_only=True)
    paths = [r[0] for r in con.execute("select path from inputs order by consumed_at").fetchall()]
    con.close()
    assert [Path(p).name for p in paths] == ["day1.jsonl", "day2.jsonl"]


def test_near_duplicates_are_clustered_across_shards(first_run: dict[str, Any]) -> None:
    """The slice has a planted whitespace-variant copy: exact dedup drops it first; every
    document that passed the rules carries its MinHash cluster id and size."""
    st = stages_of(first_run["summary"])
    fdir = Path(st["filter"]["output_path"])
    kept = [r for p in sorted((fdir / "kept").glob("*.parquet"))
            for r in pq.read_table(p, columns=["id", "near_dedup_cluster",
                                               "near_dedup_cluster_size"]).to_pylist()]
    assert kept and all(r["near_dedup_cluster"] and r["near_dedup_cluster_size"] >= 1
                        for r in kept)
    rejected = [r for p in sorted((fdir / "rejected").glob("*.parquet"))
                for r in pq.read_table(p).to_pylist()]
    copy = next(r for r in rejected if r["id"].endswith("-copy"))
    original = next(r for r in kept if r["id"] == copy["id"].removesuffix("-copy"))
    assert copy["near_dedup_cluster"] == original["near_dedup_cluster"]
    assert original["near_dedup_cluster_size"] == 2
    assert "minhash_dedup_sig" not in pq.read_schema(next((fdir / "kept").glob("*.parquet"))).names


def test_dedup_index_drops_what_earlier_runs_kept(
    prefect_harness: None, sample_lines: list[str], tmp_path: Path, write_recipe: Any
) -> None:
    """A nightly refresh: day 2 repeats some of day 1 (exact copies, one-word variants, the
    same URL); the persistent index drops them as seen before; a re-run is a no-op; edit steps
    (PII, C4 line edits) run in the flow and are counted."""
    import yaml

    from flows.pipeline import run_recipe

    day1 = [json.loads(x) for x in sample_lines[0:450:3]]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "day1.jsonl").write_text("".join(json.dumps(d) + "\n" for d in day1))
    recipe = write_recipe(tmp_path / "refresh.yaml", inbox / "*.jsonl", tmp_path / "root")
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["ingest"]["incremental"] = True
    raw["stages"]["filter"] = {
        "filters": {"pii": {}, "c4_lines": {"filter_no_terminal_punct": False},
                    "gopher_quality": {}},
        "exact_dedup": {}, "minhash_dedup": {}, "url_dedup": {}, "dedup_index": "web"}
    recipe.write_text(yaml.safe_dump(raw))
    first_summary = run_recipe(str(recipe), until="filter")
    first = stages_of(first_summary)
    fdir = Path(first["filter"]["output_path"])
    kept1 = {r["id"]: r for p in sorted((fdir / "kept").glob("*.parquet"))
             for r in pq.read_table(p, columns=["id", "url", "text"]).to_pylist()}
    assert kept1 and len(list((fdir / "index").glob("*.parquet"))) >= 1
    scored = pq.read_schema(next((fdir / "kept").glob("*.parquet"))).names
    assert {"pii_emails", "c4_lines_removed"} <= set(scored)
    edits = Catalog(tmp_path / "root" / "catalog.duckdb").show(first_summary["run_id"])
    lines = [m for m in edits["metrics"] if m["name"] == "edits.c4_lines_removed"]
    assert lines and lines[0]["value"] > 0  # C4's line edits removed lines, and counted them

    # day 2: 50 new docs, 5 exact copies, 5 one-word variants, 5 new texts at an old URL
    long_kept = sorted((d for d in day1 if d["id"] in kept1), key=lambda d: -len(d["text"]))
    with_url = [d for d in day1 if d["id"] in kept1 and d.get("url")]
    assert len(long_kept) >= 10 and len(long_kept[9]["text"].split()) > 100
    copies = [{**d, "id": d["id"] + "-again"} for d in long_kept[:5]]
    variants = []
    for d in long_kept[5:10]:
        words = d["text"].split(" ")
        words[len(words) // 2] = "zeppelin"
        variants.append({**d, "id": d["id"] + "-variant", "text": " ".join(words), "url": None})
    fresh = [json.loads(x) for x in sample_lines[1:450:3]]
    long_fresh = sorted(fresh, key=lambda d: -len(d["text"]))[:5]
    moved = [{**f, "id": f["id"] + "-moved", "url": u["url"].replace("https://", "http://")}
             for f, u in zip(long_fresh, with_url[:5], strict=True)]
    day2 = [d for d in fresh if d not in long_fresh][:50] + copies + variants + moved
    (inbox / "day2.jsonl").write_text("".join(json.dumps(d) + "\n" for d in day2))
    second = run_recipe(str(recipe), until="filter")
    st = stages_of(second)
    assert st["ingest"]["docs_in"] == len(day2)
    assert all(s["docs_in"] == s["docs_kept"] + s["docs_rejected"] for s in second["stages"])
    rej = {r["id"]: r["reject_reason"]
           for p in sorted((Path(st["filter"]["output_path"]) / "rejected").glob("*.parquet"))
           for r in pq.read_table(p, columns=["id", "reject_reason"]).to_pylist()}
    assert {rej.get(d["id"]) for d in copies} == {"exact_dedup.seen_before"}
    assert {rej.get(d["id"]) for d in variants} == {"minhash_dedup.seen_before"}
    # a moved page is the old URL's new version: dropped, unless a quality rule got it first
    assert all(d["id"] in rej for d in moved)
    assert sum(rej[d["id"]] == "url_dedup.seen_before" for d in moved) >= 3

    con = __import__("duckdb").connect(str(tmp_path / "root" / "catalog.duckdb"), read_only=True)
    index = con.execute("SELECT seq, docs FROM dedup_index ORDER BY seq").fetchall()
    rules = dict(con.execute("SELECT rule, docs FROM rejections WHERE run_id = ?",
                             [second["run_id"]]).fetchall())
    con.close()
    assert [i[0] for i in index] == [1, 2] and index[0][1] == len(kept1)
    # the planted ones at least (the sample itself repeats a few texts across its days)
    assert rules["exact_dedup.seen_before"] >= 5 and rules["minhash_dedup.seen_before"] >= 5
    again = run_recipe(str(recipe), until="filter")  # nothing new: nothing to do
    assert [s["stage"] for s in again["stages"]] == ["ingest"]


def test_ablation_flow_shares_stages_and_decides(
    first_run: dict[str, Any], sample_slice: Path, write_recipe: Any
) -> None:
    """Two recipes, two seeds each: stages they share are cache hits; every metric gets a
    verdict vs the baseline in the catalog, the HTML report (plot with intervals) and Prefect
    artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.ablation import ablation

    base = write_recipe(first_run["tmp"] / "ab-base.yaml", sample_slice, first_run["root"],
                        seeds=[0, 1])
    looser = write_recipe(first_run["tmp"] / "ab-looser.yaml", sample_slice, first_run["root"],
                          seeds=[0, 1], min_words=20)
    out = ablation([str(base), str(looser)], boot=200, ablation_id="ablation-test")
    assert out["baseline"] == "slice" and set(out["runs"]) == {"slice", "slice#1"}
    catalog = Catalog(first_run["root"] / "catalog.duckdb")
    looser_run = catalog.show(out["runs"]["slice#1"])
    base_run = catalog.show(out["runs"]["slice"])
    cached = {s["stage"]: s["cached"] for s in looser_run["stages"]}
    version = {s["stage"]: s["version"] for s in looser_run["stages"]}
    base_version = {s["stage"]: s["version"] for s in base_run["stages"]}
    # the recipes differ from the filter's decision on: everything before it is shared
    for stage in ("ingest", "rewrite", "score"):
        assert cached[stage] and version[stage] == base_version[stage], stage
    assert version["filter"] != base_version["filter"]
    rows = out["rows"]
    bpb = next(r for r in rows if (r["task"], r["metric"]) == ("heldout", "bpb"))
    assert bpb["seeds"] == 2 and bpb["ci_low"] <= bpb["diff"] <= bpb["ci_high"]
    assert bpb["verdict"] in ("better", "worse", "can't tell") and bpb["mde"] > 0
    assert any(r["task"] == "aggregate" for r in rows)
    snr = {(s["task"], s["metric"]): s for s in out["snr"]}
    assert snr[("heldout", "bpb")]["noise"] > 0  # two seeds a side: noise is measured
    decisions = catalog.decisions("ablation-test")
    assert len(decisions) == len(rows)
    assert {d["run_b"] for d in decisions} == {out["runs"]["slice#1"]}
    assert all(d["snr"] is not None for d in decisions)
    html = Path(out["report"]).read_text()
    assert "data:image/png;base64," in html and "Signal and noise" in html
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["datamill-decisions", "datamill-snr", "datamill-ablation"])))
    assert {a.key for a in arts} >= {"datamill-decisions", "datamill-snr", "datamill-ablation"}


def test_eval_harness_cli_records_into_the_catalog(first_run: dict[str, Any]) -> None:
    """`datamill eval --harness` on a run's checkpoint with a local task YAML over a local
    JSONL file (no hub); its results land in the catalog's evals as harness/<task>."""
    pytest.importorskip("lm_eval", reason="the lmeval extra is not installed")
    from tasks.evalsets import build
    from tasks.tokenize import read_heldout

    st = stages_of(first_run["summary"])
    docs = read_heldout(Path(st["tokenize"]["output_path"])).to_pylist()
    items = build("final_word", docs, 10)  # short continuations: the model has 64 positions
    tmp = first_run["tmp"] / "harness"
    tmp.mkdir()
    (tmp / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp / "final_word.yaml").write_text(
        "task: datamill_final_word\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp / 'items.jsonl'}\noutput_type: multiple_choice\ntest_split: test\n"
        "doc_to_text: '{{context}}'\ndoc_to_target: '{{gold}}'\ndoc_to_choice: '{{choices}}'\n"
        "target_delimiter: ''\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    rid = first_run["summary"]["run_id"]
    out = subprocess.run([sys.executable, "-m", "flows.cli", "eval", rid, "--harness",
                          "datamill_final_word", "--include", str(tmp), "--json",
                          "--data-root", str(first_run["root"])],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    assert res[0]["n_samples"]["datamill_final_word"] == len(items)
    acc = res[0]["results"]["datamill_final_word"]["acc"]
    run = Catalog(first_run["root"] / "catalog.duckdb").show(rid)
    got = {(e["task"], e["metric"]): e["value"] for e in run["evals"]}
    assert got[("harness/datamill_final_word", "acc")] == pytest.approx(acc)
