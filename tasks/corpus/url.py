"""Corpus rule ``url_dedup``: one document per normalised URL (documents without one pass)."""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
from pydantic import Field

from tasks.corpus.base import CorpusRuleConfig
from tasks.corpus.hashkeys import hash_rule
from tasks.filters import dedup
from tasks.identity import SCORED

NAME = "url_dedup"
VERSION = 1
# url_dedup.duplicate / .seen_before, keyed like exact_dedup (tasks/corpus/hashkeys.py)
RULE, SEEN, COLUMNS, keys, decide = hash_rule(NAME, dedup.URL_RULE, dedup.URL_HASH_COLUMN)
INDEX_COLUMNS = COLUMNS


class Config(CorpusRuleConfig):
    drop_query: Annotated[bool, SCORED] = Field(
        False, description="treat URLs differing only in their query string as one "
        "(tracking parameters are always ignored)")


def score(table: pa.Table, cfg: Config) -> pa.Table:
    urls = (table.column("url") if "url" in table.column_names
            else pa.nulls(len(table), pa.string()))
    return pa.table({dedup.URL_HASH_COLUMN: dedup.hash_urls(urls, cfg.drop_query)})
