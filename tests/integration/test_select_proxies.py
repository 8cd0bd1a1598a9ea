"""The proxy-based selectors through the real flow (Prefect, Dask, Ray, DuckDB), with the proxy
the shared sample run trained, named by its run id and found through that run's catalog
(read-only), beside a random-weight model made here: ``loss_score``, ``preselect`` and
``miniplm`` before ``score``, then ``top_k`` on ``miniplm_score`` in the filter stage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tasks.select import loss

pytestmark = pytest.mark.slow
FT = {"bucket": 50_000, "epoch": 25, "lr": 0.1, "threads": 1}


def _random_model(sample_root: Path, out: Path) -> Path:
    """Random weights with the sample run's tokenizer (read from its tokenize stage)."""
    import torch

    from tasks.train import build_model, save_checkpoint

    data_dir = next((sample_root / "stages" / "tokenize").glob("*/meta.json")).parent
    meta = json.loads((data_dir / "meta.json").read_text())
    torch.manual_seed(0)
    model = build_model("tiny", meta["vocab_size"], meta["seq_len"], meta["eos_id"])
    save_checkpoint(model, data_dir, meta, out)
    return out


@pytest.fixture(scope="module")
def proxies(sample_run: dict[str, Any], write_recipe: Any, sample_slice: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from flows.pipeline import run_recipe

    src_root, rid = Path(sample_run["root"]), sample_run["run_id"]
    catalog = src_root / "catalog.duckdb"
    before = catalog.stat().st_mtime_ns
    tmp = tmp_path_factory.mktemp("proxies")
    rand = _random_model(src_root, tmp / "random" / "checkpoint")
    proxy = {"run": rid, "data_root": str(src_root), "label": "proxy"}
    recipe = yaml.safe_load(write_recipe(tmp / "base.yaml", sample_slice, tmp / "root")
                            .read_text())
    recipe["stages"]["extra"] = [
        {"use": "tasks.select.loss_stage:LossScore", "after": "rewrite",
         "with": {"models": [proxy, {"path": str(rand), "label": "rand"}], "max_tokens": 64}},
        {"use": "tasks.select.preselect:PreSelect", "after": "rewrite",
         "with": {"models": [proxy, {"path": str(rand), "label": "rand", "score": -1.0}],
                  "sample": 200, "fraction": 0.2, "max_tokens": 64, **FT}},
        {"use": "tasks.select.miniplm:MiniPLM", "after": "rewrite",
         "with": {"reference": {"path": str(rand), "label": "rand"}, "teacher": proxy,
                  "max_tokens": 64}}]
    recipe["stages"]["filter"]["corpus"] = {"top_k": {"column": "miniplm_score",
                                                      "percent": 50}}
    path = tmp / "proxies.yaml"
    path.write_text(yaml.safe_dump(recipe))
    summary = run_recipe(str(path), until="filter")
    return {"summary": summary, "root": tmp / "root", "rid": rid, "src_root": src_root,
            "catalog": catalog, "before": before, "rand": rand}


def _manifest(s: dict[str, Any], name: str) -> dict[str, Any]:
    stage = next(x for x in s["stages"] if x["stage"] == name)
    return json.loads((Path(stage["output_path"]) / "manifest.json").read_text())


def _read(root: Path, rels: list[str], cols: list[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(root / r, columns=cols) for r in rels])


def test_stages_run_before_score_and_account(proxies: dict[str, Any]) -> None:
    s = proxies["summary"]
    assert s["status"] == "completed", s
    order = [x["stage"] for x in s["stages"]]
    for name in ("loss_score", "preselect", "miniplm"):
        assert order.index("rewrite") < order.index(name) < order.index("score")
    for x in s["stages"]:
        assert x["docs_in"] == x["docs_kept"] + x["docs_rejected"], x["stage"]
    # the sample run's data root was only read
    assert proxies["catalog"].stat().st_mtime_ns == proxies["before"]


def test_the_run_id_resolves_to_its_trained_proxy(proxies: dict[str, Any]) -> None:
    m = _manifest(proxies["summary"], "loss_score")
    proxy = next(x for x in m["models"] if x["label"] == "proxy")
    ckpt = Path(proxy["checkpoint"])
    assert ckpt.is_relative_to(proxies["src_root"] / "stages" / "train")
    assert proxy["sha256"] == loss.checkpoint_digest(ckpt)
    t = _read(proxies["root"], m["outputs"]["kept"], ["text", "loss_proxy", "loss_rand",
                                                      loss.BYTES])
    assert len(t) == m["docs_in"] and m["unscored"] == t.column("loss_proxy").null_count
    assert m["truncated"] > 0  # max_tokens 64 cuts the longer documents
    trained, rand = (t.column(c).to_numpy(zero_copy_only=False).astype(float)
                     for c in ("loss_proxy", "loss_rand"))
    ok = ~np.isnan(trained)
    assert np.nanmean(trained[ok]) < np.nanmean(rand[ok]) - 0.5  # trained beats random


def test_preselect_reads_the_runs_downstream_score(proxies: dict[str, Any]) -> None:
    from tasks.catalog import Catalog

    m = _manifest(proxies["summary"], "preselect")
    evals = Catalog(proxies["catalog"], snapshot=True).show(proxies["rid"])["evals"]
    want = np.mean([e["value"] for e in evals if e["metric"] == "acc_norm" and e["task"] in
                    ("next_sentence", "final_word") and e["checkpoint"].endswith("checkpoint")])
    proxy = next(x for x in m["models"] if x["label"] == "proxy")
    assert proxy["score"] == pytest.approx(want)
    assert m["sample"]["docs"] == 200 and m["sample"]["positives"] == 40
    kept = _read(proxies["root"], m["outputs"]["kept"], ["preselect_score"])
    assert kept.column("preselect_score").null_count < len(kept)


def test_top_k_keeps_half_by_miniplm_score(proxies: dict[str, Any]) -> None:
    s = proxies["summary"]
    mini = _manifest(s, "miniplm")
    t = _read(proxies["root"], mini["outputs"]["kept"], ["miniplm_score", "loss_rand",
                                                         "loss_proxy"])
    diff = t.column("loss_rand").to_numpy(zero_copy_only=False).astype(float) - \
        t.column("loss_proxy").to_numpy(zero_copy_only=False).astype(float)
    got = t.column("miniplm_score").to_numpy(zero_copy_only=False).astype(float)
    assert np.allclose(got, diff, equal_nan=True)
    f = _manifest(s, "filter")
    stats = f["corpus"]["top_k"]
    assert stats["ranked"] > 100 and stats["kept"] == math.ceil(0.5 * stats["ranked"])
    # what the filter kept (other rules drop some too) is at or above top_k's cut
    kept = _read(proxies["root"], f["outputs"]["kept"], ["miniplm_score"])
    assert 0 < len(kept) <= stats["kept"]
    assert kept.column("miniplm_score").null_count == 0
    assert np.min(kept.column("miniplm_score").to_numpy()) >= stats["cut"]
