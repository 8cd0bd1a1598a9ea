"""The per-document loss stage (tasks/select/loss_stage.py, tasks/select/loss.py): its bits per
byte are tasks/evaluate's on the same text, documents are cut at max_tokens, a document
without text is counted and kept, and the version follows the checkpoints' content. The stage
runs with an in-process executor whose ``actor`` calls the target as the Ray actor does."""

from __future__ import annotations

import importlib
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer

from tasks.evaluate import bits_per_byte
from tasks.identity import versioned
from tasks.select import loss
from tasks.select.loss_stage import Config, LossScore
from tasks.stage import Manifest, RunInfo, Upstream
from tasks.store import StageDir, run_marked, version_of

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
DOC = Path(__file__).resolve().parents[2] / "docs" / "selection.md"


class Serial:
    """The stage executor in this process: ``actor`` imports and calls its target."""

    def __init__(self) -> None:
        self.actors: list[str] = []
        self.tasks: list[str] = []

    def actor(self, target: str, *args: Any, **kwargs: Any) -> Any:
        self.actors.append(target)
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(*args, **kwargs)

    def shards(self, out: StageDir, fn: Any, jobs: Any, desc: str, resources: Any = None
               ) -> list[dict[str, Any]]:
        return [out.shard_done(k) or run_marked(str(out.shard_marker(k)), fn, *a)
                for k, a in jobs]

    def task(self, fn: Any, *args: Any, desc: str = "task") -> Any:
        self.tasks.append(desc)
        return fn(*args)

    def gpus(self) -> float:
        return 0.0


def sample_texts(n: int, skip: int = 0) -> list[dict[str, Any]]:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines[skip:skip + n]]


def make_checkpoint(root: Path, texts: list[str], seed: int, steps: int = 0) -> Path:
    """A tiny proxy: a BPE tokenizer on ``texts``, random weights (``steps`` = 0) or trained
    for ``steps`` steps on them."""
    from test_evaluate import SEQ_LEN, make_data_dir

    from tasks.train import TrainConfig, build_model, save_checkpoint, train

    data_dir = root / "data"
    if not data_dir.exists():
        make_data_dir(root, texts)
    meta = json.loads((data_dir / "meta.json").read_text())
    if steps:
        cfg = TrainConfig(batch_size=8, max_tokens=steps * 8 * SEQ_LEN, warmup_steps=2,
                          seed=seed)
        return Path(train(cfg, data_dir, root / f"trained-{seed}-{steps}")["checkpoint"])
    torch.manual_seed(seed)
    model = build_model("tiny", meta["vocab_size"], SEQ_LEN, meta["eos_id"])
    ckpt = root / f"random-{seed}" / "checkpoint"
    save_checkpoint(model, data_dir, meta, ckpt)
    return ckpt


def write_pool(root: Path, texts: list[str | None], shards: int = 2) -> list[str]:
    """The texts as ``shards`` Parquet shards (id, text, source), paths relative to root."""
    rels = []
    per = math.ceil(len(texts) / shards)
    for k in range(shards):
        part = texts[k * per:(k + 1) * per]
        t = pa.table({"id": [f"d{k * per + i}" for i in range(len(part))],
                      "text": pa.array(part, pa.large_string()),
                      "source": ["s"] * len(part), "lang": ["en"] * len(part)})
        path = root / "pool" / f"part-{k:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, path)
        rels.append(str(path.relative_to(root)))
    return rels


def setup_run(root: Path, rels: list[str], n: int) -> tuple[RunInfo, Upstream]:
    up = Upstream()
    up.add(Manifest("ingest", "v0", n, n, 0, {"kept": rels}), docs=True)
    return RunInfo("r", None, root, None), up


def version(stage: Any, run: RunInfo, up: Upstream) -> str:
    return version_of(stage.name, versioned(stage.config(run)), stage.version_inputs(run, up),
                      code=stage.code_version)


def execute(stage: Any, run: RunInfo, up: Upstream) -> tuple[dict[str, Any], Serial, StageDir]:
    out = StageDir(run.data_root, stage.name, version(stage, run, up))
    out.path.mkdir(parents=True, exist_ok=True)
    ex = Serial()
    return stage.run(run, up, out, ex), ex, out


def read_kept(root: Path, body: dict[str, Any]) -> pa.Table:
    return pa.concat_tables([pq.read_table(root / r) for r in body["outputs"]["kept"]])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("loss-models")
    texts = [d["text"] for d in sample_texts(120)]
    torch.set_num_threads(1)  # a shared small machine: one thread is faster and steadier
    return {"a": make_checkpoint(root, texts, seed=0), "b": make_checkpoint(root, texts, 1),
            "root": root}


