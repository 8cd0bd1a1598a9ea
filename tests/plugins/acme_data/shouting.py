"""A document filter: reject documents written mostly in capitals."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters.base import FilterConfig

NAME = "shouting"
SCORE_VERSION = 1


class Config(FilterConfig):
    max_upper_frac: float = Field(0.5, ge=0, le=1, description="capitals / letters")


def _check(config: object) -> None:
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}: expected its Config, got {type(config).__name__}")


def score(table: pa.Table, config: Config) -> pa.Table:
    _check(config)
    text = table.column("text")
    letters = pc.utf8_length(pc.replace_substring_regex(text, r"[^\p{L}]", ""))
    upper = pc.utf8_length(pc.replace_substring_regex(text, r"[^\p{Lu}]", ""))
    frac = pc.divide(pc.cast(upper, pa.float64()), pc.cast(letters, pa.float64()))
    return pa.table({"shouting_upper_frac": pc.if_else(pc.equal(letters, 0), None, frac)})


def rules(scores: pa.Table, config: Config) -> dict[str, pa.Array]:
    _check(config)
    frac = scores.column("shouting_upper_frac").combine_chunks()
    return {"shouting.too_loud": pc.greater(frac, config.max_upper_frac)}
