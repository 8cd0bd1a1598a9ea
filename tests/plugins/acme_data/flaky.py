"""A stage whose first shard's first attempt kills the Dask worker running it (a lost worker,
as on a cluster when a node goes away); documents otherwise pass through unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import BaseModel

from tasks.stage import Executor, RunInfo, Stage, Upstream
from tasks.store import StageDir, shard_key


class Config(BaseModel):
    flag_dir: str


def pass_shard(src: str, dst: str, flag: str | None) -> dict[str, Any]:
    if flag is not None and not Path(flag).exists():
        Path(flag).parent.mkdir(parents=True, exist_ok=True)
        Path(flag).write_text("killed once")
        os._exit(1)  # the worker process dies mid-task
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    n = pq.read_metadata(dst).num_rows
    return {"docs_in": n, "docs_kept": n, "docs_rejected": 0}


class FlakyStage(Stage):
    name = "flaky"
    Config = Config
    description = "kills its worker once, then passes documents through"

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        return None  # where the flag lives is not what the stage makes

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        rels = up.docs.kept  # the first shard's first attempt kills its worker
        flags = [str(Path(self.params.flag_dir) / shard_key(rels[0]))] + [None] * len(rels)
        jobs = [(shard_key(r), (run.abs(r), out.part("kept", shard_key(r)), f))
                for r, f in zip(rels, flags, strict=False)]
        stats = ex.shards(out, pass_shard, jobs, "flaky")
        n = sum(s["docs_in"] for s in stats)
        return {"docs_in": n, "docs_kept": n, "docs_rejected": 0,
                "outputs": {"kept": [out.rel(a[1]) for _, a in jobs]}}
