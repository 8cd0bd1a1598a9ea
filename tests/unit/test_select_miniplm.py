"""MiniPLM difference sampling (tasks/select/miniplm.py) on a corpus built with a known answer:
a reference proxy trained on English text, a teacher trained on English and French, each
with its own tokenizer. Held-out French documents are teacher-easy and reference-hard: they
must rank first by miniplm_score = reference bpb − teacher bpb, and top_k keeps them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError
from test_select_loss import SAMPLE, execute, make_checkpoint, read_kept, setup_run, write_pool

from tasks.select.miniplm import COLUMN, Config, MiniPLM

STEPS = 30


def _docs() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        out.setdefault((d["source"], d["lang"]), []).append(d["text"])
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    docs = _docs()
    en, fr = docs[("wikipedia-summaries", "en")], docs[("wikipedia-summaries", "fr")]
    devil = docs[("devils-dictionary", "en")]
    tmp = tmp_path_factory.mktemp("miniplm")
    reference = make_checkpoint(tmp / "ref", en[:150], seed=0, steps=STEPS)
    teacher = make_checkpoint(tmp / "teacher", en[:150] + fr[:150], seed=0, steps=STEPS)
    # the pool: held-out documents only; the planted ones are French
    pool = [t[:400] for t in en[200:212] + devil[:6] + fr[200:206]]
    planted = set(range(18, 24))
    root = tmp / "root"
    rels = write_pool(root, pool, shards=2)
    run, up = setup_run(root, rels, len(pool))
    stage = MiniPLM(Config(reference={"path": str(reference), "label": "small"},
                           teacher={"path": str(teacher), "label": "large"}, max_tokens=128))
    body, ex, out = execute(stage, run, up)
    return {"root": root, "body": body, "planted": planted, "pool": pool}


def test_teacher_easy_reference_hard_documents_rank_first(planted: dict[str, Any]) -> None:
    body = planted["body"]
    assert body["docs_in"] == body["docs_kept"] == len(planted["pool"])
    t = read_kept(planted["root"], body)
    ref, tea = t.column("loss_small").to_numpy(), t.column("loss_large").to_numpy()
    score = t.column(COLUMN).to_numpy()
    assert score == pytest.approx(ref - tea, rel=1e-12)
    order = np.argsort(-score, kind="stable")
    top = set(order[:len(planted["planted"])].tolist())
    assert top == planted["planted"], (sorted(top), score.round(3).tolist())
    # the planted documents are easier for the teacher than for the reference, the others not
    p = np.array(sorted(planted["planted"]))
    assert (tea[p] < ref[p]).all()


def test_top_k_keeps_the_planted_documents(planted: dict[str, Any], tmp_path: Path) -> None:
    from tasks.corpus import top_k
    from tasks.filter import filter_local

    body = planted["body"]
    scored = [str(planted["root"] / r) for r in body["outputs"]["kept"]]
    pct = 100 * len(planted["planted"]) / len(planted["pool"])
    stats = filter_local(scored, str(tmp_path / "out"), {},
                         {"top_k": top_k.Config(column=COLUMN, percent=pct)})
    assert sum(s["docs_kept"] for s in stats) == len(planted["planted"])
    kept = pa.concat_tables([pq.read_table(p, columns=["id"])
                             for p in sorted((tmp_path / "out" / "kept").glob("*.parquet"))])
    assert set(kept.column("id").to_pylist()) == {f"d{i}" for i in planted["planted"]}


def test_reference_and_teacher_must_differ(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must differ"):
        Config(reference={"run": "a", "label": "x"}, teacher={"run": "b", "label": "x"})
