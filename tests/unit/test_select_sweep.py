"""``datamill sweep``'s arithmetic (tasks/select/sweep.py) on a filter output written here:
which documents each keep setting keeps, per source, in documents and bytes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tasks.select.sweep import read_pool, sweep
from tasks.store import write_parquet

COL = "dclm_fasttext_score"


def _filter_output(root: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Two shards of kept and rejected documents, as the filter stage writes them."""
    rng = np.random.default_rng(0)
    docs = []
    for i in range(200):
        src = ["wiki", "code", "forum"][i % 3]
        reason = None if i % 4 else ("gopher_quality.min_words" if i % 8 else "top_k.below_cut")
        docs.append({"id": f"d{i}", "text": "é" * int(rng.integers(1, 50)), "source": src,
                     COL: None if i % 23 == 0 else float(rng.random()), "reject_reason": reason})
    outputs: dict[str, list[str]] = {"kept": [], "rejected": []}
    for shard in range(2):
        part = docs[shard::2]
        for kind, rows in (("kept", [d for d in part if d["reject_reason"] is None]),
                           ("rejected", [d for d in part if d["reject_reason"]])):
            cols = ["id", "text", "source", COL] + (["reject_reason"] if kind == "rejected"
                                                     else [])
            t = pa.table({c: [d[c] for d in rows] for c in cols})
            rel = f"stages/filter/v/{kind}/part-{shard:05d}.parquet"
            write_parquet(t, root / rel)
            outputs[kind].append(rel)
    manifest = {"version": "v", "outputs": outputs,
                "config": {"filter": {"filters": {"gopher_quality": {}}}}}
    return manifest, docs


@pytest.mark.parametrize("among", ["passing", "all", "kept"])
def test_each_setting_keeps_the_top_k_percent_per_source(tmp_path: Path, among: str) -> None:
    manifest, docs = _filter_output(tmp_path)
    pool = read_pool(tmp_path, manifest, COL, among)  # type: ignore[arg-type]
    if among == "kept":
        docs = [d for d in docs if d["reject_reason"] is None]
    elif among == "passing":  # a document rule's rejections are out; a corpus rule's are in
        docs = [d for d in docs if not (d["reject_reason"] or "").startswith("gopher_quality.")]
    scored = [d for d in docs if d[COL] is not None]
    assert len(pool.score) == len(scored) and pool.unscored == len(docs) - len(scored)
    rows = sweep(pool, [5, 10, 50, 100])
    for k, row in zip([5, 10, 50, 100], rows, strict=True):
        n = math.ceil(len(scored) * k / 100)
        best = sorted(scored, key=lambda d: -d[COL])[:n]
        assert row["docs"] == n and row["pool_docs"] == len(scored)
        assert row["cut"] == pytest.approx(best[-1][COL])
        assert row["bytes"] == sum(len(d["text"].encode()) for d in best)
        for s in row["sources"]:
            mine = [d for d in best if d["source"] == s["source"]]
            assert s["docs"] == len(mine)
            assert s["bytes"] == sum(len(d["text"].encode()) for d in mine)
            assert s["pool_docs"] == sum(d["source"] == s["source"] for d in scored)
        assert sum(s["byte_share"] for s in row["sources"]) == pytest.approx(1.0)
    assert rows[-1]["bytes"] == rows[-1]["pool_bytes"]


def test_ascending_keeps_the_lowest(tmp_path: Path) -> None:
    manifest, docs = _filter_output(tmp_path)
    pool = read_pool(tmp_path, manifest, COL, "all")
    low = sweep(pool, [10], ascending=True)[0]
    scores = sorted(d[COL] for d in docs if d[COL] is not None)
    assert low["cut"] == pytest.approx(scores[low["docs"] - 1])


def test_an_unknown_score_is_an_error(tmp_path: Path) -> None:
    manifest, _ = _filter_output(tmp_path)
    with pytest.raises(ValueError, match="no column 'nope'"):
        read_pool(tmp_path, manifest, "nope")
