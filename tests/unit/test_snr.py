"""SNR of accuracy vs the gold continuation's bits per byte on constructed per-item scores of
known signal and noise, and the metric with the higher SNR deciding in `compare` and the
refresh gate."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.refresh import decide
from tasks import snr as snr_choice
from tasks.catalog import Catalog
from tasks.compare import compare, compare_many

N = 100
SEED_SHIFT = (-1, 0, 1)  # three seeds around each model's mean


def stage(path: Path, acc: float, bpb: float) -> Path:
    """An evaluate stage whose final model scores exactly ``acc`` and ``bpb`` on task t (and
    ``bpb`` on the held-out documents)."""
    hits = round(acc * N)
    rows = [{"task": "t", "metric": "acc", "item_id": f"d{i}", "source": "s",
             "num": float(i < hits), "den": 1.0, "checkpoint": "final"} for i in range(N)]
    rows += [{"task": "t", "metric": "bpb", "item_id": f"d{i}", "source": "s",
              "num": bpb + (0.3 if i % 2 else -0.3), "den": 1.0, "checkpoint": "final"}
             for i in range(N)]
    rows += [{"task": "heldout", "metric": "bpb", "item_id": f"d{i}", "source": "s",
              "num": 2 * bpb, "den": 2.0, "checkpoint": "final"} for i in range(N)]
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "items.parquet")
    return path


def models(root: Path, acc_step: float, bpb_step: float) -> dict[str, list[Path]]:
    """Three models: accuracy 0.40, 0.45, 0.50 with seeds +-acc_step; bits per byte 1.50,
    1.45, 1.40 with seeds +-bpb_step."""
    return {f"m{k}": [stage(root / f"m{k}-s{s}", 0.40 + 0.05 * k + acc_step * d,
                            1.50 - 0.05 * k + bpb_step * d)
                      for s, d in enumerate(SEED_SHIFT)] for k in range(3)}


def by_key(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["task"], r["metric"]): r for r in rows}


def test_snr_recovers_known_signal_and_noise(tmp_path: Path) -> None:
    res = compare_many(models(tmp_path, 0.04, 0.005), n_boot=200)
    snr = by_key(res["snr"])
    # signal = range of the model means / their mean; noise = within-model std / mean
    assert snr[("t", "acc")]["signal"] == pytest.approx(0.10 / 0.45)
    assert snr[("t", "acc")]["noise"] == pytest.approx(0.04 / 0.45)
    assert snr[("t", "acc")]["snr"] == pytest.approx(2.5)
    assert snr[("t", "bpb")]["signal"] == pytest.approx(0.10 / 1.45)
    assert snr[("t", "bpb")]["snr"] == pytest.approx(20.0)
    assert snr[("aggregate", "acc_centred")]["snr"] == pytest.approx(2.5)  # a linear map
    assert snr[("aggregate", "bpb")]["snr"] == pytest.approx(20.0)
    choice = {c["task"]: c for c in res["choice"]}
    assert choice["t"]["metric"] == "bpb" and choice["t"]["measured"]
    assert choice["t"]["acc_snr"] == pytest.approx(2.5)
    assert choice["aggregate"]["metric"] == "bpb"
    rows = [r for r in res["rows"] if r["model"] == "m2"]
    deciding = {(r["task"], r["metric"]) for r in rows if r["decides"]}
    assert deciding == {("t", "bpb"), ("aggregate", "bpb"), ("heldout", "bpb"),
                        ("heldout/s", "bpb")}
    note = by_key(rows)[("t", "bpb")]["note"]
    assert "bpb decides" in note and "20.00" in note and "2.50" in note
    assert by_key(rows)[("t", "bpb")]["verdict"] == "better"  # lower bits per byte
    # --min-snr cuts each aggregate by its own metric's SNR (acc 2.5, bpb 20)
    cut = compare_many(models(tmp_path / "again", 0.04, 0.005), n_boot=100, min_snr=10)
    assert cut["dropped"] == ["t"] and cut["dropped_bpb"] == []


def test_accuracy_decides_when_its_snr_is_higher(tmp_path: Path) -> None:
    rows = compare(*[ps for ps in models(tmp_path, 0.01, 0.05).values()][:2], n_boot=200)
    snr = by_key(rows)
    assert snr[("t", "acc")]["snr"] == pytest.approx(5.0)  # 0.05 / 0.01
    assert snr[("t", "bpb")]["snr"] == pytest.approx(1.0)  # 0.05 / 0.05
    assert snr[("t", "acc")]["decides"] and not snr[("t", "bpb")]["decides"]
    # the refresh gate names bits per byte; accuracy has the higher SNR, so it decides
    ok, why = decide(rows, ["t/bpb"], "not_worse")
    assert "t/acc" in why and "acc decides" in why and "the recipe names t/bpb" in why
    assert ok == (snr[("t", "acc")]["verdict"] != "worse")


def test_unmeasured_snr_falls_back_to_bits_per_byte(tmp_path: Path) -> None:
    one_seed = {k: v[:1] for k, v in models(tmp_path, 0.04, 0.005).items()}
    res = compare_many(one_seed, n_boot=100)
    choice = {c["task"]: c for c in res["choice"]}["t"]
    assert not choice["measured"] and choice["metric"] == snr_choice.DEFAULT_METRIC == "bpb"
    assert "not measured" in choice["why"]
    # the gate says so too, and a metric without a row keeps the named one
    rows = [{k: v for k, v in r.items() if k != "model"} for r in res["rows"]
            if r["model"] == "m1"]
    metrics, said = snr_choice.deciding_metrics(rows, ["t/acc", "heldout/bpb"])
    assert metrics == ["t/bpb", "heldout/bpb"] and "not measured" in said[0]
    no_bpb = [r for r in rows if r["metric"] != "bpb" or r["task"] == "heldout"]
    assert snr_choice.deciding_metrics(no_bpb, ["t/acc"])[0] == ["t/acc"]


def test_choice_rules() -> None:
    def rows(acc: float, bpb: float) -> list[dict]:
        return [{"task": "x", "metric": "acc", "snr": acc},
                {"task": "x", "metric": "bpb", "snr": bpb},
                {"task": "heldout", "metric": "bpb", "snr": 9.0}]

    assert [c["metric"] for c in snr_choice.choose(rows(3.0, 1.0))] == ["acc"]
    assert [c["metric"] for c in snr_choice.choose(rows(1.0, 1.0))] == ["bpb"]  # tie
    nan = snr_choice.choose(rows(float("nan"), 4.0))[0]
    assert nan["metric"] == "bpb" and not nan["measured"]
    assert [c["task"] for c in snr_choice.choose(rows(1.0, 2.0))] == ["x"]  # heldout: no pair


def _register(cat: Catalog, run_id: str, folders: list[Path]) -> None:
    cat.start_run(run_id, "snr", "r.yaml", {})
    for k, f in enumerate(folders):
        cat.record_stage(run_id, {"stage": "evaluate", "version": f"{run_id}-{k}",
                                  "docs_in": N, "docs_kept": N, "docs_rejected": 0}, 1.0,
                         str(f), False)


def test_compare_command_says_which_metric_decides(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cat = Catalog(tmp_path / "catalog.duckdb")
    for name, folders in models(tmp_path / "stages", 0.04, 0.005).items():
        _register(cat, name, folders)
    rc = main(["compare", "m0", "m1", "m2", "--data-root", str(tmp_path), "--boot", "100"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "deciding metric per multiple-choice task" in out
    table = out[out.index("deciding metric per multiple-choice task"):].splitlines()
    assert table[2].split() == ["aggregate", "acc_centred", "2.5", "20.0", "bpb"]
    assert table[3].split() == ["t", "acc", "2.5", "20.0", "bpb"]
    assert "t (m1): bpb decides: SNR bpb 20.00 vs acc 2.50" in out  # the deciding row's note
    assert any(x.split()[:3] == ["m1", "t", "acc"] and x.endswith("(-)")
               for x in out.splitlines())  # accuracy's row is marked: not deciding
    rc = main(["compare", "m0", "m1", "--json", "--data-root", str(tmp_path), "--boot", "100"])
    rows = by_key(json.loads(capsys.readouterr().out))
    assert rc == 0 and rows[("t", "acc")]["decides"] is False and rows[("t", "bpb")]["decides"]
    notes = [d["note"] for d in cat.decisions() if (d["task"], d["metric"]) == ("t", "bpb")]
    assert len(notes) == 3 and all("bpb decides" in n for n in notes)  # 2 + the --json one
