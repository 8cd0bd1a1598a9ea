"""compare_many on synthetic evaluate stages: pairing by id, SNR from checkpoints and seeds,
the aggregate and its SNR threshold, and the decisions report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.compare import AGGREGATE, compare, compare_many, load_items, noise_values


def write_stage(path: Path, p_acc: dict[str, float], bpb: float, rng: np.random.Generator,
                steps: int = 0, n: int = 400) -> Path:
    """An evaluate stage folder: heldout bpb and two 4-choice tasks, for the final model and
    `steps` scored checkpoints (each a little noisier)."""
    rows = []
    for ck in ["final", *(f"step-{10 * (k + 1)}" for k in range(steps))]:
        jitter = 0.0 if ck == "final" else rng.normal(0, 0.01)
        for i in range(n):
            rows.append({"task": "heldout", "metric": "bpb", "item_id": f"d{i}", "source": "s",
                         "num": (bpb + jitter) * 100 * (1 + i % 5), "den": 100.0 * (1 + i % 5),
                         "checkpoint": ck})
        for task, p in p_acc.items():
            for i in range(n):
                hit = float(rng.random() < p + jitter)
                for metric in ("acc", "acc_norm"):
                    rows.append({"task": task, "metric": metric, "item_id": f"d{i}",
                                 "source": "s", "num": hit, "den": 1.0, "checkpoint": ck})
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "items.parquet")
    return path


def test_checkpoint_rows_feed_noise_not_the_verdict(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stage = write_stage(tmp_path / "a", {"t1": 0.5}, 1.5, rng, steps=3)
    loaded = load_items(stage)
    assert set(loaded) == {"final", "step-10", "step-20", "step-30"}
    ids = [f"d{i}" for i in range(400)]
    # the three scored checkpoints, not the final model (the last step is the final model)
    assert len(noise_values([loaded], ("heldout", "bpb"), ids)) == 3


def test_compare_many_snr_aggregate_and_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = [write_stage(tmp_path / f"a{s}", {"strong": 0.40, "flat": 0.5}, 1.60, rng, steps=2)
            for s in range(2)]
    better = [write_stage(tmp_path / f"b{s}", {"strong": 0.60, "flat": 0.5}, 1.50, rng, steps=2)
              for s in range(2)]
    res = compare_many({"base": base, "better": better}, n_boot=300)
    by = {(r["task"], r["metric"]): r for r in res["rows"]}
    assert by[("heldout", "bpb")]["verdict"] == "better"
    assert by[("strong", "acc")]["verdict"] == "better"
    snr = {(r["task"], r["metric"]): r["snr"] for r in res["snr"]}
    assert snr[("strong", "acc")] > 3 * snr[("flat", "acc")]
    agg = by[AGGREGATE]
    assert "flat" in agg["note"] and "strong" in agg["note"]
    # centred accuracy: (acc - 1/4) / (3/4), averaged over both tasks
    assert agg["a"] == pytest.approx(((0.40 + 0.5) / 2 - 0.25) / 0.75, abs=0.05)

    cut = compare_many({"base": base, "better": better}, n_boot=300,
                       min_snr=snr[("flat", "acc")] * 1.5)
    agg_cut = next(r for r in cut["rows"] if (r["task"], r["metric"]) == AGGREGATE)
    assert cut["dropped"] == ["flat"] and "dropped" in agg_cut["note"]
    assert agg_cut["diff"] > agg["diff"]  # the no-signal task no longer dilutes the effect


def test_compare_pairs_only_common_items(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a = write_stage(tmp_path / "a", {"t": 0.5}, 1.5, rng, n=300)
    b = write_stage(tmp_path / "b", {"t": 0.5}, 1.5, rng, n=200)
    rows = compare([a], [b], n_boot=100)
    assert {r["items"] for r in rows if r["task"] != "aggregate"} == {200}
    assert all("model" not in r for r in rows)


def test_decisions_report_has_plot_and_verdicts(tmp_path: Path) -> None:
    from tasks import report_decisions as report

    rng = np.random.default_rng(3)
    base = [write_stage(tmp_path / "a", {"t": 0.4}, 1.6, rng)]
    other = [write_stage(tmp_path / "b", {"t": 0.6}, 1.5, rng)]
    res = compare_many({"base": base, "other": other}, n_boot=100)
    out = report.write_decisions_html("t", {"base": "r1", "other": "r2"}, res["rows"],
                                      res["snr"], tmp_path / "r.html")
    text = out.read_text()
    assert "data:image/png;base64," in text and "better" in text and "Signal and noise" in text
    png = report.decisions_png(res["rows"])
    assert png is not None and png[:4] == b"\x89PNG"
    md = report.decisions_markdown("t", {"base": "r1"}, res["rows"], res["snr"])
    assert "| model | task |" in md


def test_bpb_is_compared_per_source_too(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a = write_stage(tmp_path / "a", {}, 1.5, rng, n=50)
    b = write_stage(tmp_path / "b", {}, 1.4, rng, n=50)
    rows = {(r["task"], r["metric"]): r for r in compare([a], [b], n_boot=100)}
    assert rows[("heldout/s", "bpb")]["diff"] == pytest.approx(rows[("heldout", "bpb")]["diff"])


def test_scores_without_gold_bpb_compare_as_before(tmp_path: Path) -> None:
    """Evaluate stages written before the gold-continuation bpb: no bpb aggregate, no choice;
    accuracy decides its task."""
    rng = np.random.default_rng(5)
    res = compare_many({"a": [write_stage(tmp_path / "a", {"t": 0.4}, 1.6, rng)],
                        "b": [write_stage(tmp_path / "b", {"t": 0.6}, 1.5, rng)]}, n_boot=100)
    keys = {(r["task"], r["metric"]) for r in res["rows"]}
    assert AGGREGATE in keys and ("aggregate", "bpb") not in keys
    assert res["choice"] == [] and res["dropped_bpb"] == []
    by = {(r["task"], r["metric"]): r for r in res["rows"]}
    assert by[("heldout", "bpb")]["decides"] and by[("t", "acc")]["decides"]
    assert not by[("t", "acc_norm")]["decides"]
