"""tasks/composition.py on stage folders written here: documents, bytes and tokens per source and
language at each stage, and the epochs training saw per source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.composition import (
    ESTIMATED,
    MEASURED,
    RECORDED,
    REPLAYED,
    composition,
    training_exposure,
)
from tasks.train.data import DataOrder

DOCS = [  # id, source, lang, text
    ("a1", "wiki", "en", "hello world " * 10), ("a2", "wiki", "fr", "bonjour " * 7),
    ("a3", "wiki", "en", "é" * 30), ("b1", "docs", "en", "manual page " * 4),
    ("b2", "docs", None, "x" * 17), ("b3", "docs", "de", "straße " * 5),
]


def _stage(root: Path, name: str, version: str, inputs: list[str], **extra: Any
           ) -> dict[str, Any]:
    path = root / "stages" / name / version
    path.mkdir(parents=True, exist_ok=True)
    m = {"stage": name, "version": version, "inputs": inputs, "docs_in": 0, "docs_kept": 0,
         "docs_rejected": 0, **extra}
    (path / "manifest.json").write_text(json.dumps(m))
    return {"stage": name, "output_path": str(path)}


def _parquet(path: Path, docs: list[tuple[Any, ...]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [d[0] for d in docs], "source": [d[1] for d in docs],
                             "lang": [d[2] for d in docs],
                             "text": pa.array([d[3] for d in docs], pa.large_string())}), path)


def _run(root: Path, train_summary: dict[str, Any], train_config: dict[str, Any]
         ) -> list[dict[str, Any]]:
    """ingest -> rewrite (pass-through) -> score -> filter (drops a3 and b3) -> tokenize
    (b1 held out) -> train."""
    _parquet(root / "stages/ingest/i/kept/part-0.parquet", DOCS[:3])
    _parquet(root / "stages/ingest/i/kept/part-1.parquet", DOCS[3:])
    kept_in = ["stages/ingest/i/kept/part-0.parquet", "stages/ingest/i/kept/part-1.parquet"]
    kept = [d for d in DOCS if d[0] not in {"a3", "b3"}]
    _parquet(root / "stages/score/s/kept/part-0.parquet", DOCS)
    _parquet(root / "stages/filter/f/kept/part-0.parquet", kept)
    tok = root / "stages/tokenize/t"
    _parquet(tok / "heldout/part-0.parquet", [d for d in kept if d[0] == "b1"])
    meta = {"seq_len": 4, "train_shards": [
        {"path": "train/part-0.npy", "n_seq": 5, "sources": {"wiki": [0, 3], "docs": [3, 5]}},
        {"path": "train/remainder.npy", "n_seq": 2, "sources": {"wiki": [0, 2]}}]}
    (tok / "meta.json").write_text(json.dumps(meta))
    return [
        _stage(root, "ingest", "i", ["input"], outputs={"kept": kept_in}),
        _stage(root, "rewrite", "r", ["i"], outputs={"kept": kept_in}),
        _stage(root, "score", "s", ["r"], outputs={"kept": ["stages/score/s/kept/part-0.parquet"]}),
        _stage(root, "filter", "f", ["s"],
               outputs={"kept": ["stages/filter/f/kept/part-0.parquet"], "rejected": []}),
        _stage(root, "tokenize", "t", ["f"], outputs={"data_dir": "stages/tokenize/t"},
               tokens_by_source={"wiki": 30, "docs": 9}),
        _stage(root, "train", "n", ["t"], config=train_config, summary=train_summary),
    ]


def _nbytes(docs: list[tuple[Any, ...]]) -> int:
    return sum(len(d[3].encode()) for d in docs)


def test_docs_bytes_and_tokens_per_stage(tmp_path: Path) -> None:
    stages = _run(tmp_path, {"steps": 2}, {"seed": 0, "batch_size": 2, "grad_accum": 1})
    rows = composition(stages)["stages"]
    cell = {(r["stage"], r["by"], r["key"]): r for r in rows}
    # one row set per document set: the pass-through rewrite and score are not repeated
    assert list(dict.fromkeys(r["stage"] for r in rows)) == ["ingest", "filter", "tokenize"]
    wiki = [d for d in DOCS if d[1] == "wiki"]
    assert (cell["ingest", "source", "wiki"]["docs"], cell["ingest", "source", "wiki"]["bytes"]
            ) == (3, _nbytes(wiki))
    assert cell["ingest", "lang", ""]["docs"] == 1  # b2 has no language
    assert cell["filter", "source", "docs"]["bytes"] == _nbytes([DOCS[3], DOCS[4]])
    # tokenize: its training documents (b1 is held out), tokens measured per source
    train_wiki, train_docs = _nbytes(wiki[:2]), _nbytes([DOCS[4]])
    t_wiki, t_docs = cell["tokenize", "source", "wiki"], cell["tokenize", "source", "docs"]
    assert (t_wiki["docs"], t_wiki["bytes"], t_wiki["tokens"], t_wiki["tokens_basis"]) == \
        (2, train_wiki, 30, MEASURED)
    assert (t_docs["docs"], t_docs["tokens"]) == (1, 9)
    # elsewhere estimated: bytes x the source's tokens per byte at tokenize
    ing = cell["ingest", "source", "wiki"]
    assert ing["tokens_basis"] == ESTIMATED
    assert ing["tokens"] == round(_nbytes(wiki) * 30 / train_wiki)
    en = cell["ingest", "lang", "en"]
    assert en["tokens"] == round(_nbytes([DOCS[0], DOCS[2]]) * 30 / train_wiki
                                 + _nbytes([DOCS[3]]) * 9 / train_docs)
    for stage in ("ingest", "filter", "tokenize"):  # languages add up to the sources
        by = {b: [r for r in rows if r["stage"] == stage and r["by"] == b]
              for b in ("source", "lang")}
        assert sum(r["docs"] for r in by["lang"]) == sum(r["docs"] for r in by["source"])
        assert sum(r["bytes"] for r in by["lang"]) == sum(r["bytes"] for r in by["source"])


def test_one_pool_training_is_replayed_as_the_trainer_draws(tmp_path: Path) -> None:
    # 9 draws over 7 rows: one whole epoch, then the next permutation's first 2 rows
    cfg = {"seed": 3, "batch_size": 3, "grad_accum": 1}
    stages = _run(tmp_path, {"steps": 3}, cfg)
    got = {r["source"]: r for r in training_exposure(stages[-1]["output_path"],
                                                     tmp_path / "stages/tokenize/t")}
    # what the trainer's order hands out, micro-batch by micro-batch
    owner = np.array(["wiki"] * 3 + ["docs"] * 2 + ["wiki"] * 2)
    order = DataOrder(7, seed=3)
    drawn = [owner[i] for _ in range(3) for i in order.take(3)]
    for src, rows in (("wiki", 5), ("docs", 2)):
        assert got[src]["rows"] == rows and got[src]["tokens_available"] == rows * 4
        assert got[src]["tokens_seen"] == drawn.count(src) * 4
        assert got[src]["epochs"] == pytest.approx(drawn.count(src) / rows)
        assert got[src]["basis"] == REPLAYED
    assert sum(r["tokens_seen"] for r in got.values()) == 9 * 4


def test_recorded_epochs_are_used_and_mixtures_without_them_are_not_guessed(
        tmp_path: Path) -> None:
    stages = _run(tmp_path, {"steps": 3, "epochs": {"wiki": 0.4, "docs": 1.5}},
                  {"seed": 0, "batch_size": 2, "grad_accum": 1, "source_weights": {"docs": 3}})
    got = {r["source"]: r for r in training_exposure(stages[-1]["output_path"],
                                                     tmp_path / "stages/tokenize/t")}
    assert got["wiki"]["tokens_seen"] == 2 * 4 and got["docs"]["tokens_seen"] == 3 * 4
    assert got["docs"]["epochs"] == 1.5 and got["wiki"]["basis"] == RECORDED

    other = tmp_path / "old"
    stages = _run(other, {"steps": 3},
                  {"seed": 0, "batch_size": 2, "grad_accum": 1, "source_weights": {"docs": 3}})
    rows = training_exposure(stages[-1]["output_path"], other / "stages/tokenize/t")
    assert all(r["tokens_seen"] is None and r["epochs"] is None for r in rows)
