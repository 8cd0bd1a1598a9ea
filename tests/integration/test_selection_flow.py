"""Both selectors in one recipe, through the real flow (Prefect, Dask, Ray, DuckDB): the DCLM
fastText stage trains and scores before ``score``, DSIR's features are stored by ``score``,
and the filter stage decides (``top_k`` on the classifier's score, ``dsir`` resampling). A
second recipe that changes only the decisions recomputes no score; ``datamill sweep`` reads
the stored scores."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slow
SOFTWARE = {"postgresql-docs", "python-docs", "django-docs", "apache-httpd-docs",
            "debian-handbook"}
FT = {"use": "tasks.select.fasttext_stage:DclmFastText", "after": "rewrite",
      # few buckets, more epochs than DCLM's (tuned for 400k documents, not ~100)
      "with": {"bucket": 50_000, "epoch": 25, "lr": 0.5, "threads": 1}}


def _recipe(path: Path, base: Path, ref: Path, top: float, dsir: dict[str, Any]) -> Path:
    recipe = yaml.safe_load(base.read_text())
    recipe["stages"]["filter"] = {
        "filters": {"gopher_quality": {}}, "exact_dedup": {},
        "corpus": {"top_k": {"column": "dclm_fasttext_score", "percent": top},
                   "dsir": {"target": {"paths": [str(ref)]}, **dsir}}}
    recipe["stages"]["extra"] = [{**FT, "with": {**FT["with"],
                                                 "reference": {"paths": [str(ref)]}}}]
    # a short training and evaluation: the selectors decide before them
    recipe["stages"]["train"]["max_tokens"] = 8 * 64 * 4
    recipe["stages"]["evaluate"].update(max_docs=5, tasks=[])
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def selection(prefect_harness: None, sample_slice: Path, sample_lines: list[str],
              tmp_path_factory: pytest.TempPathFactory, write_recipe: Any) -> dict[str, Any]:
    from flows.pipeline import run_recipe

    tmp = tmp_path_factory.mktemp("selection")
    # the reference: English documentation pages that are not in the slice (every 5th line)
    ref = tmp / "reference.jsonl"
    docs = [json.loads(x) for i, x in enumerate(sample_lines) if i % 5]
    ref.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in docs
                           if d["source"] in SOFTWARE and d["lang"] == "en"))
    base = write_recipe(tmp / "base.yaml", sample_slice, tmp / "root")
    first = run_recipe(str(_recipe(tmp / "a.yaml", base, ref, 20, {"percent": 20})))
    second = run_recipe(str(_recipe(tmp / "b.yaml", base, ref, 10, {"k": 15, "seed": 1})),
                        until="filter")
    return {"first": first, "second": second, "root": tmp / "root"}


def _stage(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in summary["stages"] if s["stage"] == name)


def _manifest(stage: dict[str, Any]) -> dict[str, Any]:
    return json.loads((Path(stage["output_path"]) / "manifest.json").read_text())


def _read(root: Path, rels: list[str], cols: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(root / r, columns=cols) for r in rels
                             if (root / r).is_file()])


def test_the_classifier_stage_runs_before_score_and_accounts(selection: dict[str, Any]) -> None:
    s = selection["first"]
    assert s["status"] == "completed"
    order = [x["stage"] for x in s["stages"]]
    assert order.index("rewrite") < order.index("dclm_fasttext") < order.index("score") \
        < order.index("filter") < order.index("evaluate")
    for x in s["stages"]:
        assert x["docs_in"] == x["docs_kept"] + x["docs_rejected"], x["stage"]
    ft = _manifest(_stage(s, "dclm_fasttext"))
    assert ft["training"]["positives"] > 50 and ft["training"]["negatives"] > 50
    assert (selection["root"] / ft["outputs"]["model"]).is_file()
    assert ft["docs_in"] == _stage(s, "ingest")["docs_kept"]
    from tasks.catalog import Catalog

    shown = Catalog(selection["root"] / "catalog.duckdb", snapshot=True).show(s["run_id"])
    metrics = {m["name"]: m["value"] for m in shown["metrics"]}
    assert metrics["dclm_fasttext.positives"] == ft["training"]["positives"]
    assert metrics["dclm_fasttext.negatives"] == ft["training"]["negatives"]


def test_both_selectors_decide_in_the_filter_stage(selection: dict[str, Any]) -> None:
    root, s = selection["root"], selection["first"]
    m = _manifest(_stage(s, "filter"))
    rej = m["rejections"]
    passing = m["docs_in"] - sum(v["first"] for k, v in rej.items()
                                 if k.startswith("gopher_quality."))
    keep = math.ceil(passing * 0.2)
    assert rej["top_k.below_cut"]["alone"] == passing - keep
    assert rej["dsir.not_sampled"]["alone"] == passing - keep
    d = m["corpus"]["dsir"]
    assert d["ranked"] == passing and d["kept"] == keep
    assert d["kl_target_selected"] < d["kl_target_uniform"]
    cols = ["source", "dclm_fasttext_score", "dsir_score"]
    kept = _read(root, m["outputs"]["kept"], cols)
    rejected = _read(root, m["outputs"]["rejected"], cols + ["reject_reason"])
    assert "dsir_features" not in pq.read_schema(root / m["outputs"]["kept"][0]).names
    everyone = pa.concat_tables([kept, rejected.select(cols)])
    base_rate = sum(x in SOFTWARE for x in everyone.column("source").to_pylist()) / len(everyone)
    got = kept.column("source").to_pylist()
    assert kept.column("dclm_fasttext_score").null_count == 0
    assert kept.column("dsir_score").null_count == 0
    # the documents both selectors kept are mostly documentation pages
    assert len(got) > 0 and sum(x in SOFTWARE for x in got) / len(got) >= max(0.5, 3 * base_rate)


def test_a_new_keep_setting_recomputes_no_score(selection: dict[str, Any]) -> None:
    a, b = selection["first"], selection["second"]
    assert b["status"] == "completed"
    for name in ("ingest", "dclm_fasttext", "score"):
        assert _stage(a, name)["version"] == _stage(b, name)["version"], name
        assert _stage(b, name)["cached"], name
    fa, fb = _stage(a, "filter"), _stage(b, "filter")
    assert fa["version"] != fb["version"] and not fb["cached"]
    m = _manifest(fb)
    assert m["corpus"]["dsir"]["kept"] == 15
    assert "tokenize" not in [x["stage"] for x in b["stages"]]  # --until filter


def test_sweep_reads_the_stored_scores(selection: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    root = selection["root"]
    before = sorted(p.relative_to(root) for p in (root / "stages").rglob("*"))
    run_id = selection["first"]["run_id"]
    capsys.readouterr()
    assert main(["sweep", run_id, "--score", "dclm_fasttext_score", "--keep", "5,10,20",
                 "--data-root", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = _manifest(_stage(selection["first"], "filter"))
    passing = m["corpus"]["dsir"]["ranked"]  # the documents no document rule rejected
    assert [r["keep_percent"] for r in out["settings"]] == [5, 10, 20]
    for r in out["settings"]:
        assert r["pool_docs"] == passing
        assert r["docs"] == math.ceil(passing * r["keep_percent"] / 100)
        assert sum(x["docs"] for x in r["sources"]) == r["docs"]
        assert sum(x["bytes"] for x in r["sources"]) == r["bytes"]
    # the 20 % setting is the run's own top_k decision: the same documents
    assert out["settings"][2]["docs"] == passing - m["rejections"]["top_k.below_cut"]["alone"]
    assert main(["sweep", run_id, "--score", "dsir_score", "--keep", "10",
                 "--data-root", str(root)]) == 0
    text = capsys.readouterr().out
    assert "keep 10 %" in text and "wikipedia-summaries" in text
    assert sorted(p.relative_to(root) for p in (root / "stages").rglob("*")) == before
    assert main(["sweep", run_id, "--score", "nope", "--data-root", str(root)]) == 1
    assert main(["sweep", "no-such-run", "--score", "dsir_score", "--data-root", str(root)]) == 1
    assert "no filter stage" in capsys.readouterr().err
