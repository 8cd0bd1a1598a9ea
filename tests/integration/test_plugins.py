"""A user's own document filter, corpus rule and stage — each one file in a package outside
``tasks/`` (tests/plugins/acme_data), each one recipe line — through the real flow (Prefect,
Dask, Ray, DuckDB)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slow
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture(scope="module")
def plugin_run(prefect_harness: None, sample_slice: Path, tmp_path_factory: pytest.TempPathFactory,
               write_recipe: Any) -> dict[str, Any]:
    from flows.pipeline import run_recipe
    from infra import dask as dask_engine

    # the user's package must import in this process and on the Dask workers: restart the
    # workers so they start with it on their path
    sys.path.insert(0, str(PLUGINS))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS),
                                                             os.environ.get("PYTHONPATH")]))
    dask_engine.shutdown()
    tmp = tmp_path_factory.mktemp("plugins")
    loud = [json.dumps({"id": f"loud-{i}", "text": " ".join(["THIS IS A VERY LOUD SENTENCE "
                                                              "ABOUT THE WEATHER."] * 40),
                        "source": "loud", "lang": "en"}) for i in range(3)]
    inputs = tmp / "in.jsonl"
    inputs.write_text(sample_slice.read_text() + "\n".join(loud) + "\n")
    path = write_recipe(tmp / "recipe.yaml", inputs, tmp / "root")
    recipe = yaml.safe_load(path.read_text())
    f = recipe["stages"]["filter"]
    f["filters"]["acme_data.shouting"] = {"max_upper_frac": 0.5}  # one line: a filter
    f["corpus"] = {"acme_data.longest": {"percent": 90}}  # one line: a corpus rule
    recipe["stages"]["extra"] = [{"use": "acme_data.tagging:TagStage", "after": "filter",
                                  "with": {"min_chars": 1500}}]  # one line: a stage
    # a short training and evaluation: the plugins act before them (the run must reach them)
    recipe["stages"]["train"]["max_tokens"] = 8 * 64 * 4
    recipe["stages"]["evaluate"].update(max_docs=5, tasks=[])
    path.write_text(yaml.safe_dump(recipe))
    summary = run_recipe(str(path))
    return {"summary": summary, "root": tmp / "root"}


def _stage(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in summary["stages"] if s["stage"] == name)


def _manifest(stage: dict[str, Any]) -> dict[str, Any]:
    return json.loads((Path(stage["output_path"]) / "manifest.json").read_text())


def test_the_run_completes_with_the_stage_between_filter_and_tokenize(
        plugin_run: dict[str, Any]) -> None:
    s = plugin_run["summary"]
    assert s["status"] == "completed"
    order = [x["stage"] for x in s["stages"]]
    assert order.index("filter") < order.index("tag") < order.index("tokenize")
    assert "train" in order and "evaluate" in order
    for x in s["stages"]:
        assert x["docs_in"] == x["docs_kept"] + x["docs_rejected"], x["stage"]


def test_the_document_filter_and_corpus_rule_decide(plugin_run: dict[str, Any]) -> None:
    root = plugin_run["root"]
    m = _manifest(_stage(plugin_run["summary"], "filter"))
    rej = m["rejections"]
    assert rej["shouting.too_loud"]["first"] == 3  # the three loud documents
    rejected = [r for rel in m["outputs"]["rejected"] if (root / rel).is_file()
                for r in pq.read_table(root / rel, columns=["id", "reject_reason"]).to_pylist()]
    assert {r["id"] for r in rejected if r["reject_reason"] == "shouting.too_loud"} == {
        "loud-0", "loud-1", "loud-2"}
    # the corpus rule ranks the documents that passed the document rules, keeps 90 %
    doc_rules = sum(v["first"] for k, v in rej.items()
                    if k.startswith(("gopher_quality.", "shouting.")))
    passing = m["docs_in"] - doc_rules
    assert rej["longest.too_short"]["alone"] == passing - math.ceil(passing * 0.9)
    kept = [r for rel in m["outputs"]["kept"]
            for r in pq.read_table(root / rel, columns=["gopher_quality_n_words"]).to_pylist()]
    dropped_ids = {r["id"] for r in rejected if r["reject_reason"] == "longest.too_short"}
    assert dropped_ids and len(kept) == m["docs_kept"]


def test_the_stage_tags_and_drops_with_a_reason(plugin_run: dict[str, Any]) -> None:
    root, s = plugin_run["root"], plugin_run["summary"]
    tag, filt, tok = (_stage(s, n) for n in ("tag", "filter", "tokenize"))
    assert tag["docs_in"] == filt["docs_kept"]
    assert tok["docs_in"] == tag["docs_kept"]
    m = _manifest(tag)
    kept = [pq.read_table(root / rel) for rel in m["outputs"]["kept"]]
    assert all("length_bucket" in t.column_names for t in kept)
    assert min(len(x) for t in kept for x in t.column("text").to_pylist()) >= 1500
    assert m["rejections"]["tag.too_short"]["first"] == tag["docs_rejected"] > 0


def test_stages_command_lists_the_contract(plugin_run: dict[str, Any]) -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "flows.cli", "stages"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    for name in ("ingest", "rewrite", "score", "filter", "recycle", "tokenize", "train",
                 "evaluate"):
        assert f"\n{name} " in f"\n{out}", name
    assert "stages.filter" in out and "GPU when the cluster has one" in out


def test_the_guide_shows_the_plugin_rule_as_it_is() -> None:
    """docs/adding-a-stage.md's corpus-rule example is this package's file, word for word."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    guide = (root / "docs" / "adding-a-stage.md").read_text()
    code = (root / "tests" / "plugins" / "acme_data" / "longest.py").read_text()
    start = guide.index('"""A corpus rule: keep the longest')
    assert guide[start:guide.index("```", start)] == code
