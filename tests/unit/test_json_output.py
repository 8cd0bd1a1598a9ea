"""Strict JSON from every --json, and `compare` explaining runs that share no scored item."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.cli.common import print_json, strict_json
from tasks.catalog import Catalog
from tasks.compare import overlap


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN and +-Infinity, as jq and JSON.parse do."""
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_print_json_writes_null_for_undefined_numbers(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    obj = {"snr": float("nan"), "rows": [{"a": float("inf")}, (np.float32("nan"), -np.inf)],
           "n": np.int64(7), "ok": np.bool_(True), "x": 0.5,
           "at": dt.datetime(2025, 1, 2, tzinfo=dt.UTC), "path": Path("/a/b")}
    with pytest.raises(ValueError):
        strict_loads(json.dumps(obj, default=str))  # what the commands printed before
    print_json(obj)
    out = strict_loads(capsys.readouterr().out)
    assert out == {"snr": None, "rows": [{"a": None}, [None, None]], "n": 7, "ok": True,
                   "x": 0.5, "at": "2025-01-02 00:00:00+00:00", "path": "/a/b"}
    assert strict_json([1.0, float("-inf")]) == [1.0, None]


def _evaluated_run(cat: Catalog, root: Path, run_id: str, ids: list[str]) -> None:
    """A run whose evaluate stage scored the held-out documents ``ids`` (bpb and one task)."""
    folder = root / "stages" / "evaluate" / run_id
    folder.mkdir(parents=True)
    rows = [{"task": "heldout", "metric": "bpb", "item_id": i, "source": "s", "num": 1.0 + k,
             "den": 2.0, "checkpoint": "final"} for k, i in enumerate(ids)]
    rows += [{"task": "next_sentence", "metric": m, "item_id": i, "source": "s",
              "num": float(k % 2), "den": 1.0, "checkpoint": "final"}
             for k, i in enumerate(ids) for m in ("acc", "acc_norm")]
    pq.write_table(pa.Table.from_pylist(rows), folder / "items.parquet")
    cat.start_run(run_id, "refresh-me", "r.yaml", {})
    cat.record_stage(run_id, {"stage": "evaluate", "version": run_id, "docs_in": len(ids),
                              "docs_kept": len(ids), "docs_rejected": 0}, 1.0, str(folder),
                     False)


def test_compare_explains_runs_without_shared_items(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cat = Catalog(tmp_path / "catalog.duckdb")
    _evaluated_run(cat, tmp_path, "night-1", [f"old-{i}" for i in range(12)])
    _evaluated_run(cat, tmp_path, "night-2", [f"new-{i}" for i in range(9)])

    rc = main(["compare", "night-1", "night-2", "--data-root", str(tmp_path), "--boot", "50"])
    out = capsys.readouterr()
    assert rc == 1 and out.out == ""
    # which runs, how many items each (held-out docs + task items), zero shared, what to do
    assert "night-1 (refresh-me) scored 24 items" in out.err
    assert "night-2 (refresh-me) scored 18 items" in out.err
    assert "0 items in common" in out.err and "--on night-1" in out.err
    assert not (tmp_path / "compare").exists()  # no empty decision report written

    rc = main(["compare", "night-1", "night-2", "--json", "--data-root", str(tmp_path)])
    got = strict_loads(capsys.readouterr().out)
    assert rc == 1
    assert got["status"] == "no_shared_items" and got["shared_items"] == 0
    assert [(r["run_id"], r["items"]) for r in got["runs"]] == [("night-1", 24), ("night-2", 18)]
    assert cat.decisions() == []


def test_overlap_counts_items_every_seed_scored(tmp_path: Path) -> None:
    def stage(name: str, ids: list[str]) -> Path:
        (tmp_path / name).mkdir()
        pq.write_table(pa.Table.from_pylist(
            [{"task": "heldout", "metric": "bpb", "item_id": i, "source": "s", "num": 1.0,
              "den": 1.0, "checkpoint": "final"} for i in ids]), tmp_path / name / "items.parquet")
        return tmp_path / name

    a = [stage("a0", ["x", "y", "z"]), stage("a1", ["x", "y"])]  # two seeds: x, y in both
    b = [stage("b0", ["y", "z"])]
    assert overlap({"a": a, "b": b}) == {"items": {"a": 2, "b": 2}, "shared": 1}
