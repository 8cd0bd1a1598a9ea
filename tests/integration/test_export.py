"""``datamill export`` of a real completed run (the shared ``sample_run``), read back by the
tools that consume each format: ``datasets`` for Parquet, megatron-core's ``IndexedDataset``
and ``GPTDataset`` for Megatron, datatrove's ``DatatroveFolderDataset`` (what nanotron's
Nanoset reads through) for nanotron. The documents are the filter stage's kept documents; the
tokens are the ones the run trained on. Exports go to temporary folders and are not recorded
in the run's catalog (the fixture stays read-only)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tasks.catalog import Catalog
from tasks.export import export_run
from tasks.tokenize import EOS, heldout_mask

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(sample_run: dict[str, Any]) -> dict[str, Any]:
    cat = Catalog(sample_run["root"] / "catalog.duckdb", snapshot=True)
    stages = {s["stage"]: Path(s["output_path"]) for s in cat.show(sample_run["run_id"])["stages"]}
    filt = json.loads((stages["filter"] / "manifest.json").read_text())
    tok = json.loads((stages["tokenize"] / "manifest.json").read_text())
    kept = pa.concat_tables([pq.read_table(sample_run["root"] / p,
                                           columns=["id", "text", "source"])
                             for p in filt["outputs"]["kept"]])
    held = heldout_mask(kept["id"].combine_chunks(), tok["config"]["tokenize"]["heldout_fraction"])
    return {"catalog": cat, "run_id": sample_run["run_id"], "kept": kept.to_pylist(),
            "train": kept.filter(pa.array(~held)).to_pylist(), "tokenize": tok,
            "tok_dir": stages["tokenize"]}


def _export(run: dict[str, Any], dest: Path, fmt: str, **kw: Any) -> dict[str, Any]:
    out = export_run(run["catalog"], run["run_id"], dest, fmt, record=False, **kw)
    assert out["status"] == "exported"
    return out


def test_parquet_and_jsonl_are_the_filters_kept_documents(
        run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    want = [(d["id"], d["text"]) for d in run["kept"]]
    _export(run, tmp_path / "hf", "parquet")
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert list(zip(ds["id"], ds["text"], strict=True)) == want
    _export(run, tmp_path / "docs.jsonl.zst", "jsonl")
    rows = []
    for f in sorted((tmp_path / "docs.jsonl.zst" / "data").iterdir()):
        raw = zstandard.ZstdDecompressor().stream_reader(f.read_bytes()).read()
        rows += [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert [(r["id"], r["text"]) for r in rows] == want


def _run_tokens(tok_dir: Path) -> np.ndarray:
    """Every token the tokenize stage produced: its packed rows plus each shard's carried
    tokens (train/remainder.npy only re-packs those)."""
    def files(sub: str) -> list[Path]:  # not a curriculum's per-row scores (*.score.npy)
        return [p for p in sorted((tok_dir / sub).glob("part-*.npy"))
                if not p.name.endswith(".score.npy")]

    parts = [np.load(p).ravel() for p in files("train")] + [np.load(p) for p in files("remainder")]
    return np.concatenate(parts).astype(np.int64)


def _check_tokens(run: dict[str, Any], seqs: list[np.ndarray]) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(run["tok_dir"] / "tokenizer.json"))
    man = run["tokenize"]
    assert len(seqs) == len(run["train"]) == man["train_docs"]
    assert sum(len(s) for s in seqs) == man["tokens"]
    by_source: dict[str, int] = {}
    for seq, doc in zip(seqs, run["train"], strict=True):
        assert tok.decode(seq[:-1].tolist(), skip_special_tokens=False) == doc["text"]
        assert int(seq[-1]) == tok.token_to_id(EOS)
        by_source[doc["source"]] = by_source.get(doc["source"], 0) + len(seq)
    assert by_source == man["tokens_by_source"]
    # the same multiset of tokens as the packed training data
    vocab = man["vocab_size"]
    assert np.array_equal(np.bincount(np.concatenate(seqs).astype(np.int64), minlength=vocab),
                          np.bincount(_run_tokens(run["tok_dir"]), minlength=vocab))


# pad = EOS (as in the run's checkpoints): megatron-core says so and pads with an id outside
# the data instead, so no end-of-document token is masked as padding
@pytest.mark.filterwarnings("ignore:The pad token id in the tokenizer collides")
def test_megatron_reads_with_megatron_core(run: dict[str, Any], tmp_path: Path) -> None:
    with warnings.catch_warnings():  # no Transformer Engine / Apex on a CPU machine
        warnings.simplefilter("ignore")
        indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
        from megatron.core.datasets.blended_megatron_dataset_builder import (
            BlendedMegatronDatasetBuilder,
        )
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
        from megatron.core.tokenizers import MegatronTokenizer
    dest = tmp_path / "mg"
    out = _export(run, dest, "megatron")
    ds = indexed.IndexedDataset(str(dest / "text_document"))
    seqs = [np.asarray(ds[i]) for i in range(len(ds))]
    assert ds.document_indices.tolist() == list(range(len(seqs) + 1))
    _check_tokens(run, seqs)
    assert out["tokens"] == run["tokenize"]["tokens"]
    # what pretrain_gpt.py trains on: the tokenizer folder and GPTDataset over the prefix
    tok = MegatronTokenizer.from_pretrained(tokenizer_path=str(dest / "tokenizer"),
                                            metadata_path={"library": "huggingface"})
    assert tok.eod == int(seqs[0][-1]) and tok.vocab_size == run["tokenize"]["vocab_size"]
    seq_len = 64
    cfg = GPTDatasetConfig(random_seed=1, sequence_length=seq_len, split="100,0,0",
                           blend=([str(dest / "text_document")], None), tokenizer=tok,
                           reset_position_ids=False, reset_attention_mask=False,
                           eod_mask_loss=False, path_to_cache=str(tmp_path / "cache"))
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [8, None, None], lambda: True,
                                                cfg).build()
    assert len(train) == (out["tokens"] - 1) // seq_len  # one epoch of the exported tokens
    sample = train[0]["tokens"].numpy()
    assert len(sample) == seq_len and int(sample.max()) < tok.vocab_size


def test_nanotron_reads_with_datatrove(run: dict[str, Any], tmp_path: Path) -> None:
    dataset = pytest.importorskip("datatrove.utils.dataset")
    from transformers import AutoTokenizer

    dest = tmp_path / "nt"
    out = _export(run, dest, "nanotron")
    (ds_file,) = sorted(dest.glob("*.ds"))
    name, size = Path(f"{ds_file}.metadata").read_text().splitlines()[0].rsplit("|", 1)
    tokens = np.fromfile(ds_file, "<u2" if size == "2" else "<u4").astype(np.int64)
    ends = np.fromfile(f"{ds_file}.index", "<u8").astype(np.int64)
    _check_tokens(run, np.split(tokens, ends[:-1]))
    # nanotron learns the tokenizer from the metadata and loads it with AutoTokenizer
    hf = AutoTokenizer.from_pretrained(name)
    assert hf.eos_token == EOS and len(hf.get_vocab()) == run["tokenize"]["vocab_size"]
    text = run["train"][0]["text"]
    assert hf(text)["input_ids"] == tokens[:ends[0] - 1].tolist()
    # datatrove's reader: windows of seq_len + 1 tokens, positions restarting after each end
    seq_len = 64
    data = dataset.DatatroveFolderDataset(str(dest), seq_len=seq_len, token_size=int(size),
                                          return_positions=True)
    assert len(data) == out["tokens"] // (seq_len + 1)
    for item in (0, 1, len(data) - 1):
        got = data[item]
        lo = item * (seq_len + 1)
        assert got["input_ids"].tolist() == tokens[lo:lo + seq_len + 1].tolist()
        starts = {int(e) - lo for e in ends if lo < e <= lo + seq_len}
        restarts = {i for i, p in enumerate(got["positions"].tolist()) if p == 0 and i > 0}
        assert restarts == starts
