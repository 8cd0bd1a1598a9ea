"""A corpus that breaks the data contract fails the flow before training, naming the
expectation and its offending count in the run's error and the catalog's contracts table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.catalog import Catalog
from tasks.contracts import ContractError

pytestmark = pytest.mark.slow


def test_broken_contract_fails_before_training(prefect_harness: None, sample_lines: list[str],
                                               tmp_path: Path, write_recipe: Any) -> None:
    from flows.pipeline import run_recipe

    docs = [json.loads(line) for line in sample_lines[0::20]]
    # ids repeated across files and odd language tags no longer break it: ingest renames the
    # later ids and normalises or rejects the tags (docs/outputs.md). A recipe limit does:
    # contracts.max_text_chars below what ingest keeps
    limit = 600
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    root = tmp_path / "root"
    recipe = write_recipe(tmp_path / "r.yaml", inbox / "*.jsonl", root)
    raw = yaml.safe_load(recipe.read_text())
    raw["contracts"] = {"max_text_chars": limit}
    recipe.write_text(yaml.safe_dump(raw))

    with pytest.raises(ContractError) as err:
        run_recipe(str(recipe))
    cat = Catalog(root / "catalog.duckdb")
    run = cat.runs()[0]
    shown = cat.show(run["run_id"])
    ingest = next(s for s in shown["stages"] if s["stage"] == "ingest")
    kept = [t for rel in json.loads((Path(ingest["output_path"]) / "manifest.json")
                                    .read_text())["outputs"]["kept"]
            for t in pq.read_table(root / rel, columns=["text"]).column("text").to_pylist()]
    too_long = sum(len(t) > limit for t in kept)
    assert 0 < too_long < len(kept)
    msg = str(err.value)
    assert f"expect_column_value_lengths_to_be_between(text): {too_long} offending" in msg
    assert shown["status"] == "failed" and "expect_column_value_lengths_to_be_between" in \
        shown["error"]
    assert [s["stage"] for s in shown["stages"]] == ["ingest"]  # nothing trained
    broken = {(c["expectation"], c["column_name"]): c["offending"]
              for c in cat.contracts(run["run_id"]) if not c["success"]}
    assert broken == {("expect_column_value_lengths_to_be_between", "text"): too_long}
