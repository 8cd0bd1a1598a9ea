"""A stage between filter and tokenize: tag each document with its length bucket, and drop
documents under a minimum length (named reason ``tag.too_short``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from tasks.schema import with_reject
from tasks.stage import Executor, RunInfo, Stage, Upstream
from tasks.store import StageDir, merge_counts, shard_key, write_parquet


class Config(BaseModel):
    min_chars: int = Field(100, ge=0)


def tag_shard(src: str, kept: str, rejected: str, min_chars: int) -> dict[str, Any]:
    t = pq.read_table(src)
    n = pc.utf8_length(t.column("text"))
    t = t.append_column("length_bucket", pc.cast(pc.divide(n, 1000), pa.int32()))
    short = pc.less(n, min_chars)
    write_parquet(t.filter(pc.invert(short)), Path(kept))
    rej = t.filter(short)
    write_parquet(with_reject(rej, "tag", pa.array(["tag.too_short"] * len(rej))), Path(rejected))
    return {"docs_in": len(t), "docs_kept": len(t) - len(rej), "docs_rejected": len(rej),
            "rejections": {"tag.too_short": {"first": len(rej), "alone": len(rej)}}}


class TagStage(Stage):
    name = "tag"
    Config = Config
    outputs = ("kept", "rejected")
    description = "length buckets; drop very short documents"

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        keys = [shard_key(rel) for rel in up.docs.kept]
        jobs = [(k, (run.abs(rel), out.part("kept", k), out.part("rejected", k),
                     self.params.min_chars)) for k, rel in zip(keys, up.docs.kept, strict=True)]
        stats = ex.shards(out, tag_shard, jobs, "tag")
        return {**merge_counts(stats), "outputs": {"kept": [out.rel(a[1]) for _, a in jobs],
                                                  "rejected": [out.rel(a[2]) for _, a in jobs]}}
