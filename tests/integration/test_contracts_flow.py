"""A corpus that breaks the data contract fails the flow before training, naming the
expectation and its offending count in the run's error and the catalog's contracts table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.catalog import Catalog
from tasks.contracts import ContractError

pytestmark = pytest.mark.slow


def test_broken_contract_fails_before_training(prefect_harness: None, sample_lines: list[str],
                                               tmp_path: Path, write_recipe: Any) -> None:
    from flows.pipeline import run_recipe

    docs = [json.loads(line) for line in sample_lines[0::20]]
    # three documents of a second file reuse ids of the first (ingest rejects an id repeated
    # within one file, so only a repeat across files reaches the contract)
    again = [{**d, "text": d["text"] + " (a second version)"} for d in docs[:3]]
    docs[5]["lang"] = docs[6]["lang"] = "English"  # not a language code
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (inbox / "b.jsonl").write_text("\n".join(json.dumps(d) for d in again) + "\n")
    root = tmp_path / "root"
    recipe = write_recipe(tmp_path / "r.yaml", inbox / "*.jsonl", root)

    with pytest.raises(ContractError) as err:
        run_recipe(str(recipe))
    msg = str(err.value)
    assert "expect_column_values_to_be_unique(id): 6 offending" in msg  # 3 ids, twice each
    assert "expect_column_values_to_match_regex(lang): 2 offending" in msg

    cat = Catalog(root / "catalog.duckdb")
    run = cat.runs()[0]
    shown = cat.show(run["run_id"])
    assert shown["status"] == "failed" and "expect_column_values_to_be_unique" in shown["error"]
    assert [s["stage"] for s in shown["stages"]] == ["ingest"]  # nothing trained
    broken = {(c["expectation"], c["column_name"]): c["offending"]
              for c in cat.contracts(run["run_id"]) if not c["success"]}
    assert broken == {("expect_column_values_to_be_unique", "id"): 6,
                      ("expect_column_values_to_match_regex", "lang"): 2}