@pytest.fixture(scope="module")
def scored(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("loss-run")
    docs = [d["text"][:300] for d in sample_texts(9, skip=300)]
    texts: list[str | None] = [*docs, "", None, "ünïcödé ✓ 日本語"]
    rels = write_pool(root, texts)
    run, up = setup_run(root, rels, len(texts))
    cfg = Config(models=[{"path": str(models["a"]), "label": "proxy-a"},
                         {"path": str(models["b"]), "label": "b"}], max_tokens=10_000)
    body, ex, out = execute(LossScore(cfg), run, up)
    return {"root": root, "body": body, "ex": ex, "out": out, "texts": texts, "run": run,
            "up": up, "rels": rels}


def test_loss_is_the_evaluations_bits_per_byte_on_the_same_text(models: dict[str, Any],
                                                                scored: dict[str, Any]) -> None:
    body, t = scored["body"], read_kept(scored["root"], scored["body"])
    assert scored["ex"].actors == ["tasks.select.loss:score_shards"]
    assert body["docs_in"] == body["docs_kept"] == len(scored["texts"])
    assert body["docs_rejected"] == 0 and body["unscored"] == 2 and body["truncated"] == 0
    assert [m["column"] for m in body["models"]] == ["loss_proxy_a", "loss_b"]
    assert t.column("id").to_pylist() == [f"d{i}" for i in range(len(scored["texts"]))]
    keep = [i for i, x in enumerate(scored["texts"]) if x]
    docs = pa.table({"id": [f"d{i}" for i in keep],
                     "text": pa.array([scored["texts"][i] for i in keep], pa.large_string()),
                     "source": ["s"] * len(keep)})
    for key, col in (("a", "loss_proxy_a"), ("b", "loss_b")):
        per = bits_per_byte(models[key], docs, loss.seq_len_of(models[key]),
                            per_doc=True)["per_doc"]
        want = [n / math.log(2) / b for n, b in zip(per["nll_nats"], per["bytes"], strict=True)]
        got = t.column(col).to_pylist()
        assert [got[i] for i in keep] == pytest.approx(want, rel=1e-9)
        assert got[9] is None and got[10] is None  # empty and null text: no score, still kept
    assert t.column("loss_proxy_a").to_pylist() != t.column("loss_b").to_pylist()
    assert t.column(loss.BYTES).to_pylist()[:9] == [len(x.encode()) for x in
                                                    scored["texts"][:9]]  # type: ignore


def test_documents_are_cut_at_max_tokens(models: dict[str, Any], tmp_path: Path) -> None:
    text = sample_texts(1, skip=400)[0]["text"][:3000]
    tok = Tokenizer.from_file(str(models["a"] / "tokenizer.json"))
    assert len(tok.encode(text, add_special_tokens=False).ids) > 50
    rels = write_pool(tmp_path, [text, "short"], shards=1)
    run, up = setup_run(tmp_path, rels, 2)
    body, _, _ = execute(LossScore(Config(models=[{"path": str(models["a"])}], max_tokens=50)),
                         run, up)
    assert body["truncated"] == 1
    t = read_kept(tmp_path, body)
    col = "loss_" + loss.sanitise(models["a"].parent.name)  # a folder named checkpoint
    prefix = text[:tok.encode(text, add_special_tokens=False).offsets[49][1]]
    assert len(tok.encode(prefix, add_special_tokens=False).ids) == 50
    assert t.column(loss.BYTES).to_pylist()[0] == len(prefix.encode())
    per = bits_per_byte(models["a"], pa.table({"id": ["x"], "text": [prefix], "source": ["s"]}),
                        loss.seq_len_of(models["a"]), per_doc=True)["per_doc"]
    assert t.column(col).to_pylist()[0] == pytest.approx(
        per["nll_nats"][0] / math.log(2) / per["bytes"][0], rel=1e-9)


def test_a_finished_shard_is_not_scored_again(scored: dict[str, Any]) -> None:
    out: StageDir = scored["out"]
    marker = out.shard_marker("00000")
    kept = scored["root"] / scored["body"]["outputs"]["kept"][0]
    before = kept.stat().st_mtime_ns
    stage = LossScore(Config(models=[{"path": m["checkpoint"], "label": m["label"]}
                                     for m in scored["body"]["models"]], max_tokens=10_000))
    body = stage.run(scored["run"], scored["up"], out, Serial())
    assert marker.is_file() and kept.stat().st_mtime_ns == before
    assert body["docs_in"] == scored["body"]["docs_in"]


def test_version_follows_checkpoint_content_not_path(models: dict[str, Any],
                                                     scored: dict[str, Any],
                                                     tmp_path: Path) -> None:
    run, up = scored["run"], scored["up"]
    moved = tmp_path / "elsewhere" / "ckpt"
    shutil.copytree(models["a"], moved)

    def v(path: Path, **kw: Any) -> str:
        return version(LossScore(Config(models=[{"path": str(path), "label": "m"}], **kw)),
                       run, up)

    assert v(models["a"]) == v(moved) == v(moved, batch_docs=7, batch_size=3)
    assert v(models["a"]) != v(models["b"])  # other weights
    assert v(models["a"]) != v(models["a"], max_tokens=64)
    (moved / "config.json").write_text((moved / "config.json").read_text() + "\n")
    assert v(moved) != v(models["a"])  # the content changed


def test_model_refs_are_checked(models: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of run and path"):
        loss.ModelRef()
    with pytest.raises(ValueError, match="not a save_pretrained folder"):
        loss.ModelRef(path=str(tmp_path))
    with pytest.raises(ValueError, match="labels must differ"):
        Config(models=[{"path": str(models["a"]), "label": "x-1"},
                       {"path": str(models["b"]), "label": "x_1"}])
    assert loss.ModelRef(run="2024-01-02T03:04-ab", seed=2).name() == "2024_01_02T03_04_ab_seed2"
    with pytest.raises(ValueError, match="no catalog"):
        loss.resolve(loss.ModelRef(run="nope"), tmp_path)


def _doc_recipes() -> list[dict[str, Any]]:
    import yaml

    text = DOC.read_text()
    start = text.index("## Selection from trained proxies")
    end = text.find("\n## ", start + 3)
    section = text[start:end if end > 0 else None]
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def test_the_docs_recipes_validate() -> None:
    from tasks.recipe import parse_recipe
    from tasks.stages import describe

    recipes = _doc_recipes()
    assert len(recipes) == 3
    for r in recipes:
        recipe = parse_recipe({"name": "t", "input": {"paths": ["data/sample/sample.jsonl"]},
                               "stages": r["stages"]})
        names = [row["stage"] for row in describe(recipe)]
        extra = {"loss_score", "miniplm", "preselect"} & set(names)
        assert extra and all(names.index(x) < names.index("score") for x in extra)
