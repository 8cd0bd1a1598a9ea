"""Scoring several checkpoints (checkpoint noise), averaging the last k before scoring, and
lm-evaluation-harness on a datamill checkpoint agreeing with datamill's own scorer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from test_evaluate import make_data_dir, read_corpus

from tasks import evalsets
from tasks.evaluate import evaluate_run, multiple_choice
from tasks.train import TrainConfig, average_checkpoints, complete_checkpoints, train

SEQ_LEN = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpts")
    corpus = read_corpus()
    data_dir = make_data_dir(root, [d["text"] for d in corpus[:200]])
    cfg = TrainConfig(batch_size=8, max_tokens=30 * 8 * SEQ_LEN, warmup_steps=5,
                      checkpoint_every=10, keep_checkpoints=3)
    train(cfg, data_dir, root / "train")
    # held-out documents: never trained on (the model saw corpus[:200])
    docs = [d for d in corpus[400:] if d.get("lang") == "en"][:40]
    table = pa.table({"id": [d["id"] for d in docs],
                      "text": pa.array([d["text"][:800] for d in docs], pa.large_string()),
                      "source": [d["source"] for d in docs], "lang": ["en"] * len(docs)})
    yield {"root": root, "train_dir": root / "train", "docs": table}
    torch.set_num_threads(before)


def test_scores_the_last_checkpoints_and_an_average(trained: dict[str, Any]) -> None:
    train_dir = trained["train_dir"]
    saved = complete_checkpoints(train_dir)
    assert [s for s, _ in saved] == [10, 20, 30]
    res = evaluate_run(train_dir, trained["docs"], SEQ_LEN, 16, ["final_word"], 30,
                       checkpoints=2, average_last=3)
    assert [c["step"] for c in res["checkpoints"]] == [20, 30]
    assert res["averaged_steps"] == [10, 20, 30]
    tags = {r["checkpoint"] for r in res["items"]}
    assert tags == {"final", "step-20", "step-30"}
    # the final step's checkpoint is the trained model: same bpb as scoring it directly
    plain = evaluate_run(train_dir, trained["docs"], SEQ_LEN, 16, [], 30)
    last = res["checkpoints"][-1]["overall"]["bpb"]
    assert last == pytest.approx(plain["overall"]["bpb"], rel=1e-6)
    # the averaged model is a different model (the mean of three points of the trajectory)
    assert res["overall"]["bpb"] != pytest.approx(last, rel=1e-6)
    assert res["overall"]["bytes"] == plain["overall"]["bytes"]


def test_averaged_checkpoint_holds_the_mean_weights(trained: dict[str, Any], tmp_path: Path
                                                    ) -> None:
    from tasks.evaluate import averaged_checkpoint

    dirs = [d for _, d in complete_checkpoints(trained["train_dir"])[-2:]]
    out = averaged_checkpoint(dirs, tmp_path / "avg")
    got = load_file(out / "model.safetensors")
    want = average_checkpoints(dirs)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    assert not any(p.name.startswith("train_") for p in out.iterdir())


def test_too_few_checkpoints_is_a_clear_error(trained: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="keep_checkpoints"):
        evaluate_run(trained["train_dir"], trained["docs"], SEQ_LEN, 16, [], 10, checkpoints=5)


TASK_YAML = """task: datamill_final_word
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{gold}}}}"
doc_to_choice: "{{{{choices}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def test_harness_on_a_local_task_agrees_with_datamill(trained: dict[str, Any],
                                                      tmp_path: Path) -> None:
    """A local task YAML over a local JSONL file (no hub): the harness's per-item answers on
    the datamill checkpoint are datamill's own multiple-choice answers."""
    pytest.importorskip("lm_eval", reason="the lmeval extra is not installed")
    from tasks.harness import run_harness

    ckpt = trained["train_dir"] / "checkpoint"
    items = evalsets.build("final_word", trained["docs"].to_pylist(), 25)
    assert len(items) >= 15
    data = tmp_path / "final_word.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in items))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "final_word.yaml").write_text(TASK_YAML.format(data=data))
    res = run_harness(ckpt, ["datamill_final_word"], [tmp_path / "tasks"], batch_size=8)
    ours = multiple_choice(ckpt, items, SEQ_LEN)
    theirs = {r["item_id"]: r["num"] for r in res["items"]
              if r["metric"] == "acc" and r["task"] == "harness/datamill_final_word"}
    norm = {r["item_id"]: r["num"] for r in res["items"] if r["metric"] == "acc_norm"}
    assert len(theirs) == len(items) == res["n_samples"]["datamill_final_word"]
    # the harness numbers its docs in file order
    same = sum(theirs[str(i)] == o["correct"] for i, o in enumerate(ours))
    same_norm = sum(norm[str(i)] == o["correct_norm"] for i, o in enumerate(ours))
    assert same == len(items) and same_norm == len(items)
    acc = res["results"]["datamill_final_word"]["acc"]
    assert acc == pytest.approx(sum(o["correct"] for o in ours) / len(ours))
