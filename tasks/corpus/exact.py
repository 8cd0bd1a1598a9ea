"""Corpus rule ``exact_dedup``: one document per normalised text (xxh3-128 of the text)."""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
from pydantic import Field

from tasks.corpus.base import CorpusRuleConfig
from tasks.corpus.hashkeys import hash_rule
from tasks.filters import dedup
from tasks.identity import SCORED

NAME = "exact_dedup"
VERSION = 1
# exact_dedup.duplicate / .seen_before; keys: (shard, row, hash) of the rows in play;
# decide: in-index hashes first, then all but the first by (shard, row)
RULE, SEEN, COLUMNS, keys, decide = hash_rule(NAME, dedup.RULE, dedup.HASH_COLUMN)
INDEX_COLUMNS = COLUMNS


class Config(CorpusRuleConfig):
    lowercase: Annotated[bool, SCORED] = Field(True, description="hash lowercased text")
    collapse_whitespace: Annotated[bool, SCORED] = Field(
        True, description="hash text with whitespace runs as one")


def score(table: pa.Table, cfg: Config) -> pa.Table:
    """Computed once in the score step: the hash of each document's normalised text."""
    h = dedup.hash_texts(table.column("text").combine_chunks(), cfg.lowercase,
                         cfg.collapse_whitespace)
    return pa.table({dedup.HASH_COLUMN: h})
