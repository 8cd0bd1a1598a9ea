"""Markdown histograms of score columns (kept + rejected) and the loss sparkline."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.histograms import score_histograms, sparkline


def test_score_histograms_count_every_document(tmp_path: Path) -> None:
    kept, rejected = tmp_path / "k.parquet", tmp_path / "r.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "f_frac": pa.array([0.1, 0.9], pa.float32())}),
                   kept)
    pq.write_table(pa.table({"id": ["c", "d"], "f_frac": pa.array([0.5, None], pa.float32()),
                             "reject_reason": ["x", "y"]}), rejected)
    md = score_histograms([kept, rejected, tmp_path / "missing.parquet"], bins=4)
    assert "### `f_frac`" in md and "n = 3, null = 1" in md
    assert "id" not in md.split("###")[0] and "reject_reason" not in md
    counts = [int(line.split("|")[2]) for line in md.splitlines() if " – " in line]
    assert counts == [1, 0, 1, 1]


def test_sparkline_tracks_the_curve() -> None:
    s = sparkline([5.0, 4.0, 3.0, 3.0, 2.0])
    assert len(s) == 5 and s[0] == "█" and s[-1] == "▁" and s[2] == s[3]
    assert sparkline([]) == ""
