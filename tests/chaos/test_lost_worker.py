"""A Dask worker lost mid-stage: the stage is retried by Prefect (a transient failure) and
resumes from its shard markers; the run completes with every document accounted for."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def test_a_lost_worker_is_retried_from_the_shard_markers(
        prefect_harness: None, sample_slice: Path, write_recipe: Any, tmp_path: Path) -> None:
    import dask
    import distributed  # noqa: F401 - its config defaults, before dask.config.set

    from flows.pipeline import run_recipe
    from flows.runner import transient
    from infra import dask as dask_engine

    sys.path.insert(0, str(PLUGINS))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS),
                                                             os.environ.get("PYTHONPATH")]))
    dask_engine.shutdown()  # a cluster whose workers see the plug-in, and give up at once
    path = write_recipe(tmp_path / "recipe.yaml", sample_slice, tmp_path / "root")
    r = yaml.safe_load(path.read_text())
    r["stages"]["extra"] = [{"use": "acme_data.flaky:FlakyStage", "after": "filter",
                             "with": {"flag_dir": str(tmp_path / "flags")}}]
    path.write_text(yaml.safe_dump(r))
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        summary = run_recipe(str(path), until="flaky")
    dask_engine.shutdown()
    stages = {s["stage"]: s for s in summary["stages"]}
    assert summary["status"] == "completed"
    assert stages["flaky"]["docs_in"] == stages["flaky"]["docs_kept"] == \
        stages["filter"]["docs_kept"]
    assert len(list((tmp_path / "flags").iterdir())) == 1  # its worker died once
    markers = list((tmp_path / "root" / "stages" / "flaky").glob("*/_shards/*.json"))
    assert len(markers) == len(stages and list((tmp_path / "root" / "stages" / "filter")
                                               .glob("*/kept/*.parquet")))

    from distributed.scheduler import KilledWorker

    assert transient(KilledWorker("t", "w", 0))
    assert not transient(ValueError("a bad threshold"))
