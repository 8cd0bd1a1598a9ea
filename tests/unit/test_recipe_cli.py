"""Recipes are validated with errors that name the key; the CLI exits 2 on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.recipe import RecipeError, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[2]


def test_sample_recipe_is_valid_and_defaults_are_published_values() -> None:
    r = load_recipe(ROOT / "recipes" / "sample.yaml")
    assert r.stages.rewrite is None
    g = r.stages.filter.filters["gopher_quality"]
    assert (g.min_words, g.max_words, g.min_stop_words) == (50, 100_000, 2)
    assert r.train_config().preset == "tiny"


@pytest.mark.parametrize("raw, key", [
    ({"name": "x", "input": {"paths": ["a"]}, "stagse": {}}, "stagse"),
    ({"name": "x", "input": {"paths": ["a"], "format": "xml"}}, "input.format"),
    ({"name": "x", "input": {"paths": ["a"]},
      "stages": {"filter": {"filters": {"gopher_quality": {"min_wrds": 3}}}}}, "min_wrds"),
    ({"name": "x", "input": {"paths": ["a"]},
      "stages": {"filter": {"filters": {"no_such_filter": {}}}}}, "no_such_filter"),
    ({"name": "x", "input": {"paths": ["a"]}, "stages": {"train": {"lr": "fast"}}}, "lr"),
    ({"name": "x", "input": {"paths": ["a"]}, "stages": {"tokenize": {"seq_len": 0}}},
     "tokenize.seq_len"),
])
def test_bad_recipes_name_the_key(raw: dict, key: str) -> None:
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        parse_recipe(raw)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_exit_2_on_bad_recipe_and_empty_glob(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "input": {"paths": ["a"]}, "bogus": 1}))
    out = _cli("run", str(bad))
    assert out.returncode == 2 and "bogus" in out.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"name": "x", "input": {"paths": [str(tmp_path / "*.none")]}}))
    out = _cli("run", str(empty))
    assert out.returncode == 2 and "*.none" in out.stderr
    assert _cli("validate", str(ROOT / "recipes" / "sample.yaml")).returncode == 0


def test_help_imports_no_heavy_library() -> None:
    code = ("import sys; from flows import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = {'torch', 'prefect', 'ray', 'dask', 'transformers', 'duckdb'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_runs_without_catalog_is_a_clear_error(tmp_path: Path) -> None:
    out = _cli("runs", "--data-root", str(tmp_path / "nothing"))
    assert out.returncode == 1 and "no catalog" in out.stderr


def test_recipe_reference_doc_is_in_step_with_the_models() -> None:
    from tasks.recipe import reference_markdown

    doc = (ROOT / "docs" / "recipes.md").read_text()
    assert doc.strip() == reference_markdown().strip(), (
        "docs/recipes.md is stale: run `python -m tasks.recipe > docs/recipes.md`")
