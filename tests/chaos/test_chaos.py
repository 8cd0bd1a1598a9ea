"""Chaos: SIGKILL of the whole process tree at random moments, a catalog reader held open
throughout, two runs of one recipe at once, a lost Dask worker — each followed by a result
equal to an uninterrupted run's (same kept ids, counts, tokens and evaluations)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from prockit import kill_tree

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp: Path, sample_run: dict[str, Any]) -> Path:
    """The shared sample run's own recipe without its data root (each test passes one)."""
    r = yaml.safe_load(sample_run["recipe"].read_text())
    r.pop("data_root")
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def _start(recipe: Path, root: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DATAMILL_DASK_DASHBOARD": "127.0.0.1:0"}
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(recipe),
                                 "--data-root", str(root), "--json"], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(recipe: Path, root: Path, log: Path, timeout: float = 600) -> None:
    p = _start(recipe, root, log)
    try:
        assert p.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    finally:
        if p.poll() is None:
            kill_tree(p)


def outcome(root: Path) -> dict[str, Any]:
    """What a run produced: kept ids per stage, counts, tokens, evaluations."""
    out: dict[str, Any] = {}
    for man in sorted((root / "stages").glob("*/*/manifest.json")):
        m = json.loads(man.read_text())
        stage = m["stage"]
        entry: dict[str, Any] = {"in": m["docs_in"], "kept": m["docs_kept"],
                                 "rejected": m["docs_rejected"]}
        kept = m["outputs"].get("kept")
        if isinstance(kept, list):
            entry["ids"] = sorted(i for rel in kept if (root / rel).is_file()
                                  for i in pq.read_table(root / rel, columns=["id"])
                                  .column("id").to_pylist())
        if stage == "tokenize":
            entry["tokens"] = m["tokens"]
        if stage == "evaluate":
            entry["bpb"] = m["results"]["overall"]["bpb"]
        if stage == "train":
            entry["loss"] = m["summary"].get("final_loss")
        out.setdefault(stage, []).append(entry)
    return out


def _completed(root: Path) -> list[str]:
    import duckdb

    snap = root / "catalog.read.duckdb"
    path = snap if snap.exists() else root / "catalog.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        return [r[0] for r in con.execute("SELECT status FROM runs ORDER BY started_at")
                .fetchall()]


@pytest.fixture(scope="module")
def reference(sample_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Any]:
    """The uninterrupted run is the session's shared sample run (same recipe, same slice):
    no third full run of the recipe just for this module."""
    recipe = _recipe(tmp_path_factory.mktemp("chaos-ref"), sample_run)
    return {"recipe": recipe, "outcome": outcome(sample_run["root"])}


def test_sigkill_at_random_moments_with_a_reader_holding_the_catalog(
        reference: dict[str, Any], tmp_path: Path) -> None:
    import duckdb

    root, log = tmp_path / "root", tmp_path / "log.txt"
    rng = random.Random(int(os.environ.get("DATAMILL_CHAOS_SEED", "7")))
    reader = None
    for _kill in range(2):
        p = _start(reference["recipe"], root, log)
        time.sleep(rng.uniform(6, 25))
        if reader is None and (root / "catalog.read.duckdb").exists():
            # a user's DuckDB session on the catalog, open for the rest of the test
            reader = duckdb.connect(str(root / "catalog.read.duckdb"), read_only=True)
            reader.execute("SELECT count(*) FROM runs").fetchone()
        if p.poll() is not None:
            break  # it finished before the kill
        kill_tree(p)
    try:
        _finish(reference["recipe"], root, log)
    finally:
        if reader is not None:
            reader.close()
    assert outcome(root) == reference["outcome"]
    assert _completed(root)[-1] == "completed"


def test_two_runs_of_one_recipe_at_once(reference: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "root"
    a = _start(reference["recipe"], root, tmp_path / "a.txt")
    time.sleep(2)
    b = _start(reference["recipe"], root, tmp_path / "b.txt")
    try:
        assert a.wait(timeout=600) == 0, (tmp_path / "a.txt").read_text()[-3000:]
        assert b.wait(timeout=600) == 0, (tmp_path / "b.txt").read_text()[-3000:]
    finally:
        for p in (a, b):
            if p.poll() is None:
                kill_tree(p)
    assert outcome(root) == reference["outcome"]  # one version per stage, nothing deleted
    assert _completed(root) == ["completed", "completed"]
