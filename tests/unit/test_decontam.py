"""n-gram decontamination on built corpora with known answers: real documents of the sample
corpus, evaluation items taken from other documents, 13-word windows of those items planted
in some training documents (with case and punctuation changed)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from tasks.decontam import ngrams as ng
from tasks.decontam import report as rp
from tasks.decontam.items import Item, file_items
from tasks.tokenize import heldout_mask

CORPUS = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "decontamination.md"


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    docs = [json.loads(x) for x in CORPUS.read_text(encoding="utf-8").splitlines()]
    return [d for d in docs if d["lang"] == "en" and len(d["text"].split()) > 60]


def _items(docs: list[dict[str, Any]]) -> list[Item]:
    return [Item("task_a" if i % 2 else "task_b", d["source"], d["id"],
                 " ".join(d["text"].split()[:40])) for i, d in enumerate(docs)]


def _table(docs: list[dict[str, Any]]) -> pa.Table:
    return pa.table({"id": [d["id"] for d in docs], "text": pa.array(
        [d["text"] for d in docs], pa.large_string()), "source": [d["source"] for d in docs]})


def _plant(docs: list[dict[str, Any]], items: list[Item], n: int, rng: random.Random
           ) -> dict[str, str]:
    """Insert an n-word window of a random item into each doc, in upper case with commas
    after each word; returns {doc id: item id}."""
    planted = {}
    for d in docs:
        it = rng.choice(items)
        w = ng.words(it.text)
        s = rng.randrange(len(w) - n + 1)
        window = ", ".join(x.upper() for x in w[s:s + n])
        cut = d["text"].find(" ", len(d["text"]) // 2)
        d["text"] = d["text"][:cut] + " " + window + "." + d["text"][cut:]
        planted[d["id"]] = it.id
    return planted


def _setup(corpus: list[dict[str, Any]], tmp_path: Path, n: int = 13) -> tuple[
        list[Item], ng.EvalIndex, list[dict[str, Any]]]:
    items = _items(corpus[:40])
    rp.write_index(tmp_path, items, n)
    train = [dict(d) for d in corpus[40:400]]
    # the held-out split is the evaluation's text: keep these tests on training documents
    held = heldout_mask(pa.array([d["id"] for d in train]), 0.1)
    train = [d for d, h in zip(train, held, strict=True) if not h]
    return items, rp.load_index(str(tmp_path / "index.npz")), train


def test_every_planted_leak_is_found_and_none_in_the_clean_control(
        corpus: list[dict[str, Any]], tmp_path: Path) -> None:
    items, index, train = _setup(corpus, tmp_path)
    clean = _table(train)
    _, rej, _, stats = rp.decide_table(clean, index, 0.1)
    assert stats["docs_rejected"] == 0 and len(rej) == 0 and stats["hits"] == []
    rng = random.Random(0)
    leaky = rng.sample(range(len(train)), 25)
    planted = _plant([train[i] for i in leaky], items, 13, rng)
    kept, rej, reasons, stats = rp.decide_table(_table(train), index, 0.1)
    assert set(rej.column("id").to_pylist()) == set(planted)  # all found, nothing else
    assert len(kept) + len(rej) == len(train) == stats["docs_in"]
    by_item = {i.id: i.task for i in items}
    want = {d: f"decontam.{by_item[i]}" for d, i in planted.items()}
    assert dict(zip(rej.column("id").to_pylist(), reasons.to_pylist(), strict=True)) == want
    report = rp.build_report(tmp_path, rp.merge_stats([stats]))
    for task in ("task_a", "task_b"):
        hit_items = {i for i in planted.values() if by_item[i] == task}
        docs = [d for d, i in planted.items() if by_item[i] == task]
        r = report["tasks"][task]
        assert r["items"] == 20 and r["items_checked"] == 20
        assert r["items_contaminated"] == len(hit_items)
        assert set(r["contaminated_ids"]) == hit_items
        assert r["docs_affected"] == len(docs)
        src = {d["id"]: d["source"] for d in train}
        assert sum(r["docs_affected_by_source"].values()) == len(docs)
        assert set(r["docs_affected_by_source"]) == {src[d] for d in docs}
        assert 0 < r["mean_overlap"] < 1  # 1 of an item's 28 13-grams was planted


def test_a_window_one_word_short_is_not_a_leak(corpus: list[dict[str, Any]],
                                                tmp_path: Path) -> None:
    items, index, train = _setup(corpus, tmp_path)
    w = ng.words(items[3].text)
    d = dict(train[0], text=train[0]["text"] + " " + " ".join(w[5:17]))
    assert rp.decide_table(_table([d]), index, 0.1)[3]["docs_rejected"] == 0
    d["text"] += " " + w[17]
    assert rp.decide_table(_table([d]), index, 0.1)[3]["docs_rejected"] == 1


def test_cut_removes_exactly_the_span(corpus: list[dict[str, Any]], tmp_path: Path) -> None:
    items, index, train = _setup(corpus, tmp_path)
    span = " ".join(items[2].text.split()[3:20])  # 17 words: five overlapping 13-grams
    before, after = "Some words first, then", "and more words after it."
    doc = {"id": train[0]["id"], "source": "s", "text": f"{before} {span} {after}"}
    kept, rej, _, stats = rp.decide_table(_table([doc]), index, 0.1, action="cut")
    assert len(rej) == 0 and kept.column("text")[0].as_py() == f"{before}  {after}"
    assert stats["edits"] == {"decontam.cut_docs": 1, "decontam.cut_spans": 1}
    assert stats["affected"] == {"task_a" if 2 % 2 else "task_b": {"s": 1}}
    # with a margin, that many characters more on each side
    kept = rp.decide_table(_table([doc]), index, 0.1, action="cut", margin=5)[0]
    assert kept.column("text")[0].as_py() == before[:-4] + after[4:]  # " then" / " and "
    # two separate spans, more than max_cuts allows: dropped, named
    doc2 = dict(doc, text=f"{span} middle words {span} end")
    _, rej, reasons, stats = rp.decide_table(_table([doc2]), index, 0.1, action="cut",
                                             max_cuts=1)
    assert reasons.to_pylist() == ["decontam.too_many_cuts"]
    assert stats["rejections"] == {"decontam.too_many_cuts": {"first": 1, "alone": 1}}
    _, _, reasons, _ = rp.decide_table(_table([dict(doc, text=span + ".")]), index, 0.1,
                                       action="cut")
    assert reasons.to_pylist() == ["decontam.emptied"]


def test_heldout_documents_pass_untouched(corpus: list[dict[str, Any]], tmp_path: Path) -> None:
    items, index, _ = _setup(corpus, tmp_path)
    ids = [d["id"] for d in corpus[40:400]]
    held_id = next(i for i, h in zip(ids, heldout_mask(pa.array(ids), 0.1), strict=True) if h)
    doc = {"id": held_id, "source": "s", "text": items[0].text}
    kept, rej, _, stats = rp.decide_table(_table([doc]), index, 0.1)
    assert len(rej) == 0 and stats["heldout_docs"] == 1 and stats["scanned"] == 0
    assert kept.column("text")[0].as_py() == items[0].text


def test_short_items_and_other_n(corpus: list[dict[str, Any]], tmp_path: Path) -> None:
    items = [Item("t", "s", "short", "only five words in here"),
             Item("t", "s", "long", " ".join(corpus[0]["text"].split()[:30]))]
    rp.write_index(tmp_path, items, 8)
    index = rp.load_index(str(tmp_path / "index.npz"))
    assert index.n == 8 and len(index.hashes) == 23  # 30 - 8 + 1 distinct 8-grams
    leak = " ".join(corpus[0]["text"].split()[10:18])  # 8 words
    _, _, _, stats = rp.decide_table(_table([{"id": "x-train-doc", "source": "s",
                                              "text": "a b c " + leak}]), index, 0.0)
    report = rp.build_report(tmp_path, rp.merge_stats([stats]))["tasks"]["t"]
    assert (report["items"], report["items_checked"], report["items_contaminated"]) == (2, 1, 1)


def test_file_items(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text(
        json.dumps({"id": "q1", "question": "Why?", "answer": "Because."}) + "\n"
        + "not json\n" + json.dumps({"other": 1}) + "\n"
        + json.dumps({"question": "How?"}) + "\n")
    (tmp_path / "lines.txt").write_text("first item\n\nsecond item\n")
    with gzip.open(tmp_path / "zipped.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"text": "gzipped item"}) + "\n")
    items, skipped = file_items([str(tmp_path / "qa.jsonl"), str(tmp_path / "lines.txt")],
                                ["question", "answer"])
    assert [i.text for i in file_items([str(tmp_path / "*.gz")], ["text"])[0]] == [
        "gzipped item"]
    assert skipped == 2
    assert [(i.task, i.id, i.text) for i in items] == [
        ("file/qa", "q1", "Why? Because."), ("file/qa", "file/qa:4", "How?"),
        ("file/lines", "file/lines:1", "first item"),
        ("file/lines", "file/lines:3", "second item")]


def test_the_documented_recipe_validates() -> None:
    from tasks.recipe import parse_recipe
    from tasks.stages import build

    text = DOCS.read_text()
    snippet = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    raw = yaml.safe_load(snippet)
    raw["stages"]["extra"][0]["with"]["paths"] = [str(CORPUS)]
    recipe = parse_recipe({"name": "d", "input": {"paths": [str(CORPUS)]}, **raw})
    names = [s.name for s in build(recipe)]
    assert names.index("filter") < names.index("decontaminate") < names.index("tokenize")
    from tasks.stage import load_object

    cls = load_object("tasks.decontam.stage:Decontaminate")
    with pytest.raises(ValueError, match="needs evaluation items"):
        cls.Config(own_tasks=False)


def test_harness_items_from_a_local_task(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval", reason="the lmeval extra is not installed")
    from tasks.decontam.items import harness_items

    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"context": f"Question {i} is", "choices":
                                        [" red", " blue"], "gold": i % 2}) + "\n"
                            for i in range(3)))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mc.yaml").write_text(yaml.safe_dump({
        "task": "decontam_mc", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "output_type": "multiple_choice", "test_split": "test",
        "doc_to_text": "{{context}}", "doc_to_target": "{{gold}}",
        "doc_to_choice": "{{choices}}", "target_delimiter": "",
        "metric_list": [{"metric": "acc"}]}))
    items = harness_items(["decontam_mc"], [str(tmp_path / "tasks")])
    assert [(i.task, i.text) for i in items] == [
        ("harness/decontam_mc", "Question 0 is red"), ("harness/decontam_mc", "Question 1 is blue"),
        ("harness/decontam_mc", "Question 2 is red")]
