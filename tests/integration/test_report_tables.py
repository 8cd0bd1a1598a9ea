"""The run report's epochs per source and where the time went, on a real run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tasks.catalog import Catalog
from tasks.profile import profile_rows

pytestmark = pytest.mark.slow


def test_profile_and_epochs_of_a_real_run(sample_run: dict[str, Any], sample_slice: Path
                                          ) -> None:
    run = Catalog(sample_run["root"] / "catalog.duckdb").show(sample_run["run_id"])
    rows = {(r["stage"], r["step"]): r for r in profile_rows(run["stages"])}
    assert {("ingest", "ingest"), ("score", "score"), ("filter", "filter"),
            ("tokenize", "tokenize")} <= set(rows)
    for r in rows.values():
        assert r["shards"] > 0 and r["wall_s"] > 0 and r["cpu_s"] >= 0
    # ingest's workers read at least the input file, and wrote its Parquet shards
    ingest = rows[("ingest", "ingest")]
    assert ingest["mb_read"] >= sample_slice.stat().st_size / 1e6
    out = next(Path(s["output_path"]) for s in run["stages"] if s["stage"] == "ingest")
    written = sum(p.stat().st_size for p in out.rglob("*.parquet")) / 1e6
    assert ingest["mb_written"] + 0.01 >= written  # rows round MB to 2 decimals
    html = Path(run["report"]).read_text()
    assert "<h2>Where the time goes</h2>" in html and "<h2>Epochs per source</h2>" in html
