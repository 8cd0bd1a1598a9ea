"""The tokenize and train stages with a curriculum and a cap, run in this process (no Prefect,
Dask or Ray; shards run serially, the trainer in place of the actor): the row scores reach the
trainer, the plan is logged before training, the manifest and the catalog hold the epochs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tasks import recipe as R
from tasks.catalog import Catalog
from tasks.stage import Manifest, RunInfo, Upstream, load_object
from tasks.stages.tokenize import Tokenize
from tasks.stages.train import Train
from tasks.store import StageDir, write_parquet

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CORPUS = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"


class InProcess:
    """The Executor protocol in this process: shards one after another, the actor's function
    called directly."""

    def shards(self, out: Any, fn: Any, jobs: Any, desc: str, resources: Any = None) -> list:
        from tasks.store import run_marked

        return [run_marked(str(out.shard_marker(k)), fn, *a) for k, a in jobs]

    def task(self, fn: Any, *args: Any, desc: str = "task") -> Any:
        return fn(*args)

    def actor(self, target: str, *args: Any, **kwargs: Any) -> Any:
        return load_object(target)(*args, **kwargs)

    def gpus(self) -> float:
        return 0.0


def test_stages_carry_scores_log_the_plan_and_record_epochs(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture):
    if not CORPUS.exists():
        pytest.skip(f"corpus sample not found at {CORPUS}")
    docs = [json.loads(x) for x in CORPUS.read_text(encoding="utf-8").splitlines()[:300]]
    root = tmp_path / "root"
    kept = root / "stages" / "filter" / "v" / "kept" / "part-00000.parquet"
    write_parquet(pa.table({
        "id": [d["id"] for d in docs],
        "text": pa.array([d["text"] for d in docs], pa.large_string()),
        "source": [d["source"] for d in docs], "lang": [d["lang"] for d in docs],
        "quality": pa.array([float(len(d["text"]) % 97) for d in docs], pa.float32()),
    }), kept)
    up = Upstream()
    up.add(Manifest("filter", "v", len(docs), len(docs), 0,
                    {"kept": [str(kept.relative_to(root))]}), docs=True)
    sources = sorted({d["source"] for d in docs})
    recipe = R.parse_recipe({"name": "t", "input": {"paths": ["x.jsonl"]}, "stages": {
        "tokenize": {"vocab_size": 400, "seq_len": 32, "heldout_fraction": 0.1},
        "train": {"batch_size": 8, "max_tokens": 8 * 32 * 8, "checkpoint_every": 1,
                  "warmup_steps": 1, "order": {"by": "quality"},
                  "max_epochs": {sources[0]: 0.5}}}})
    catalog = Catalog(root / "catalog.duckdb")
    catalog.start_run("r1", "t", "t.yaml", {})
    run = RunInfo("r1", recipe, root, catalog, log=logging.getLogger("test.stages"))

    tok_out = StageDir(root, "tokenize", "t1")
    tok_out.path.mkdir(parents=True)
    body = Tokenize().run(run, up, tok_out, InProcess())
    meta = json.loads((tok_out.path / "meta.json").read_text())
    assert meta["row_score"] == "quality"
    scores = np.concatenate([np.load(tok_out.path / s["score"]) for s in meta["train_shards"]])
    assert len(scores) == body["train_sequences"] and np.isfinite(scores).all()
    up.add(Manifest("tokenize", "t1", body["docs_in"], body["docs_kept"], 0, body["outputs"],
                    extra=body), docs=False)

    tcfg = recipe.train_config()
    train_out = StageDir(root, "train", "x1")
    train_out.path.mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="test.stages"):
        result = Train().run(run, up, train_out, InProcess(), tcfg)
    assert "epochs per source over 8 steps" in caplog.text  # logged before training
    plan = result["data_plan"]
    assert plan["sources"][sources[0]]["max_epochs"] == 0.5
    assert plan["sources"][sources[0]]["epochs"] <= 0.5
    assert result["epochs"] == pytest.approx({s: v["epochs"] for s, v in
                                              plan["sources"].items()})
    assert result["summary"]["averaged_steps"] == [3, 4, 5, 6, 7, 8]  # the curriculum's remedy

    manifest = Manifest("train", "x1", 0, 0, 0, result["outputs"], extra=result)
    Train().after(run, up, manifest, tcfg)
    rows = {m["name"]: m["value"] for m in catalog.show("r1")["metrics"]}
    for src, v in plan["sources"].items():
        assert rows[f"epochs.{src}"] == pytest.approx(v["epochs"])
