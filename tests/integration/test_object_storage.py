"""A run whose inputs, stages and catalog live in a bucket, against a real S3-protocol server
on 127.0.0.1: killed part way on one machine, finished on a fresh one from the bucket alone,
with the result of an uninterrupted run; then exported to the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from prockit import kill_tree
from s3kit import make_bucket, s3_env, s3_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    with s3_server() as env, s3_env(env):
        make_bucket("datamill")
        yield env


def _kept_ids(root: Path, stage_row: dict[str, Any]) -> list[str]:
    out = Path(stage_row["output_path"])
    return sorted(i for p in sorted((out / "kept").glob("*.parquet"))
                  for i in pq.read_table(p, columns=["id"]).column("id").to_pylist())


def test_a_bucket_run_killed_then_finished_on_a_fresh_machine(
        s3: dict[str, str], sample_run: dict[str, Any], sample_slice: Path, write_recipe: Any,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    from flows.pipeline import run_recipe
    from tasks.catalog import Catalog
    from tasks.export import export_run

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.put_file(str(sample_slice), "datamill/in/slice.jsonl")
    recipe = write_recipe(tmp_path / "recipe.yaml", "s3://datamill/in/*.jsonl",
                          "s3://datamill/root")
    # the shared run's stages up to tokenize (those compared below); a shorter training and
    # evaluation after them: what is tested is where the run's files live, not the model
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["train"].update(max_tokens=8 * 64 * 4)
    raw["stages"]["evaluate"].update(max_docs=5, tasks=[])
    recipe.write_text(yaml.safe_dump(raw))
    # machine 1: a run killed once the filter stage is committed to the bucket
    env = {**os.environ, **s3, "DATAMILL_CACHE_DIR": str(tmp_path / "machine1"),
           "DATAMILL_DASK_DASHBOARD": "127.0.0.1:0"}
    log = tmp_path / "machine1.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(recipe)],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if fs.glob("datamill/root/stages/filter/*/manifest.json"):
                break
            time.sleep(0.5)
            fs.invalidate_cache()
        assert fs.glob("datamill/root/stages/filter/*/manifest.json"), log.read_text()[-3000:]
    finally:
        kill_tree(proc)
    # machine 2: nothing local; the bucket has the inputs and the committed stages
    monkeypatch.setenv("DATAMILL_CACHE_DIR", str(tmp_path / "machine2"))
    summary = run_recipe(str(recipe))
    assert summary["status"] == "completed", summary
    stages = {s["stage"]: s for s in summary["stages"]}
    assert stages["ingest"]["cached"] and stages["score"]["cached"] and stages["filter"]["cached"]
    local = Path(summary["data_root"])
    assert local.is_relative_to(tmp_path / "machine2")
    # the result of an uninterrupted run (the same recipe over local files)
    reference = {s["stage"]: s for s in sample_run["summary"]["stages"]}
    for name in ("ingest", "filter"):
        assert _kept_ids(local, stages[name]) == _kept_ids(sample_run["root"], reference[name])
    for name in ("ingest", "score", "filter", "tokenize"):
        for k in ("docs_in", "docs_kept", "docs_rejected"):
            assert stages[name][k] == reference[name][k], (name, k)
    # the bucket holds the whole run: the catalog, and every file each manifest vouches for
    fs.invalidate_cache()
    assert fs.exists("datamill/root/catalog.duckdb")
    manifests = fs.glob("datamill/root/stages/*/*/manifest.json")
    assert {m.split("/")[3] for m in manifests} >= {"ingest", "score", "filter", "tokenize",
                                                    "train", "evaluate"}
    for m in manifests:
        for rel in json.loads(fs.cat(m)).get("present", []):
            assert fs.exists(f"datamill/root/{rel}"), rel
    # export to the bucket: the marker object last, and a second export writes nothing
    cat = Catalog(local / "catalog.duckdb")
    out = export_run(cat, summary["run_id"], "s3://datamill/export/slice", "jsonl")
    assert out["status"] == "exported" and out["docs"] == stages["filter"]["docs_kept"]
    assert fs.exists("datamill/export/slice/export.json")
    assert export_run(cat, summary["run_id"], "s3://datamill/export/slice",
                      "jsonl")["uploaded"] == 0
