"""The refresh flow in-process (Prefect test harness, real Dask, Ray, DuckDB, GX): the first
refresh trains from scratch and is promoted; the next one takes only the new file, drops what
the first kept (persistent dedup index), continues the promoted model with replay, scores the
promoted model on its held-out data and decides; a third with no new input does nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.catalog import Catalog

pytestmark = pytest.mark.slow


def _stages(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in summary["stages"]}


def test_refresh_promotes_continues_and_idles(prefect_harness: None, sample_lines: list[str],
                                              tmp_path: Path, write_recipe: Any) -> None:
    from flows.refresh import refresh

    root, inbox = tmp_path / "root", tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("\n".join(sample_lines[0::8]) + "\n")
    recipe = write_recipe(tmp_path / "r.yaml", inbox / "*.jsonl", root)
    raw = yaml.safe_load(recipe.read_text())
    raw["refresh"] = {"boot": 300}
    raw["stages"]["train"]["max_tokens"] = 8 * 64 * 6  # 6 steps: the flow, not the model
    raw["stages"]["evaluate"].update(max_docs=10, tasks=[])
    recipe.write_text(yaml.safe_dump(raw))

    first = refresh(str(recipe))
    assert first["status"] == "completed"
    kept_first = {i for s in first["stages"] if s["stage"] == "filter"
                  for f in (Path(s["output_path"]) / "kept").glob("*.parquet")
                  for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
    assert first["promotion"]["promoted"] and first["promotion"]["baseline_run"] is None
    cat = Catalog(root / "catalog.duckdb")
    assert cat.promoted("slice")["run_id"] == first["run_id"]
    # the gates ran on ingest, filter and tokenize outputs and held
    gates = cat.contracts(first["run_id"])
    assert {g["stage"] for g in gates} == {"ingest", "filter", "tokenize"}
    assert all(g["success"] for g in gates)

    # a new snapshot: new documents plus copies of documents the first refresh kept
    (inbox / "b.jsonl").write_text("\n".join(sample_lines[4::8] + sample_lines[0:40:8]) + "\n")
    second = refresh(str(recipe))
    st = _stages(second)
    assert st["ingest"]["docs_in"] == len(sample_lines[4::8]) + 5  # only the new file
    run = cat.show(second["run_id"])
    seen = {r["rule"]: r["docs"] for r in run["rejections"]}
    copies = [json.loads(line)["id"] for line in sample_lines[0:40:8]]
    # the copies the first refresh kept are dropped by the index (the others fail gopher again)
    assert seen.get("exact_dedup.seen_before", 0) == len(kept_first & set(copies)) > 0
    train = json.loads((Path(st["train"]["output_path"]) / "manifest.json").read_text())
    assert train["init"]["run_id"] == first["run_id"]  # continued the promoted model
    assert train["summary"]["replay_data"]
    assert "baseline" in st  # the promoted model scored on this run's held-out data
    p = second["promotion"]
    print(f"second refresh: {'promoted' if p['promoted'] else 'not promoted'}: {p['reason']}")
    assert p["baseline_run"] == first["run_id"] and p["rule"] == "not_worse"
    with cat.connect(read_only=True) as con:
        n = con.execute("SELECT count(*) FROM decisions WHERE run_a = ? AND run_b = ?",
                        [first["run_id"], second["run_id"]]).fetchone()[0]
    assert n >= 1
    history = cat.promotions("slice")
    assert [h["run_id"] for h in history] == [first["run_id"], second["run_id"]]
    expected = second["run_id"] if p["promoted"] else first["run_id"]
    assert cat.promoted("slice")["run_id"] == expected

    # `datamill promoted` prints the promoted run and its checkpoint (in a process of its own:
    # capturing this one's output would leave Prefect's console handler a closed stream)
    res = subprocess.run([sys.executable, "-m", "flows.cli", "promoted", "slice", "--data-root",
                          str(root), "--json"], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["run_id"] == expected and Path(out["checkpoints"][0]).is_dir()

    # no new input: a quick completed run that trains nothing and promotes nothing
    t0 = time.perf_counter()
    third = refresh(str(recipe))
    took = time.perf_counter() - t0
    assert third["status"] == "completed"
    assert [s["stage"] for s in third["stages"]] == ["ingest"]
    assert third["promotion"] == {"promoted": False, "reason": "nothing to do: no new input"}
    assert cat.promoted("slice")["run_id"] == expected
    print(f"nothing-to-do refresh: {took:.1f}s")
    assert took < 30, took


def test_a_refresh_that_dies_after_deciding_leaves_no_trace(
        prefect_harness: None, sample_lines: list[str], tmp_path: Path, write_recipe: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after its promotion decision (here: the report fails right after it), a refresh
    promotes nothing, consumes no input and adds nothing to the dedup index; the next refresh,
    with no new input, trains nothing (its stages are cached), is promoted once it completes,
    and finds no document "seen before"."""
    import flows.pipeline
    from flows.refresh import refresh

    root, inbox = tmp_path / "root", tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("\n".join(sample_lines[0::10]) + "\n")
    recipe = write_recipe(tmp_path / "r.yaml", inbox / "*.jsonl", root)
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["train"]["max_tokens"] = 8 * 64 * 4
    raw["stages"]["evaluate"].update(max_docs=10, tasks=[])
    recipe.write_text(yaml.safe_dump(raw))

    def killed(*_: Any, **__: Any) -> str:
        raise RuntimeError("killed after the promotion decision")

    with monkeypatch.context() as m:
        m.setattr(flows.pipeline, "_publish", killed)
        with pytest.raises(RuntimeError, match="killed after the promotion decision"):
            refresh(str(recipe))
    cat = Catalog(root / "catalog.duckdb")
    failed = cat.runs()[0]
    assert failed["status"] == "failed"
    assert cat.promoted("slice") is None and cat.promotions("slice") == []
    assert cat.consumed_hashes("slice") == set()
    assert cat.dedup_parts("refresh-slice") == []

    again = refresh(str(recipe))  # no new input: the same file, not consumed by a failed run
    assert again["status"] == "completed"
    st = _stages(again)
    assert st["train"]["cached"] and st["filter"]["cached"]  # nothing trained again
    assert cat.promoted("slice")["run_id"] == again["run_id"]
    assert again["promotion"]["promoted"]
    rules = {r["rule"] for r in cat.show(again["run_id"])["rejections"]}
    assert not {r for r in rules if r.endswith(".seen_before")}
    assert len(cat.dedup_parts("refresh-slice")) == 1
