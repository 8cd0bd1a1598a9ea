"""Shared fixtures. Engines are real: a Prefect test harness (its own temporary API and DB),
a Dask LocalCluster and local Ray, started once per session by the first test that needs them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.env import apply_defaults

apply_defaults()
os.environ.setdefault("DATAMILL_DASK_DASHBOARD", "127.0.0.1:0")  # never clash with a user's

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "sample.jsonl"


@pytest.fixture(scope="session")
def sample_lines() -> list[str]:
    return SAMPLE.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def sample_slice(tmp_path_factory: pytest.TempPathFactory, sample_lines: list[str]) -> Path:
    """Every 5th document of the sample (all sources, ~450 docs) plus two exact duplicates."""
    picked = sample_lines[::5]
    dup = next(d for d in map(json.loads, picked)
               if d["lang"] == "en" and len(d["text"].split()) > 200)
    dup["id"] = dup["id"] + "-copy"
    dup["text"] = dup["text"].replace(" ", "  ")  # same text once whitespace is normalised
    path = tmp_path_factory.mktemp("slice") / "slice.jsonl"
    path.write_text("\n".join(picked + [json.dumps(dup)]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session", autouse=True)
def _engines() -> Iterator[None]:
    yield
    from infra import dask as dask_engine
    from infra import ray as ray_engine

    dask_engine.shutdown()
    ray_engine.shutdown()


def _write_recipe(path: Path, inputs: Path, data_root: Path, seeds: list[int] | None = None,
                  **filter_overrides: Any) -> Path:
    recipe = {
        "name": "slice",
        "data_root": str(data_root),
        "input": {"paths": [str(inputs)]},
        "stages": {
            "ingest": {"shard_max_bytes": 250_000},  # several shards -> real cross-shard dedup
            "rewrite": None,
            "filter": {"filters": {"gopher_quality": filter_overrides}, "exact_dedup": {},
                       "minhash_dedup": {}},
            "tokenize": {"vocab_size": 512, "seq_len": 64, "heldout_fraction": 0.1},
            "train": {"preset": "tiny", "batch_size": 8, "max_tokens": 8 * 64 * 12,
                      "warmup_steps": 2, "log_every": 2},
            "evaluate": {"batch_size": 16, "max_docs": 20},
        },
    }
    if seeds is not None:
        recipe["stages"]["train"]["seeds"] = seeds
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="session")
def write_recipe() -> Any:
    """Writes a small recipe over the slice: tiny tokenizer and model, a few training steps."""
    return _write_recipe


@pytest.fixture(scope="session")
def sample_run(prefect_harness: None, sample_slice: Path, tmp_path_factory: pytest.TempPathFactory,
               write_recipe: Any) -> dict[str, Any]:
    """One completed run of the slice recipe, shared by the tests that only read a run
    (export, inspect, show/--json). Read-only: run no other recipe in its data root."""
    from flows.pipeline import run_recipe

    tmp = tmp_path_factory.mktemp("sample-run")
    recipe = _write_recipe(tmp / "recipe.yaml", sample_slice, tmp / "root")
    summary = run_recipe(str(recipe))
    assert summary["status"] == "completed", summary
    return {"summary": summary, "recipe": recipe, "root": tmp / "root", "tmp": tmp,
            "run_id": summary["run_id"]}
