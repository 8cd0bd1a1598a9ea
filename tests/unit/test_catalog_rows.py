"""The catalog's many-row writes (one statement per chunk of rows): every row back, in order
(rejections are read in rowid order and span two chunks),
with ints, floats and nulls mixed in a column."""

from __future__ import annotations

from pathlib import Path

from tasks.catalog import Catalog
from tasks.catalog_file import insert_rows


def test_rows_round_trip_across_chunks(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.start_run("r1", "recipe", "/r.yaml", {})
    metrics = [(step, "loss", step if step % 2 else step + 0.5) for step in range(600)]
    cat.record_metrics("r1", metrics, seed=3)  # 600 rows: three statements of <= 250
    rejections = {f"rule{i:03d}": {"first": i, "alone": 2 * i} for i in range(300)}  # 2 chunks
    cat.record_stage("r1", {"stage": "filter", "version": "v", "docs_in": 10, "docs_kept": 4,
                            "docs_rejected": 6, "rejections": rejections}, 1.5, "/out", False)
    checks = [{"expectation": f"e{i}", "column": None if i % 3 else "text", "success": i != 4,
               "offending": i, "observed": None if i % 2 else f"x{i}"} for i in range(51)]
    cat.record_contracts("r1", "filter", "v", "documents", 1000, checks)
    run = cat.show("r1")
    assert [(m["step"], m["name"], m["value"], m["seed"]) for m in run["metrics"]] == \
        [(s, n, float(v), 3) for s, n, v in metrics]
    assert [(r["rule"], r["docs"], r["docs_alone"]) for r in run["rejections"]] == \
        [(k, v["first"], v["alone"]) for k, v in sorted(rejections.items())]
    got = cat.contracts("r1")
    assert [(c["expectation"], c["column_name"], c["success"], c["offending"], c["observed"])
            for c in got] == [(c["expectation"], c["column"], c["success"], c["offending"],
                               c["observed"]) for c in checks]
    assert not cat.contract_held("filter", "v", "documents")
    verdicts = [{"task": f"t{i}", "metric": "bpb", "a": 1.0, "b": 0.9 + i / 100, "diff": -0.1,
                 "ci_low": -0.2, "ci_high": 0.0, "mde": None if i else 0.05, "items": 100 + i,
                 "seeds": 1, "verdict": "better", "signal": None if i % 2 else 0.1 * i,
                 "note": "" if i % 2 else f"n{i}"} for i in range(7)]
    cat.record_decisions("r0", "r1", verdicts, ablation="abl")
    got_d = cat.decisions("abl")
    assert [(d["task"], d["b"], d["mde"], d["items"], d["signal"], d["note"]) for d in got_d] \
        == [(v["task"], v["b"], v["mde"], v["items"], v["signal"], v["note"] or None)
            for v in verdicts]


def test_insert_rows_of_nothing_runs_no_statement() -> None:
    class NoCalls:
        def execute(self, *a: object) -> None:
            raise AssertionError("no statement for no rows")

    insert_rows(NoCalls(), "INSERT INTO metrics", [])
