"""Every --json on a real completed run is strict JSON; `show --json` carries what `show` prints;
the composition `show` reports matches the run's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.cli.common import print_json
from tasks.catalog import Catalog
from tasks.composition import MEASURED

pytestmark = pytest.mark.slow


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN and +-Infinity, as jq and JSON.parse do."""
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return strict_loads(out)


def copy_catalog(sample_run: dict[str, Any], tmp: Path) -> Path:
    """A data root of its own whose catalog is the sample run's (its stage rows point at the
    sample run's files): commands that write (compare's decisions) leave the fixture alone."""
    root = tmp / "root"
    root.mkdir()
    for name in ("catalog.duckdb", "catalog.read.duckdb"):
        shutil.copyfile(sample_run["root"] / name, root / name)
    return root


def _section(text: str, header: str) -> list[list[str]]:
    """The split lines of `show`'s section starting with ``header``, up to a blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 1
    out = []
    for line in lines[start:]:
        if not line.strip():
            break
        out.append(line.split())
    return out


def test_every_json_is_strict_and_show_json_has_what_show_prints(
        sample_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_catalog(sample_run, tmp_path)
    rid, dr = sample_run["run_id"], ["--data-root", str(root)]

    assert rid in {r["run_id"] for r in run_json(capsys, "runs", *dr)}
    shown = run_json(capsys, "show", rid, *dr)
    assert main(["show", rid, *dr]) == 0
    text = capsys.readouterr().out
    # the rejections by rule and the evaluation rows, exactly as `show` prints them
    assert shown["rejections"] and shown["evals"]
    assert [[r["stage"], r["rule"], str(r["docs"]), str(r["docs_alone"])]
            for r in shown["rejections"]] == _section(text, "rejections")
    assert [[e["task"], e["metric"], f"{e['value']:.4f}"] for e in shown["evals"]] == \
        _section(text, "evaluation:")
    cat = Catalog(root / "catalog.duckdb", snapshot=True).show(rid)
    assert len(shown["evals"]) == len(cat["evals"])
    assert {s["stage"] for s in shown["stages"]} >= {"ingest", "filter", "tokenize", "train",
                                                      "evaluate"}
    assert {"recipe", "error", "started_at", "composition"} <= set(shown)

    assert [s["stage"] for s in run_json(capsys, "stages")][0] == "ingest"

    # one seed, no scored checkpoints: SNR is undefined -> null, not NaN
    rows = run_json(capsys, "compare", rid, rid, "--boot", "100", *dr)
    assert rows and all(r["snr"] is None and r["diff"] == 0 for r in rows)

    # a promotion whose statistics hold that NaN, as a refresh records it
    from tasks.compare import compare, evaluate_paths

    stats = compare(evaluate_paths(cat["stages"]), evaluate_paths(cat["stages"]), n_boot=50)
    assert any(r["snr"] != r["snr"] for r in stats)  # NaN in the catalog
    Catalog(root / "catalog.duckdb").record_promotion("slice", rid, None, True, "not_worse",
                                                      "test", ["ckpt"], stats)
    promoted = run_json(capsys, "promoted", "slice", *dr)
    assert promoted["run_id"] == rid and promoted["stats"][0]["snr"] is None
    assert run_json(capsys, "promoted", "slice", "--history", *dr)[0]["promoted"] is True

    # `run --json` prints the run's summary through the same helper
    print_json(sample_run["summary"])
    assert strict_loads(capsys.readouterr().out)["run_id"] == rid


def test_show_composition_matches_the_run_files(sample_run: dict[str, Any],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rid, root = sample_run["run_id"], sample_run["root"]
    comp = run_json(capsys, "show", rid, "--data-root", str(root))["composition"]
    stages = {s["stage"]: s for s in sample_run["summary"]["stages"]}
    manifest = {name: json.loads((Path(s["output_path"]) / "manifest.json").read_text())
                for name, s in stages.items()}
    rows = {(r["stage"], r["by"], r["key"]): r for r in comp["stages"]}
    assert list(dict.fromkeys(r["stage"] for r in comp["stages"])) == \
        ["ingest", "filter", "tokenize"]

    # documents and bytes per source and language: the kept Parquet files, read here whole
    for stage in ("ingest", "filter"):
        docs = [r for p in manifest[stage]["outputs"]["kept"]
                for r in pq.read_table(root / p, columns=["source", "lang", "text"]).to_pylist()]
        for by in ("source", "lang"):
            want: dict[str, list[int]] = {}
            for d in docs:
                w = want.setdefault(d[by] or "", [0, 0])
                w[0] += 1
                w[1] += len(d["text"].encode("utf-8"))
            got = {k[2]: [r["docs"], r["bytes"]] for k, r in rows.items() if k[:2] == (stage, by)}
            assert got == want, (stage, by)
        assert sum(r["docs"] for k, r in rows.items() if k[:2] == (stage, "source")) == \
            manifest[stage]["docs_kept"]

    # tokenize: measured tokens per source; training docs = kept minus held out
    tok = manifest["tokenize"]
    got = {k[2]: r for k, r in rows.items() if k[:2] == ("tokenize", "source")}
    assert {s: r["tokens"] for s, r in got.items()} == tok["tokens_by_source"]
    assert all(r["tokens_basis"] == MEASURED for r in got.values())
    assert sum(r["docs"] for r in got.values()) == tok["train_docs"]

    # training: available = packed rows x seq_len; with the dropped tokens, all tokenized
    meta = json.loads((root / tok["outputs"]["data_dir"] / "meta.json").read_text())
    train = {r["source"]: r for r in comp["training"]}
    for src, n in tok["tokens_by_source"].items():
        assert train[src]["tokens_available"] + tok["tokens_dropped_by_source"].get(src, 0) == n
        assert train[src]["rows"] * meta["seq_len"] == train[src]["tokens_available"]
        assert train[src]["epochs"] == pytest.approx(train[src]["tokens_seen"]
                                                     / train[src]["tokens_available"])
    summary = manifest["train"]["summary"]
    assert sum(r["tokens_seen"] for r in train.values()) == summary["tokens"]

    assert main(["show", rid, "--data-root", str(root)]) == 0
    text = capsys.readouterr().out
    assert "tokens per source and language" in text and "training (seed 0)" in text
