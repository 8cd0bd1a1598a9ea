"""Min-K% Prob separates text a proxy was trained on from text it was not: a small Llama
(datamill's model class, narrower than the ``tiny`` preset so the test stays fast) trained here
on 40 passages of the sample corpus until it has memorised them; 80 other passages of the same
corpus are unseen. The threshold is calibrated
on one half of the unseen passages, the AUC and flag rates measured on the other half."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tasks.decontam import mink
from tasks.decontam.items import Item

CORPUS = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
EOS = "<|endoftext|>"
SEQ_LEN = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    docs = [json.loads(x) for x in CORPUS.read_text(encoding="utf-8").splitlines()]
    texts = [" ".join(d["text"].split()[:30]) for d in docs
             if d["source"] == "wikipedia-summaries" and d["lang"] == "en"
             and len(d["text"].split()) >= 30][:120]
    members, unseen = texts[:40], texts[40:]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=512, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    eos = tok.token_to_id(EOS)
    torch.manual_seed(0)
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=192, max_position_embeddings=SEQ_LEN,
        tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
        attn_implementation="sdpa"))
    rows = [[eos, *e.ids][:SEQ_LEN] for e in tok.encode_batch(members,
                                                              add_special_tokens=False)]
    ids = torch.full((len(rows), SEQ_LEN), eos)
    labels = torch.full((len(rows), SEQ_LEN), -100)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        labels[i, :len(r)] = torch.tensor(r)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):  # ~60 epochs of the 40 passages: memorised
        b = torch.randperm(len(rows), generator=gen)[:16]
        loss = model(input_ids=ids[b], labels=labels[b]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("proxy")
    model.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    return {"ckpt": out, "members": members, "unseen": unseen, "final_loss": loss.item()}


def test_min_k_of_known_values() -> None:
    lp = np.log(np.array([0.5, 0.1, 0.9, 0.01, 0.3, 0.2, 0.8, 0.7, 0.6, 0.4]))
    assert mink.min_k(lp, 20) == pytest.approx(np.mean(np.log([0.01, 0.1])))
    assert mink.min_k(lp, 1) == pytest.approx(math.log(0.01))  # at least one token
    assert mink.min_k(lp, 100) == pytest.approx(lp.mean())
    assert mink.auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert mink.auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert mink.threshold(np.arange(100.0), 0.05) == 95.0


def test_min_k_separates_trained_from_unseen_text(trained: dict[str, object]) -> None:
    ckpt, members, unseen = trained["ckpt"], trained["members"], trained["unseen"]
    assert trained["final_loss"] < 1.0
    calib, heldout = unseen[::2], unseen[1::2]
    s_mem = mink.scores(ckpt, members)
    s_cal = mink.scores(ckpt, calib)
    s_new = mink.scores(ckpt, heldout)
    assert mink.auc(s_mem, s_new) >= 0.95
    thr = mink.threshold(s_cal, 0.05)
    assert (s_mem > thr).mean() >= 0.8
    assert (s_new > thr).mean() <= 0.2
    # the report: one task of members and one of unseen text against the calibration half
    items = [Item("seen", "s", f"m{i}", t) for i, t in enumerate(members)] + \
        [Item("unseen", "s", f"u{i}", t) for i, t in enumerate(heldout)]
    rep = mink.mink_report(ckpt, items, calib, k=20, fpr=0.05)
    seen, new = rep["tasks"]["seen"], rep["tasks"]["unseen"]
    assert seen["reference_passages"] == new["reference_passages"] == len(calib)
    assert seen["words_median"] == 30
    assert seen["flagged"] == int((s_mem > thr).sum()) and seen["threshold"] == thr
    assert seen["auc_vs_reference"] >= 0.95 and new["auc_vs_reference"] < 0.8
    assert new["flagged_share"] <= 0.2
