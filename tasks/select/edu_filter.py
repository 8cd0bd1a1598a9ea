"""Document filter ``edu``: FineWeb-Edu's decision over the stored ``edu_score`` column.

The ``fineweb_edu`` stage (``tasks/select/edu_stage.py``) computes the column once; this
filter only decides, so changing ``min_score`` re-runs the filter, never the annotation or
the head. FineWeb-Edu keeps ``int_score >= 3`` where ``int_score`` is the rounded score; the
rule is the same: ``round(edu_score) < min_score`` fails (``edu.below_min_score``). A missing
score (null) never rejects. Recipe line (by import path):

    stages:
      filter:
        filters: {tasks.select.edu_filter: {min_score: 3}}
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters.base import FilterConfig

NAME = "edu"
SCORE_VERSION = 1


class Config(FilterConfig):
    min_score: int = Field(3, ge=0, le=5, description="keep documents whose rounded "
                           "edu_score is at least this (FineWeb-Edu: 3)")
    column: str = Field("edu_score", pattern=r"^edu_[A-Za-z0-9_]+$",
                        description="the fineweb_edu stage's column")


def score(table: pa.Table, config: Config) -> pa.Table:
    """No new column: the score is already stored by the fineweb_edu stage."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}: expected its Config, got {type(config).__name__}")
    if config.column not in table.column_names:
        raise ValueError(f"{NAME}: no column {config.column!r}: run the fineweb_edu stage "
                         "(tasks.select.edu_stage:FinewebEdu) before the filter")
    return pa.table({})


def rules(scores: pa.Table, config: Config) -> dict[str, pa.Array]:
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}: expected its Config, got {type(config).__name__}")
    s = scores.column(config.column).combine_chunks()
    rounded = pc.round(s, 0, round_mode="half_to_even")  # Python's round, as FineWeb-Edu's
    return {f"{NAME}.below_min_score": pc.less(rounded, config.min_score)}
