"""Continual pre-training through the flow: a second run on a new slice continues the first
run's model (train.init_from: RUN_ID), reusing its tokenizer and replaying its token shards --
data-parallel on two Ray Train workers (train.workers: 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.catalog import Catalog

pytestmark = pytest.mark.slow


def stages_of(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in summary["stages"]}


def test_init_from_a_run_id(prefect_harness: None, sample_lines: list[str], tmp_path: Path,
                            write_recipe: Any) -> None:
    from flows.pipeline import run_recipe

    root = tmp_path / "root"
    (tmp_path / "old.jsonl").write_text("\n".join(sample_lines[0::6]) + "\n")
    (tmp_path / "new.jsonl").write_text("\n".join(sample_lines[3::6]) + "\n")
    first = run_recipe(str(write_recipe(tmp_path / "old.yaml", tmp_path / "old.jsonl", root)),
                       until="train")
    old = stages_of(first)

    recipe = write_recipe(tmp_path / "new.yaml", tmp_path / "new.jsonl", root)
    raw = yaml.safe_load(recipe.read_text())
    # 4 steps: the continuation's first logged loss (step 2) is what shows where it started
    raw["stages"]["train"].update(init_from=first["run_id"], replay=0.05, schedule="wsd",
                                  workers=2, max_tokens=8 * 64 * 4)
    recipe.write_text(yaml.safe_dump(raw))
    second = run_recipe(str(recipe), until="train")
    new = stages_of(second)

    # the tokenize stage took the first run's tokenizer instead of training one
    old_tok, new_tok = (Path(s["tokenize"]["output_path"]) for s in (old, new))
    assert (new_tok / "tokenizer.json").read_bytes() == (old_tok / "tokenizer.json").read_bytes()
    assert new["tokenize"]["version"] != old["tokenize"]["version"]  # other documents

    train_dir = Path(new["train"]["output_path"])
    manifest = json.loads((train_dir / "manifest.json").read_text())
    assert manifest["init"]["run_id"] == first["run_id"]
    assert manifest["init"]["identity"] == old["train"]["version"]
    assert f"init:{old['train']['version']}" in manifest["inputs"]
    summary = manifest["summary"]
    assert summary["init_from"] == str(Path(old["train"]["output_path"]) / "checkpoint")
    assert Path(summary["replay_data"]) == old_tok
    assert summary["workers"] == 2  # DDP under Ray Train's TorchTrainer
    run = Catalog(root / "catalog.duckdb").show(second["run_id"])
    losses = [m["value"] for m in run["metrics"] if m["name"] == "loss"]
    assert losses[0] < math.log(512) - 0.5  # started from the trained model, not from scratch

    # the same continuation again: every stage is a cache hit
    again = stages_of(run_recipe(str(recipe), until="train"))
    assert again["train"]["cached"] and again["train"]["version"] == new["train"]["version"]

    # a vocabulary the init model does not have is refused before anything trains
    raw["stages"]["tokenize"]["vocab_size"] = 600
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="set tokenize.vocab_size: 512"):
        run_recipe(str(recipe), until="train")
