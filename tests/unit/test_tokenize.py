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
    assert stats["tokens"] == stats["n_seq"] * 32 + stats["tokens_carried"]
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


SEQ = 64


def _many_source_shards(tmp_path: Path, sample_lines: list[str]) -> tuple[list[str], Path]:
    """Four shards of 60 docs each spread over 12 sources (many sources, short per shard)."""
    docs = [json.loads(line) for line in sample_lines[:240]]
    paths = []
    for k in range(4):
        part = docs[k * 60:(k + 1) * 60]
        path = tmp_path / "in" / f"part-{k:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "id": [d["id"] for d in part],
            "text": pa.array([d["text"] for d in part], pa.large_string()),
            "source": [f"src-{(k * 60 + i) % 12}" for i in range(len(part))],
            "lang": [d["lang"] for d in part]}), path)
        paths.append(str(path))
    tok_path = tmp_path / "tokenizer.json"
    tokenize.train_tokenizer(tokenize.iter_train_texts(paths, 0.1, 10**9), 400, 2, tok_path)
    return paths, tok_path


def _pack_all(paths: list[str], tok_path: Path, out: Path, order: list[int]
              ) -> tuple[list[dict], dict]:
    """Pack the shards (run in `order`, as a pool might), then the remainder step in shard
    order, as the stage does."""
    done = {i: tokenize.pack_shard(paths[i], str(tok_path), str(out), f"{i:05d}", SEQ, 0.1)
            for i in order}
    stats = [done[i] for i in range(len(paths))]
    rest = tokenize.pack_remainders(str(out), SEQ, stats)
    tokenize.write_meta(out, tok_path, SEQ, [*stats, rest])
    return stats, rest


def test_remainders_are_carried_across_shards_not_dropped(tmp_path: Path,
                                                          sample_lines: list[str]) -> None:
    from tasks.train import PackedSequences

    paths, tok_path = _many_source_shards(tmp_path, sample_lines)
    out = tmp_path / "out"
    stats, rest = _pack_all(paths, tok_path, out, [0, 1, 2, 3])
    tok = Tokenizer.from_file(str(tok_path))
    # every training token, per source, encoded independently of the packer
    expected: dict[str, np.ndarray] = {}
    held_ids: set[str] = set()
    for p in paths:
        t = pq.read_table(p)
        held = tokenize.heldout_mask(t.column("id").combine_chunks(), 0.1)
        held_ids |= {i for i, h in zip(t.column("id").to_pylist(), held, strict=True) if h}
        for text, src, h in zip(t.column("text").to_pylist(), t.column("source").to_pylist(),
                                held, strict=True):
            if not h:
                ids = tok.encode(text, add_special_tokens=False).ids + [0]
                expected[src] = np.concatenate([expected.get(src, np.zeros(0, int)), ids])
    total = sum(len(v) for v in expected.values())
    packed = (sum(s["n_seq"] for s in stats) + rest["n_seq"]) * SEQ
    dropped = rest["tokens_dropped"]
    assert packed + sum(dropped.values()) == total == sum(s["tokens"] for s in stats)
    assert set(dropped) == set(expected) and all(0 <= n < SEQ for n in dropped.values())
    # the old per-shard dropping would have lost far more than one partial row per source
    assert sum(s["tokens_carried"] for s in stats) > sum(dropped.values()) + SEQ
    assert rest["n_seq"] > 0
    # through the trainer's reader: each source's rows hold exactly its tokens, less its drop
    meta = json.loads((out / "meta.json").read_text())
    data = PackedSequences(out, meta)
    assert len(data) * SEQ == packed
    for src, rows in data.source_rows().items():
        got = np.bincount(data.get(rows.tolist()).reshape(-1), minlength=400)
        want = np.bincount(expected[src], minlength=400)
        assert (got <= want).all() and int((want - got).sum()) == dropped[src]
    # the held-out split is the id hash's, whatever the packing
    held = tokenize.read_heldout(out)
    assert set(held.column("id").to_pylist()) == held_ids and len(held) == len(held_ids)
    assert sum(s["heldout_docs"] for s in stats) == len(held_ids) > 0


def test_packing_is_deterministic_and_the_remainder_step_reruns(tmp_path: Path,
                                                                sample_lines: list[str]) -> None:
    paths, tok_path = _many_source_shards(tmp_path, sample_lines)
    a, b = tmp_path / "a", tmp_path / "b"
    stats, rest = _pack_all(paths, tok_path, a, [0, 1, 2, 3])
    _, rest_b = _pack_all(paths, tok_path, b, [3, 1, 0, 2])  # shards finishing in another order
    assert rest == rest_b
    files = sorted(f.relative_to(a) for f in a.rglob("*.npy"))
    assert files == sorted(f.relative_to(b) for f in b.rglob("*.npy"))
    for f in files:
        assert np.array_equal(np.load(a / f), np.load(b / f)), f
    assert (a / "meta.json").read_text() == (b / "meta.json").read_text()

    # a crash during the remainder step: its output gone, a half-written temp file left.
    # The re-run reads the shards' stats back from their resume markers (JSON, keys sorted).
    first = np.load(a / "train" / "remainder.npy")
    (a / "train" / "remainder.npy").unlink()
    (a / "train" / ".remainder.npy.tmp").write_bytes(b"\x93NUMPY half")
    markers = [json.loads(json.dumps(s, sort_keys=True)) for s in stats]
    again = tokenize.pack_remainders(str(a), SEQ, markers)
    assert again == rest
    assert np.array_equal(np.load(a / "train" / "remainder.npy"), first)


def test_stage_records_dropped_tokens_as_metrics() -> None:
    from tasks.stage import Manifest, RunInfo
    from tasks.stages.tokenize import Tokenize

    class Catalog:
        def __init__(self) -> None:
            self.rows: list = []

        def record_metrics(self, run_id: str, rows: list, seed: int = 0) -> None:
            self.rows += [(run_id, *r) for r in rows]

    cat = Catalog()
    run = RunInfo("r1", None, Path("."), cat)
    m = Manifest.from_dict({"stage": "tokenize", "version": "v", "docs_in": 1, "docs_kept": 1,
                            "docs_rejected": 0, "outputs": {}, "tokens_dropped": 7,
                            "tokens_dropped_by_source": {"b": 3, "a": 4}})
    Tokenize().after(run, None, m)  # type: ignore[arg-type]
    assert cat.rows == [("r1", 0, "tokenize.tokens_dropped", 7.0),
                        ("r1", 0, "tokenize.tokens_dropped.a", 4.0),
                        ("r1", 0, "tokenize.tokens_dropped.b", 3.0)]
