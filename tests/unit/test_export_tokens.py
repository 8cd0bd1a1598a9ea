"""``datamill export`` to Megatron-LM's indexed dataset and to datatrove/nanotron's ``.ds``
files, read back with readers written here from the formats' documentation: one document per
corpus document, its ids decoding to its text with the run's tokenizer, counts that add up."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_export_kit import make_run, train_docs

from tasks.export import ExportError, export_run
from tasks.export.megatron import megatron_dtype, write_index
from tasks.export.nanotron import token_size


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_run(tmp_path_factory.mktemp("export-run") / "root")


def _tok(path: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def read_megatron(prefix: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Megatron's MMIDIDX index, read field by field; every sequence out of the .bin."""
    idx = Path(f"{prefix}.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack_from("<Q", idx, 9)
    code = idx[17]
    n, n_doc = struct.unpack_from("<QQ", idx, 18)
    assert version == 1 and n_doc == n + 1
    off = 34
    sizes = np.frombuffer(idx, "<i4", n, off)
    off += 4 * n
    pointers = np.frombuffer(idx, "<i8", n, off)
    off += 8 * n
    doc_idx = np.frombuffer(idx, "<i8", n_doc, off)
    assert off + 8 * n_doc == len(idx)  # nothing after the document indices
    dtype = np.dtype({8: "<u2", 4: "<i4"}[code])
    data = np.fromfile(f"{prefix}.bin", dtype)
    assert int(sizes.sum()) == len(data)
    seqs = [data[p // dtype.itemsize: p // dtype.itemsize + s]
            for p, s in zip(pointers.tolist(), sizes.tolist(), strict=True)]
    return seqs, doc_idx


def read_ds(folder: Path) -> list[tuple[str, list[np.ndarray], list[str]]]:
    """Each ``.ds`` file: its name, its documents (split at the ``.index`` ends), and its
    ``.metadata`` lines."""
    out = []
    for ds in sorted(folder.glob("*.ds")):
        meta = Path(f"{ds}.metadata").read_text().splitlines()
        size = int(meta[0].rsplit("|", 1)[1])
        tokens = np.fromfile(ds, "<u2" if size == 2 else "<u4")
        ends = np.fromfile(f"{ds}.index", "<u8")
        assert int(meta[1]) == len(tokens) == int(ends[-1])
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        out.append((ds.name, [tokens[a:b] for a, b in zip(starts, ends.astype(np.int64),
                                                           strict=True)], meta))
    return out


def _check_docs(seqs: list[np.ndarray], want: list[dict[str, Any]], tokenizer: Path) -> None:
    tok = _tok(tokenizer)
    eos = tok.token_to_id("<|endoftext|>")
    assert len(seqs) == len(want)
    for seq, doc in zip(seqs, want, strict=True):
        assert int(seq[-1]) == eos and eos not in seq[:-1].tolist()
        assert tok.decode(seq[:-1].tolist(), skip_special_tokens=False) == doc["text"]
        ids = tok.encode(doc["text"], add_special_tokens=False).ids
        assert seq[:-1].tolist() == ids  # the run's tokenizer, document by document


def test_megatron_round_trip(run: dict[str, Any], tmp_path: Path) -> None:
    out = export_run(run["catalog"], run["run_id"], tmp_path / "mg", "megatron")
    seqs, doc_idx = read_megatron(tmp_path / "mg" / "text_document")
    want = train_docs(run["docs"])  # default split for token formats: training documents
    _check_docs(seqs, want, run["tokenizer"])
    assert doc_idx.tolist() == list(range(len(want) + 1))  # one sequence per document
    assert out["docs"] == len(want) and out["tokens"] == sum(len(s) for s in seqs)
    assert (tmp_path / "mg" / "tokenizer" / "tokenizer.json").is_file()


def test_megatron_all_documents(run: dict[str, Any], tmp_path: Path) -> None:
    export_run(run["catalog"], run["run_id"], tmp_path / "mg", "megatron", split="all")
    seqs, _ = read_megatron(tmp_path / "mg" / "text_document")
    _check_docs(seqs, run["docs"], run["tokenizer"])


def test_megatron_dtype_rule_and_chunked_index(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert megatron_dtype(65499) == np.uint16 and megatron_dtype(65500) == np.int32
    # an index assembled in several chunks: pointers carry across chunk boundaries
    monkeypatch.setattr("tasks.export.megatron._CHUNK", 3)
    sizes = np.array([5, 1, 7, 2, 9, 4, 3, 8], dtype="<i4")
    (tmp_path / "s").write_bytes(sizes.tobytes())
    prefix = tmp_path / "x"
    data = np.arange(int(sizes.sum()), dtype="<i4")
    data.tofile(f"{prefix}.bin")
    write_index(Path(f"{prefix}.idx"), tmp_path / "s", len(sizes), np.dtype(np.int32))
    seqs, doc_idx = read_megatron(prefix)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    assert [s.tolist() for s in seqs] == [data[a:b].tolist()
                                          for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert doc_idx.tolist() == list(range(len(sizes) + 1))


def test_nanotron_round_trip(run: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "nt"
    out = export_run(run["catalog"], run["run_id"], dest, "nanotron")
    files = read_ds(dest)
    assert [f[0] for f in files] == ["00000.ds"]
    name, docs, meta = files[0]
    want = train_docs(run["docs"])
    _check_docs(docs, want, run["tokenizer"])
    assert meta[0] == f"{dest / 'tokenizer'}|2"  # nanotron loads this path with AutoTokenizer
    assert out["tokens"] == int(meta[1]) and out["docs"] == len(want)
    assert token_size(65536) == 2 and token_size(65537) == 4


def test_tokenizer_folder(run: dict[str, Any], tmp_path: Path) -> None:
    """The run's tokenizer.json as it is, and a config naming a class transformers 4 and 5
    know (AutoTokenizer loading it: tests/integration/test_export.py)."""
    export_run(run["catalog"], run["run_id"], tmp_path / "nt", "nanotron")
    folder = Path(read_ds(tmp_path / "nt")[0][2][0].rsplit("|", 1)[0])
    assert (folder / "tokenizer.json").read_bytes() == run["tokenizer"].read_bytes()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["eos_token"] == "<|endoftext|>"


def test_nanotron_shards_never_split_a_document(run: dict[str, Any], tmp_path: Path) -> None:
    export_run(run["catalog"], run["run_id"], tmp_path / "nt", "nanotron",
               max_shard_bytes=600)
    files = read_ds(tmp_path / "nt")
    assert len(files) > 2
    assert [f[0] for f in files] == [f"{i:05d}.ds" for i in range(len(files))]
    for _, docs, _ in files[:-1]:  # a file ends at the first document reaching the limit
        assert sum(len(d) for d in docs[:-1]) < 300 <= sum(len(d) for d in docs)
    _check_docs([d for f in files for d in f[1]], train_docs(run["docs"]),
                run["tokenizer"])


def test_token_formats_need_a_tokenizer(tmp_path: Path) -> None:
    bare = make_run(tmp_path / "root", n_docs=12, with_tokenize=False)
    with pytest.raises(ExportError, match="no tokenize stage"):
        export_run(bare["catalog"], bare["run_id"], tmp_path / "mg", "megatron")
    out = export_run(bare["catalog"], bare["run_id"], tmp_path / "pq", "parquet")
    assert out["docs"] == 12 and out["tokens"] is None  # documents export without one
