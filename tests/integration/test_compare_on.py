"""`compare` on runs scored on different held-out data: the explanation, then `--on` scoring both
models on one held-out set (a file, or a run's held-out documents) with the evaluate stage's
own work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from tasks.catalog import Catalog

pytestmark = pytest.mark.slow


def strict_loads(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_compare_without_shared_items_then_on_one_heldout_set(
        sample_run: dict[str, Any], sample_lines: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.evaluate import evaluate_stage

    # a data root of its own, with the sample run's catalog (stage rows point at its files)
    root = tmp_path / "root"
    root.mkdir()
    for name in ("catalog.duckdb", "catalog.read.duckdb"):
        shutil.copyfile(sample_run["root"] / name, root / name)
    rid = sample_run["run_id"]
    cat = Catalog(root / "catalog.duckdb")
    run = cat.show(rid)
    st = {s["stage"]: s for s in run["stages"]}

    # held-out documents the sample run never saw (it took every 5th line): ids not in its
    # items; no source field for one of them (the file's name stands in)
    docs = [json.loads(line) for line in sample_lines[1::5][:12]]
    path = tmp_path / "other-heldout.jsonl"
    path.write_text("\n".join(json.dumps({"id": d["id"], "text": d["text"], "lang": d["lang"],
                                          **({"source": d["source"]} if i else {})})
                              for i, d in enumerate(docs)) + "\n")

    # "night-2": the same model scored by the evaluate stage's work on those documents, as a
    # refresh run scores its model on its own new documents
    evald = tmp_path / "night-2-eval"
    as_parquet = tmp_path / "night-2.parquet"
    pq.write_table(pa.Table.from_pylist([{k: d[k] for k in ("id", "text", "source", "lang")}
                                         for d in docs]), as_parquet)
    res = evaluate_stage(Path(st["train"]["output_path"]), Path(st["tokenize"]["output_path"]),
                         [str(as_parquet)], 1.0, None, 16, ["next_sentence", "final_word"], 500,
                         0, 0, 0, evald / "items.parquet")
    cat.start_run("night-2", "slice", "r.yaml", {})
    cat.record_stage("night-2", {"stage": "train", **{k: st["train"][k] for k in (
        "version", "docs_in", "docs_kept", "docs_rejected")}}, 0.0, st["train"]["output_path"],
        True)
    cat.record_stage("night-2", {"stage": "evaluate", "version": "night-2",
                                 "docs_in": res["docs"], "docs_kept": res["docs"],
                                 "docs_rejected": 0}, 0.0, str(evald), False)
    dr = ["--data-root", str(root), "--boot", "100"]

    rc = main(["compare", rid, "night-2", *dr])
    err = capsys.readouterr().err
    assert rc == 1 and "0 items in common" in err and f"--on {rid}" in err

    # --on the file: both models scored on those 12 documents; paired rows, nothing to tell
    rc = main(["compare", rid, "night-2", "--on", str(path), "--json", *dr])
    rows = {(r["task"], r["metric"]): r for r in strict_loads(capsys.readouterr().out)}
    assert rc == 0
    assert rows[("heldout", "bpb")]["items"] == len(docs)
    assert rows[("heldout", "bpb")]["a"] == pytest.approx(res["overall"]["bpb"])
    assert all(r["diff"] == 0 and r["verdict"] == "can't tell" for r in rows.values())
    assert ("heldout/other-heldout.jsonl", "bpb") in rows  # the document without a source
    scored = list((root / "compare" / "on").glob("*/items.parquet"))
    assert len(scored) == 1  # one model, one held-out set: scored once, by content
    ids = set(pq.read_table(scored[0]).column("item_id").to_pylist())
    assert {d["id"] for d in docs} <= ids

    # --on the sample run: its own held-out documents, read as its evaluate stage read them:
    # the same numbers as that stage's
    rc = main(["compare", "night-2", rid, "--on", rid, *dr])
    text = capsys.readouterr().out
    assert rc == 0 and f"all scored on run {rid}'s held-out documents" in text
    own = {(e["task"], e["metric"]): e["value"] for e in run["evals"]}
    got = next(line.split() for line in text.splitlines() if line.startswith("heldout "))
    assert float(got[2]) == pytest.approx(own[("heldout", "bpb")], abs=1e-4)

    # an unknown held-out set is a clear error
    assert main(["compare", rid, "night-2", "--on", "no-such-run", *dr]) == 1
    assert "no-such-run" in capsys.readouterr().err
