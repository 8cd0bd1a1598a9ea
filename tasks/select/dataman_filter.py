"""Document filter ``dataman``: decisions over the ``dataman`` stage's stored ratings.

``dataman.below_min_score``: the overall score (``dataman_score``) under ``min_score``;
``dataman.domain_excluded``: with ``domains`` set, a document whose domain is not listed.
A null score or domain (no parsable rating) never rejects. Recipe line (by import path):

    stages:
      filter:
        filters: {tasks.select.dataman_filter: {min_score: 4, domains: [Medicine, Law]}}
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from tasks.filters.base import FilterConfig

NAME = "dataman"
SCORE_VERSION = 1


class Config(FilterConfig):
    min_score: float = Field(3.0, ge=1, le=5, description="lowest overall score kept")
    domains: list[str] | None = Field(None, description="keep only these DataMan domains "
                                      "(names, e.g. Medicine); null = all")

    @field_validator("domains")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        from tasks.prompts.ratings import DATAMAN_DOMAINS

        bad = sorted(set(v or []) - set(DATAMAN_DOMAINS.values()))
        if bad:
            raise ValueError(f"unknown DataMan domains {bad}; known: "
                             f"{list(DATAMAN_DOMAINS.values())}")
        return v


def score(table: pa.Table, config: Config) -> pa.Table:
    """No new column: the ratings are already stored by the dataman stage."""
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}: expected its Config, got {type(config).__name__}")
    if "dataman_score" not in table.column_names:
        raise ValueError(f"{NAME}: no column 'dataman_score': run the dataman stage "
                         "(tasks.select.dataman_stage:DataMan) before the filter")
    return pa.table({})


def rules(scores: pa.Table, config: Config) -> dict[str, pa.Array]:
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}: expected its Config, got {type(config).__name__}")
    out = {f"{NAME}.below_min_score": pc.less(scores.column("dataman_score").combine_chunks(),
                                              config.min_score)}
    if config.domains is not None:
        d = scores.column("dataman_domain").combine_chunks()
        out[f"{NAME}.domain_excluded"] = pc.invert(
            pc.is_in(d, value_set=pa.array(config.domains, pa.string())))
        # is_in gives False for null; a null domain must not reject
        out[f"{NAME}.domain_excluded"] = pc.if_else(pc.is_null(d), None,
                                                    out[f"{NAME}.domain_excluded"])
    return out
