"""The words the Gopher rule sets share while one table is scored (tasks/filters/text.py
``shared_words``): found once per text, never taken from another table or column."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from filterkit import sample_records, table

from tasks.filter import score_table
from tasks.filters import text as tx
from tasks.filters.base import get_filter

RULES = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = tx.words

    def counted(text: str) -> list[str]:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(tx, "words", counted)
    tx.forget_words()
    return seen


def test_a_table_s_texts_are_split_once(calls: list[str]) -> None:
    t = table(["one two three", "four five", ""], [None, None, None])
    first, again = tx.shared_words(t), tx.shared_words(t)
    assert first(0, "one two three") == ["one", "two", "three"]
    assert again(0, "one two three") == ["one", "two", "three"]
    assert again(1, "four five") == ["four", "five"]
    assert calls == ["one two three", "four five"]


def test_another_column_or_slice_is_split_again(calls: list[str]) -> None:
    t = table(["alpha beta", "gamma delta"], [None, None])
    assert tx.shared_words(t)(1, "gamma delta") == ["gamma", "delta"]
    edited = t.set_column(0, "text", pa.array(["alpha beta", "gamma"]))
    assert tx.shared_words(edited)(1, "gamma") == ["gamma"]
    part = t.slice(1)  # the same buffers at another offset: row 0 is another text
    assert tx.shared_words(part)(0, "gamma delta") == ["gamma", "delta"]
    assert len(calls) == 3


def test_scores_are_those_of_each_rule_set_alone(calls: list[str]) -> None:
    texts = [r["text"] for r in sample_records()[:300]]
    langs = [r["lang"] for r in sample_records()[:300]]
    t = table(texts, langs)
    filters: dict[str, Any] = {r: get_filter(r).Config() for r in RULES}
    together = score_table(t, filters)
    assert tx._memo.entry is None  # dropped once the table is scored
    shared = len(calls)
    for name, cfg in filters.items():
        tx.forget_words()
        alone = get_filter(name).score(t, cfg)
        for col in alone.column_names:
            assert together.column(col).equals(alone.column(col)), col
    # each text the two Gopher rule sets split was split once while scored together
    assert len(calls) - shared == 2 * shared and shared > 250
