"""The decision commands fail fast, with a message, before any engine starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasks.recipe import RecipeError, parse_recipe

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_ablation_needs_two_valid_recipes(tmp_path: Path) -> None:
    one = cli("ablation", str(ROOT / "recipes" / "sample.yaml"))
    assert one.returncode == 2 and "at least two recipes" in one.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninput: {paths: [a]}\nstages: {evaluate: {checkpoints: 2}}\n")
    out = cli("ablation", str(ROOT / "recipes" / "sample.yaml"), str(bad))
    assert out.returncode == 2 and "checkpoint_every" in out.stderr


def test_eval_on_an_unknown_run(tmp_path: Path) -> None:
    out = cli("eval", "no-such-run", "--harness", "x", "--data-root", str(tmp_path))
    assert out.returncode == 1 and "no-such-run" in out.stderr


def test_evaluate_checkpoints_need_training_checkpoints() -> None:
    base = {"name": "x", "input": {"paths": ["a"]}}
    with pytest.raises(RecipeError, match="keep_checkpoints >= 3"):
        parse_recipe({**base, "stages": {"evaluate": {"average_last": 3},
                                         "train": {"checkpoint_every": 10}}})
    ok = parse_recipe({**base, "stages": {"evaluate": {"checkpoints": 3, "heldout": "raw"},
                                          "train": {"checkpoint_every": 10,
                                                    "keep_checkpoints": 3}}})
    assert ok.stages.evaluate.checkpoints == 3 and ok.stages.evaluate.heldout == "raw"
