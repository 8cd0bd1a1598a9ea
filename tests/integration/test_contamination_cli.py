"""``datamill contamination RUN`` on real runs: an audit of the shared sample run (items
planted from its training documents; its own evaluation items, whose counts the run stored)
and a run with the ``decontaminate`` stage through the real flow, whose stored report the
command prints back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from flows.cli import main
from tasks.tokenize import heldout_mask

pytestmark = pytest.mark.slow
CLEAN = ["zebra quantum marmalade orbit velvet canyon whisper lantern pickle galaxy "
         "thunder meadow saxophone", "purple hedgehog violin tundra compass biscuit nebula "
         "harbor quilt falcon pepper glacier ribbon"]


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["contamination", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _stages(root: Path, run_id: str) -> dict[str, dict[str, Any]]:
    from tasks.catalog import Catalog

    run = Catalog(root / "catalog.duckdb", snapshot=True).show(run_id)
    return {s["stage"]: {**s, "manifest": json.loads(
        (Path(s["output_path"]) / "manifest.json").read_text())} for s in run["stages"]}


def _training_docs(root: Path, manifest: dict[str, Any], fraction: float, k: int
                   ) -> list[dict[str, Any]]:
    t = pa.concat_tables(pq.read_table(root / p, columns=["id", "text", "source"])
                         for p in manifest["outputs"]["kept"])
    t = t.filter(pa.array(~heldout_mask(t.column("id").combine_chunks(), fraction)))
    return [d for d in t.to_pylist() if len(d["text"].split()) > 60][:k]


def test_audit_of_the_sample_run(sample_run: dict[str, Any], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich: one line per table row
    root, run_id = sample_run["root"], sample_run["run_id"]
    stages = _stages(root, run_id)
    leaked = _training_docs(root, stages["filter"]["manifest"], 0.1, 3)
    evals = tmp_path / "planted.jsonl"
    evals.write_text("".join(json.dumps({"id": f"leak{i}", "text": " ".join(
        d["text"].split()[10:30])}) + "\n" for i, d in enumerate(leaked))
        + "".join(json.dumps({"id": f"clean{i}", "text": t}) + "\n"
                  for i, t in enumerate(CLEAN)))
    out = _run_json(capsys, run_id, "--eval", str(evals), "--data-root", str(root),
                    "--max-items", "40")
    ng = out["ngram"]
    assert ng["mode"] == "audit" and ng["documents_stage"] == "filter"
    planted = ng["tasks"]["file/planted"]
    assert planted["items"] == 5 and planted["items_checked"] == 5
    assert planted["items_contaminated"] == 3
    assert set(planted["contaminated_ids"]) == {"leak0", "leak1", "leak2"}
    assert planted["docs_affected"] >= 3
    # the run's own items: the counts its evaluate stage stored
    from tasks.catalog import Catalog

    evals_rows = Catalog(root / "catalog.duckdb", snapshot=True).show(run_id)["evals"]
    stored = {r["task"]: r["value"] for r in evals_rows if r["metric"] == "items"}
    for task in ("next_sentence", "final_word"):
        assert ng["tasks"][task]["items"] == stored[task]
    assert ng["tasks"]["heldout"]["items"] == stages["evaluate"]["manifest"]["docs_in"]
    filt = stages["filter"]
    assert ng["scanned_docs"] + ng["heldout_docs"] == filt["docs_kept"]
    assert ng["heldout_docs"] == stages["tokenize"]["manifest"]["heldout_docs"]
    mk = out["mink"]
    assert mk["k"] == 20 and set(mk["tasks"]) == set(ng["tasks"])
    for task, r in mk["tasks"].items():
        assert r["items"] == min(40, ng["tasks"][task]["items"])
        assert 0 <= r["flagged"] <= r["items"] and r["reference_passages"] > 0
        assert r["threshold"] is not None and 0 <= r["auc_vs_reference"] <= 1
    # the tables show the same figures
    assert main(["contamination", run_id, "--eval", str(evals), "--data-root", str(root),
                 "--no-mink"]) == 0
    text = capsys.readouterr().out
    assert "file/planted" in text and "Min-K% Prob: not computed" in text
    line = next(x for x in text.splitlines() if "file/planted" in x)
    assert [c.strip() for c in line.split("│")[2:5]] == ["5", "5", "3"]
    assert main(["contamination", "no-such-run", "--data-root", str(root)]) == 1


def test_the_stage_drops_planted_leaks_and_the_command_prints_its_report(
        prefect_harness: None, sample_lines: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from flows.pipeline import run_recipe

    docs = [json.loads(x) for x in sample_lines[1::7]]
    docs = [d for d in docs if d["lang"] == "en" and len(d["text"].split()) > 80][:60]
    train_ids = [d["id"] for d, h in zip(docs, heldout_mask(
        pa.array([d["id"] for d in docs]), 0.1), strict=True) if not h]
    sources = [json.loads(x) for x in sample_lines[2::7] if '"lang": "en"' in x][:4]
    items = [" ".join(s["text"].split()[:25]) for s in sources]
    evals = tmp_path / "evals.jsonl"
    evals.write_text("".join(json.dumps({"id": f"q{i}", "text": t}) + "\n"
                             for i, t in enumerate(items + CLEAN)))
    leaky = {train_ids[0]: 0, train_ids[5]: 1, train_ids[9]: 1}
    for d in docs:
        if d["id"] in leaky:
            w = items[leaky[d["id"]]].split()
            d["text"] += "\n\n" + " ".join(w[2:17]).upper()
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(d) + "\n" for d in docs))
    recipe = {"name": "decontam", "data_root": str(tmp_path / "root"),
              "input": {"paths": [str(inputs)]},
              "stages": {"rewrite": None, "filter": {"filters": {}},
                         "tokenize": {"heldout_fraction": 0.1},
                         "extra": [{"use": "tasks.decontam.stage:Decontaminate",
                                    "after": "filter",
                                    "with": {"paths": [str(evals)], "own_tasks": True}}]}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    summary = run_recipe(str(tmp_path / "r.yaml"), until="filter")
    assert summary["status"] == "completed", summary
    st = next(s for s in summary["stages"] if s["stage"] == "decontaminate")
    m = json.loads((Path(st["output_path"]) / "manifest.json").read_text())
    assert m["docs_in"] == m["docs_kept"] + m["docs_rejected"] == len(docs)
    rej = pa.concat_tables(pq.read_table(tmp_path / "root" / p)
                           for p in m["outputs"]["rejected"])
    reasons = dict(zip(rej.column("id").to_pylist(), rej.column("reject_reason").to_pylist(),
                       strict=True))
    # the planted leaks, named after the file; any other drop shares text with the run's own
    # held-out items (documents of one source share boilerplate)
    assert {i for i, r in reasons.items() if r == "decontam.file/evals"} == set(leaky)
    own = {"decontam.heldout", "decontam.next_sentence", "decontam.final_word"}
    assert {r for i, r in reasons.items() if i not in leaky} <= own
    assert m["rejections"]["decontam.file/evals"] == {"first": 3, "alone": 3}
    stored = json.loads((tmp_path / "root" / m["outputs"]["report"]).read_text())
    assert stored == m["contamination"]
    r = stored["tasks"]["file/evals"]
    assert (r["items"], r["items_contaminated"], r["docs_affected"]) == (6, 2, 3)
    assert set(r["contaminated_ids"]) == {"q0", "q1"}
    out = _run_json(capsys, summary["run_id"], "--data-root", str(tmp_path / "root"))
    assert out["ngram"]["mode"] == "stage"
    assert out["ngram"]["tasks"] == stored["tasks"]
    assert out["ngram"]["docs_rejected"] == len(reasons) and out["mink"] is None
    assert stored["tasks"]["heldout"]["items"] > 0
    from tasks.catalog import Catalog

    metrics = {r["name"]: r["value"] for r in Catalog(
        tmp_path / "root" / "catalog.duckdb", snapshot=True).show(summary["run_id"])["metrics"]}
    assert metrics["decontam.file/evals.items_contaminated"] == 2
    assert metrics["decontam.file/evals.docs_affected"] == 3
    assert "train" in out["mink_unavailable"]
