"""A corpus rule: keep the longest k % of the documents that passed the document rules."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.corpus.base import CorpusRuleConfig, RuleContext, read_keys, split_by_shard

NAME = "longest"
VERSION = 1
COLUMNS = ("gopher_quality_n_words",)


class Config(CorpusRuleConfig):
    percent: float = Field(50.0, gt=0, le=100)


def keys(scored: pa.Table, shard: int, rows: np.ndarray, cfg: Config,
         ctx: RuleContext) -> pa.Table:
    return pa.table({"shard": pa.array(np.full(len(rows), shard, np.int32)),
                     "row": pa.array(rows, pa.int64()),
                     "words": pc.fill_null(scored.column(COLUMNS[0]).take(rows), 0)})


def decide(key_files: list[str], out_dir: Path, cfg: Config, ctx: RuleContext
           ) -> dict[str, Any]:
    t = read_keys(key_files)
    if t is None:  # no document reached the rule
        return {"dropped": {}}
    order = np.lexsort((t.column("row").to_numpy(), t.column("shard").to_numpy(),
                        -t.column("words").to_numpy()))
    keep = math.ceil(len(t) * cfg.percent / 100)
    dropped = t.select(["shard", "row"]).take(pa.array(np.sort(order[keep:])))
    return {"dropped": split_by_shard(out_dir, dropped, rule="longest.too_short")}
