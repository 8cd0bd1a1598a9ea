"""Held-out split by id hash, BPE training, packing with EOS boundaries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from tasks import tokenize


def test_heldout_split_is_stable_and_about_the_fraction() -> None:
    ids = pa.array([f"doc-{i}" for i in range(20_000)])
    m1 = tokenize.heldout_mask(ids, 0.05)
    assert np.array_equal(m1, tokenize.heldout_mask(ids, 0.05))
    assert 0.04 < m1.mean() < 0.06
    # a doc's split depends on its id only, not on its neighbours
    assert tokenize.heldout_mask(ids.slice(100, 10), 0.05).tolist() == m1[100:110].tolist()
    assert not tokenize.heldout_mask(ids, 0.0).any()


def test_train_and_pack(tmp_path: Path, sample_lines: list[str]) -> None:
    docs = [json.loads(line) for line in sample_lines[:300]]
    table = pa.table({"id": [d["id"] for d in docs],
                      "text": pa.array([d["text"] for d in docs], pa.large_string()),
                      "source": [d["source"] for d in docs],
                      "lang": [d["lang"] for d in docs]})
    pq.write_table(table, tmp_path / "part-00000.parquet")
    tok_path = tmp_path / "out" / "tokenizer.json"
    texts = tokenize.iter_train_texts([str(tmp_path / "part-00000.parquet")], 0.1, 10**9)
    tokenize.train_tokenizer(texts, 400, 2, tok_path)
    tok = Tokenizer.from_file(str(tok_path))
    assert tok.token_to_id(tokenize.EOS) == 0 and tok.get_vocab_size() == 400
    stats = tokenize.pack_shard(str(tmp_path / "part-00000.parquet"), str(tok_path),
                                str(tmp_path / "out"), "00000", 32, 0.1)
    assert stats["train_docs"] + stats["heldout_docs"] == 300 == stats["docs_in"]
    rows = np.load(tmp_path / "out" / stats["shard"], allow_pickle=False)
    assert rows.dtype == np.uint16 and rows.shape == (stats["n_seq"], 32)
    assert stats["tokens"] == stats["n_seq"] * 32 + stats["tokens_dropped"]
    # EOS separates documents: one EOS per training doc in the full stream
    assert int((rows == 0).sum()) <= stats["train_docs"]
    first_train = next(d for d, h in zip(docs, tokenize.heldout_mask(table.column("id")
                                                                     .combine_chunks(), 0.1),
                                         strict=True) if not h)
    enc = tok.encode(first_train["text"]).ids
    assert rows.reshape(-1)[: len(enc)].tolist() == enc[: rows.size]
    held = pq.read_table(tmp_path / "out" / stats["heldout"])
    assert len(held) == stats["heldout_docs"]
    meta = tokenize.write_meta(tmp_path / "out", tok_path, 32, [stats])
    assert meta["eos_id"] == 0 and meta["train_shards"][0]["n_seq"] == stats["n_seq"]


def _sample_shard(tmp_path: Path, sample_lines: list[str], n: int) -> Path:
    docs = [json.loads(line) for line in sample_lines[:n]]
    path = tmp_path / "in" / "part-00000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [d["id"] for d in docs],
                             "text": pa.array([d["text"] for d in docs], pa.large_string()),
                             "source": [d["source"] for d in docs],
                             "lang": [d["lang"] for d in docs]}), path)
    return path


def test_saved_tokenizer_loads_in_transformers(tmp_path: Path, sample_lines: list[str]) -> None:
    from transformers import PreTrainedTokenizerFast

    shard = _sample_shard(tmp_path, sample_lines, 200)
    tok_path = tmp_path / "tokenizer.json"
    tokenize.train_tokenizer(tokenize.iter_train_texts([str(shard)], 0.0, 10**9), 500, 2,
                             tok_path)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tok_path), eos_token=tokenize.EOS)
    raw = Tokenizer.from_file(str(tok_path))
    text = "Les fichiers de configuration sont lus au démarrage. 日本語も"
    ids = hf(text, add_special_tokens=False)["input_ids"]
    assert ids == raw.encode(text, add_special_tokens=False).ids
    assert hf.decode(ids) == text  # byte-level: lossless, any script
    assert hf.eos_token_id == 0 and len(hf) == 500


def test_large_vocabulary_packs_as_uint32(tmp_path: Path, sample_lines: list[str]) -> None:
    shard = _sample_shard(tmp_path, sample_lines, 50)
    tok_path = tmp_path / "tokenizer.json"
    tokenize.train_tokenizer(tokenize.iter_train_texts([str(shard)], 0.0, 10**9), 400, 2,
                             tok_path)
    tok = Tokenizer.from_file(str(tok_path))
    # a user-supplied tokenizer.json past 2**16 ids (as a 100k vocabulary would be)
    tok.add_tokens([f"<extra_{i}>" for i in range(2**16)])
    big = tmp_path / "big" / "tokenizer.json"
    big.parent.mkdir()
    tok.save(str(big))
    assert tokenize.check_tokenizer(big) > 2**16
    stats = tokenize.pack_shard(str(shard), str(big), str(tmp_path / "out"), "00000", 32, 0.0)
    rows = np.load(tmp_path / "out" / stats["shard"])
    assert rows.dtype == np.uint32 and rows.shape == (stats["n_seq"], 32)
    meta = tokenize.write_meta(tmp_path / "out", big, 32, [stats])
    assert meta["dtype"] == "uint32"
    no_eos = tmp_path / "no-eos.json"
    from tokenizers import models

    Tokenizer(models.BPE()).save(str(no_eos))
    with pytest.raises(ValueError, match=re.escape(f"no {tokenize.EOS} token")):
        tokenize.check_tokenizer(no_eos)
