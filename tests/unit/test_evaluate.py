"""tasks.evaluate.bits_per_byte against a plain per-document computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM

from tasks.evaluate import bits_per_byte, token_windows
from tasks.train import TrainConfig, build_model, save_checkpoint, train

CORPUS = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
EOS = "<|endoftext|>"
SEQ_LEN = 64
VOCAB = 300


def read_corpus() -> list[dict]:
    if not CORPUS.exists():
        pytest.skip(f"corpus sample not found at {CORPUS}")
    with CORPUS.open() as f:
        return [json.loads(line) for line in f]


def make_data_dir(root: Path, texts: list[str]) -> Path:
    """Byte-level BPE on `texts`; EOS-separated, packed to SEQ_LEN rows, one .npy shard."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    eos_id = tok.token_to_id(EOS)
    stream: list[int] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        stream += [eos_id, *enc.ids]
    n_seq = len(stream) // SEQ_LEN
    rows = np.array(stream[: n_seq * SEQ_LEN], dtype=np.uint16).reshape(n_seq, SEQ_LEN)

    data_dir = root / "data"
    (data_dir / "train").mkdir(parents=True)
    tok.save(str(data_dir / "tokenizer.json"))
    np.save(data_dir / "train" / "part-00000.npy", rows, allow_pickle=False)
    meta = {
        "vocab_size": tok.get_vocab_size(),
        "eos_id": eos_id,
        "eos_token": EOS,
        "seq_len": SEQ_LEN,
        "dtype": "uint16",
        "train_shards": [{"path": "train/part-00000.npy", "n_seq": n_seq}],
    }
    (data_dir / "meta.json").write_text(json.dumps(meta))
    return data_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("eval")
    corpus = read_corpus()
    data_dir = make_data_dir(root, [d["text"] for d in corpus[:200]])
    cfg = TrainConfig(batch_size=8, max_tokens=40 * 8 * SEQ_LEN, warmup_steps=5)
    trained = Path(train(cfg, data_dir, root / "trained")["checkpoint"])

    meta = json.loads((data_dir / "meta.json").read_text())
    torch.manual_seed(0)
    model = build_model("tiny", meta["vocab_size"], SEQ_LEN, meta["eos_id"])
    random_init = root / "random" / "checkpoint"
    save_checkpoint(model, data_dir, meta, random_init)

    # held-out docs: the first 2 of every source (cut to keep the test fast, still several
    # windows long), an empty document and a short non-ASCII one
    picked: dict[str, list[dict]] = {}
    for d in corpus[200:]:
        picked.setdefault(d["source"], [])
        if len(picked[d["source"]]) < 2:
            picked[d["source"]].append(d)
    docs = [d for ds in picked.values() for d in ds]
    texts = [d["text"][:600] for d in docs] + ["", "ünïcödé ✓ 日本語"]
    sources = [d["source"] for d in docs] + ["edge", "edge"]
    table = pa.table(
        {
            "id": [f"doc{i}" for i in range(len(texts))],
            "text": pa.array(texts, pa.large_string()),
            "source": sources,
        }
    )
    return {"trained": trained, "random": random_init, "docs": table, "eos_id": meta["eos_id"]}


def reference_nll(model: torch.nn.Module, tok: Tokenizer, text: str, eos_id: int) -> float:
    """One document, one window at a time, no batching or padding: NLL in nats."""
    ids = [eos_id] + tok.encode(text, add_special_tokens=False).ids
    total = 0.0
    k = 0
    while k * SEQ_LEN + 1 < len(ids):
        targets = ids[k * SEQ_LEN + 1 : (k + 1) * SEQ_LEN + 1]
        inputs = ids[k * SEQ_LEN : k * SEQ_LEN + len(targets)]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([inputs])).logits[0]
        total += F.cross_entropy(logits, torch.tensor(targets), reduction="sum").item()
        k += 1
    return total


def test_bpb_matches_reference_per_document(setup: dict):
    docs = setup["docs"]
    result = bits_per_byte(setup["trained"], docs, seq_len=SEQ_LEN, batch_size=8)

    ckpt = setup["trained"]
    model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True).eval()
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    by_source: dict[str, list[float]] = {}
    for text, source in zip(docs["text"].to_pylist(), docs["source"].to_pylist(), strict=True):
        nll = reference_nll(model, tok, text, setup["eos_id"])
        tokens = len(tok.encode(text, add_special_tokens=False).ids)
        acc = by_source.setdefault(source, [0.0, 0, 0])
        acc[0] += nll
        acc[1] += len(text.encode("utf-8"))
        acc[2] += tokens
    nll_all = sum(a[0] for a in by_source.values())
    bytes_all = sum(a[1] for a in by_source.values())
    expected = nll_all / math.log(2) / bytes_all

    overall = result["overall"]
    assert overall["bpb"] == pytest.approx(expected, abs=1e-4)
    assert overall["bytes"] == bytes_all
    assert overall["tokens"] == sum(a[2] for a in by_source.values())
    assert overall["docs"] == len(docs)
    assert set(result["by_source"]) == set(by_source)
    for source, (nll, n_bytes, tokens) in by_source.items():
        got = result["by_source"][source]
        assert got["bytes"] == n_bytes and got["tokens"] == tokens
        assert got["bpb"] == pytest.approx(nll / math.log(2) / n_bytes, abs=1e-4)
    # some documents span several windows, so the window arithmetic is exercised
    assert max(len(t.encode()) for t in docs["text"].to_pylist()) > 4 * SEQ_LEN


