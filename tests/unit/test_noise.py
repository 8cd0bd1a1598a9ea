"""The noise lab injects what it says, where it says, deterministically."""

from __future__ import annotations

import json
import random

import pytest

from tasks import noise

TEXT = ("Marie Curie was a physicist. Curie discovered polonium with Pierre.\n"
        "Later Curie won two Nobel prizes, and Curie taught in Paris.")


def test_fraction_and_marks_are_deterministic(sample_lines: list[str]) -> None:
    docs = [json.loads(line) for line in sample_lines[:1000]]
    ids, texts = [d["id"] for d in docs], [d["text"] for d in docs]
    out, marks = noise.inject(ids, texts, 0.3, 0.1, seed=1)
    assert (out, marks) == noise.inject(ids, texts, 0.3, 0.1, seed=1)
    touched = [m is not None for m in marks]
    assert 0.25 < sum(touched) / len(docs) < 0.35
    for o, t, m in zip(out, texts, marks, strict=True):
        if m is None:
            assert o == t  # clean documents are untouched
    assert sum(o != t for o, t in zip(out, texts, strict=True)) >= 0.9 * sum(touched)


def test_static_kinds() -> None:
    rng = random.Random(0)
    t = noise.typos(TEXT, 1.0, rng)
    assert t != TEXT and len(t) == len(TEXT) and sorted(t) == sorted(TEXT)
    d = noise.word_drop(TEXT, 0.5, random.Random(0))
    assert len(d.split()) < len(TEXT.split())
    b = noise.boilerplate(TEXT, 0.5, random.Random(0))
    assert any(line in noise.BOILERPLATE for line in b.split("\n"))


def test_entity_swap_is_consistent_after_first_mention() -> None:
    out = noise.entity_swap(TEXT, ["Bohr"], random.Random(3))
    swapped = [e for e in ("Marie", "Curie", "Pierre", "Later", "Nobel", "Paris")
               if out.count(e) < TEXT.count(e)]
    assert len(swapped) == 1
    old = swapped[0]
    assert out.count(old) == 1 and out.find(old) == TEXT.find(old)  # first mention kept
    assert out.count("Bohr") == TEXT.count(old) - 1  # every later mention replaced


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise.inject(["a"], ["b"], 1.0, 0.1, kinds=["gremlins"])


def test_noise_as_a_rewrite_backend(tmp_path, sample_lines: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.recipe import RewriteConfig
    from tasks.rewrite import rewrite_shard

    docs = [json.loads(line) for line in sample_lines[:200]]
    pq.write_table(pa.table({"id": [d["id"] for d in docs],
                             "text": pa.array([d["text"] for d in docs], pa.large_string())}),
                   tmp_path / "in.parquet")
    cfg = RewriteConfig(backend="noise", fraction=0.5, intensity=0.2).model_dump()
    stats = rewrite_shard(str(tmp_path / "in.parquet"), str(tmp_path / "k.parquet"),
                          str(tmp_path / "r.parquet"), cfg)
    assert stats["docs_in"] == stats["docs_kept"] == 200
    out = pq.read_table(tmp_path / "k.parquet").to_pylist()
    marked = [r for r in out if r["noise"]]
    assert 70 < len(marked) < 130
    by_id = {d["id"]: d["text"] for d in docs}
    assert all(r["text"] == by_id[r["id"]] for r in out if not r["noise"])


def test_catch_rates_per_rule() -> None:
    """recall over noised docs, caught = of noised docs whose clean original passed, false
    positives over untouched docs; `any` is the union of the rules."""
    import numpy as np

    noised = np.array([True, True, True, True, False, False, False, False])
    after = {"r1": np.array([1, 1, 0, 0, 1, 0, 0, 0], bool),
             "r2": np.array([0, 0, 1, 0, 0, 0, 0, 0], bool)}
    before = {"r1": np.array([1, 0, 0, 0, 1, 0, 0, 0], bool),
              "r2": np.zeros(8, bool)}
    rows = {r["rule"]: r for r in noise.catch_rates(noised, after, before)}
    assert rows["r1"]["recall"] == 0.5 and rows["r1"]["false_pos"] == 0.25
    assert rows["r1"]["caught"] == pytest.approx(1 / 3)  # doc 1 of docs 1-3 (doc 0 failed before)
    assert rows["r2"]["recall"] == 0.25 and rows["r2"]["false_pos"] == 0.0
    assert rows["any"]["recall"] == 0.75 and rows["any"]["false_pos"] == 0.25
    assert rows["any"]["caught"] == pytest.approx(2 / 3)
    assert rows["any"]["noised"] == 4 and rows["any"]["clean"] == 4


def test_rule_failures_see_boilerplate() -> None:
    """Boilerplate lines push a document over a line rule that its clean version passes."""
    from tasks.filters.base import get_filter

    text = "\n".join(f"This is a full sentence number {i} about the river." for i in range(12))
    noisy = noise.boilerplate(text, 1.0, random.Random(0))
    configs = {"fineweb_quality": get_filter("fineweb_quality").Config()}
    clean = noise.rule_failures([text], ["en"], configs)
    dirty = noise.rule_failures([noisy], ["en"], configs)
    assert set(clean) == set(dirty) and not any(v[0] for v in clean.values())
    assert any(v[0] for v in dirty.values())
