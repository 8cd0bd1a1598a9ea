"""The stability gap through the flow: a run continues the sample run's model on a new slice
(train.init_from: its checkpoint folder), training on the slice's top rows by a filter score
and measuring the old domain's loss -- data-parallel on two Ray Train workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.catalog import Catalog

pytestmark = pytest.mark.slow
BY = "gopher_quality_alpha_words_frac"


def test_stability_run_records_the_old_domain_curve(sample_run: dict[str, Any],
                                                    sample_lines: list[str], tmp_path: Path,
                                                    write_recipe: Any) -> None:
    from flows.pipeline import run_recipe

    stages = {s["stage"]: s for s in sample_run["summary"]["stages"]}
    init_ckpt = Path(stages["train"]["output_path"]) / "checkpoint"  # read only
    (tmp_path / "new.jsonl").write_text("\n".join(sample_lines[2::10]) + "\n")
    root = tmp_path / "root"
    recipe = write_recipe(tmp_path / "new.yaml", tmp_path / "new.jsonl", root)
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["train"].update(
        init_from=str(init_ckpt), replay=0.25, workers=2, max_tokens=8 * 64 * 6, log_every=1,
        stability={"by": BY, "top_percent": 50, "epochs": 2, "probe_steps": 6,
                   "probe_every": 2, "probe_rows": 8})
    recipe.write_text(yaml.safe_dump(raw))
    run = run_recipe(str(recipe), until="train")
    new = {s["stage"]: s for s in run["stages"]}

    data_dir = Path(new["tokenize"]["output_path"])
    assert json.loads((data_dir / "meta.json").read_text())["row_score"] == BY
    manifest = json.loads((Path(new["train"]["output_path"]) / "manifest.json").read_text())
    summary = manifest["summary"]
    assert summary["workers"] == 2  # DDP: every rank probes, rank 0 writes
    plan = summary["data_plan"]["stability"]
    # 6 steps x 8 rows x 0.75 = 36 new rows, 2 epochs -> 18 rows, under 50 % of the scored
    assert plan["budget_rows"] == 36 and plan["rows"] == min(18, plan["scored_rows"] // 2)
    curve = manifest["old_domain_loss"]
    assert curve == summary["old_domain_loss"] and [p[0] for p in curve] == [0, 2, 4, 6]
    assert summary["old_domain_rows"] == "heldout"  # the sample run wrote a held-out split
    assert Path(summary["replay_data"]).resolve() == \
        Path(stages["tokenize"]["output_path"]).resolve()

    catalog = Catalog(root / "catalog.duckdb").show(run["run_id"])
    probes = [(m["step"], m["value"]) for m in catalog["metrics"]
              if m["name"] == "old_domain_loss"]
    assert sorted(probes) == [pytest.approx((s, v)) for s, v in curve]
    html = Path(run["report"]).read_text()
    assert "Old-domain loss (stability gap)" in html
    # the loss-curve artifact has the same row: initial loss, gap, recovery
    from tasks.stage import RunInfo
    from tasks.stages.train import loss_curve

    art = loss_curve(RunInfo(run["run_id"], None, root, Catalog(root / "catalog.duckdb")))
    assert "the stability gap" in art.markdown and f"| 0 | {round(curve[0][1], 4)} |" in \
        art.markdown