def test_per_source_sums_to_overall_and_batching_is_invisible(setup: dict):
    a = bits_per_byte(setup["trained"], setup["docs"], seq_len=SEQ_LEN, batch_size=8)
    b = bits_per_byte(setup["trained"], setup["docs"], seq_len=SEQ_LEN, batch_size=3)
    for key in ("bytes", "tokens", "docs"):
        assert sum(s[key] for s in a["by_source"].values()) == a["overall"][key]
    assert sum(s["nll_nats"] for s in a["by_source"].values()) == pytest.approx(
        a["overall"]["nll_nats"]
    )
    assert a["overall"]["bpb"] == pytest.approx(b["overall"]["bpb"], abs=1e-6)


def test_random_init_is_near_uniform_and_worse_than_trained(setup: dict):
    trained = bits_per_byte(setup["trained"], setup["docs"], seq_len=SEQ_LEN)["overall"]
    rand = bits_per_byte(setup["random"], setup["docs"], seq_len=SEQ_LEN)["overall"]
    uniform = math.log2(VOCAB) * rand["tokens"] / rand["bytes"]
    assert rand["bpb"] == pytest.approx(uniform, rel=0.05)
    assert trained["bpb"] < rand["bpb"] - 0.5


def test_windows_predict_every_token_once():
    for n in range(1, 3 * SEQ_LEN + 3):
        ids = list(range(n))  # ids[0] plays the leading EOS
        windows = token_windows(ids, SEQ_LEN)
        targets = [t for w in windows for t in w[1:]]
        assert targets == ids[1:]
        assert all(2 <= len(w) <= SEQ_LEN + 1 for w in windows)


def test_empty_table(setup: dict):
    empty = setup["docs"].slice(0, 0)
    result = bits_per_byte(setup["trained"], empty, seq_len=SEQ_LEN)
    assert result["by_source"] == {}
    assert result["overall"]["bytes"] == 0 and math.isnan(result["overall"]["bpb"])


def hand_gold_bpb(model: torch.nn.Module, tok: Tokenizer, eos_id: int, context: str,
                  choice: str) -> float:
    """One item, no batching or padding: -log2 p(choice | [eos] + context) / its bytes."""
    ctx = tok.encode(context, add_special_tokens=False).ids
    whole = tok.encode(context + choice, add_special_tokens=False).ids
    assert whole[:len(ctx)] == ctx  # the seam does not merge in these items
    ids = [eos_id, *whole]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids[:-1]])).logits[0].double().log_softmax(-1)
    nats = -sum(logp[k - 1, ids[k]].item() for k in range(1 + len(ctx), len(ids)))
    return nats / math.log(2) / len(choice.encode("utf-8"))


def test_gold_continuation_bpb_matches_a_hand_computation(setup: dict):
    from tasks.evaluate import evaluate_all, multiple_choice

    ckpt = setup["trained"]
    items = [{"id": "a", "context": "The history of the", "choices": [" city", " river",
                                                                          " war", " ünï"],
              "gold": 1},
             {"id": "b", "context": "A long context that pads the other rows of the batch, "
              "as it is several tokens longer than the first item's context", "choices":
              [" and", " of the most", " the"], "gold": 0}]
    got = multiple_choice(ckpt, items, SEQ_LEN, batch_size=3)  # rows of mixed length: padding
    model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True).eval()
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    for item, r in zip(items, got, strict=True):
        want = hand_gold_bpb(model, tok, setup["eos_id"], item["context"],
                             item["choices"][item["gold"]])
        assert r["gold_bpb"] == pytest.approx(want, rel=1e-4)  # float32 logits
    # the same per item in evaluate_all's rows, and the task's bpb is their mean
    res = evaluate_all(ckpt, setup["docs"], SEQ_LEN, 8, ["final_word"], 5)
    rows = [r for r in res["items"] if r["task"] == "final_word" and r["metric"] == "bpb"]
    assert len(rows) == res["tasks"]["final_word"]["items"] > 0
    assert all(r["den"] == 1.0 and r["num"] > 0 for r in rows)
    assert res["tasks"]["final_word"]["bpb"] == pytest.approx(
        sum(r["num"] for r in rows) / len(rows))
