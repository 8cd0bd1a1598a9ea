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


def test_cloze_items_come_from_the_heldout_split_only(sample_lines: list[str]) -> None:
    import pyarrow as pa

    from tasks.tokenize import heldout_mask

    docs = [json.loads(line) for line in sample_lines]
    held = heldout_mask(pa.array([d["id"] for d in docs]), 0.2)
    heldout = [d for d, h in zip(docs, held, strict=True) if h]
    training = [d["text"] for d, h in zip(docs, held, strict=True) if not h]
    items = evalsets.build("cloze", heldout, 300)
    assert len(items) >= 200
    ids = {d["id"] for d in heldout}
    assert all(it["id"] in ids for it in items)  # one item per held-out document at most
    assert len({it["id"] for it in items}) == len(items)
    # no context is text the model trained on
    assert not any(it["context"] in t for it in items for t in training)
    assert items == evalsets.build("cloze", list(reversed(heldout)), 300)  # deterministic


def test_cloze_asks_for_a_frequent_word_seen_earlier() -> None:
    filler = "Some plain words stand here so that the blank has enough context before it. "
    docs = [{"id": f"d{i}", "source": "s", "lang": "en",
             "text": filler + f"Marta met Jonas and Pedro near the river number {i}. Later "
             "Marta walked home alone."} for i in range(6)]
    items = evalsets.build("cloze", docs, 10)
    assert len(items) == 6
    for it in items:
        gold = it["choices"][it["gold"]]
        # the only frequent word mentioned twice, after 60+ characters of context
        assert gold == " Marta" and it["context"].endswith("Later")
        # distractors: the other frequent capitalised words, never the lower-case ones
        assert {c.strip() for c in it["choices"]} <= {"Marta", "Jonas", "Pedro", "Some",
                                                     "Later"}
