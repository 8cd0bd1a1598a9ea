"""Multiple-choice items from held-out text: deterministic, well-formed, never leaking."""

from __future__ import annotations

import json

import pytest

from tasks import evalsets


@pytest.fixture(scope="module")
def docs(sample_lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in sample_lines[:500]]


@pytest.mark.parametrize("task", evalsets.TASKS)
def test_items_are_deterministic_and_well_formed(task: str, docs: list[dict]) -> None:
    items = evalsets.build(task, docs, 100)
    assert 50 <= len(items) <= 100
    assert items == evalsets.build(task, list(reversed(docs)), 100)  # order-independent
    by_id = {d["id"]: d for d in docs}
    for it in items:
        assert len(it["choices"]) == 4 and len(set(it["choices"])) == 4
        gold = it["choices"][it["gold"]].strip()
        assert gold in by_id[it["id"]]["text"]  # the true answer comes from its own document
        flat = " ".join(by_id[it["id"]]["text"].split())
        assert " ".join(it["context"].split()) in flat  # context is the document's own text
    golds = [it["gold"] for it in items]
    assert len(set(golds)) == 4  # the answer's position is shuffled


def test_distractors_match_source_and_language(docs: list[dict]) -> None:
    lang = {d["id"]: (d["source"], d["lang"]) for d in docs}
    sentences_of = {}
    for d in docs:
        for s in evalsets.sentences(d["text"]):
            sentences_of.setdefault(s, set()).add(lang[d["id"]])
    for it in evalsets.build("next_sentence", docs, 50):
        for j, c in enumerate(it["choices"]):
            if j != it["gold"]:
                assert lang[it["id"]] in sentences_of[c.strip()]


def test_a_different_seed_gives_different_items(docs: list[dict]) -> None:
    assert evalsets.build("final_word", docs, 50, seed=0) != \
        evalsets.build("final_word", docs, 50, seed=1)


def test_centred_accuracy() -> None:
    assert evalsets.centred(0.25) == 0 and evalsets.centred(1.0) == 1
