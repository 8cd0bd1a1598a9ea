"""``datamill export`` to Parquet (a Hugging Face dataset folder) and JSONL: the rows are the
run's kept documents, the card says what is in them, shards obey their limits."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard
from test_export_kit import make_run, train_docs

from tasks.export import export_run
from tasks.schema import DOC_COLUMNS


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_run(tmp_path_factory.mktemp("export-run") / "root")


def _tokens(tokenizer: Path, texts: list[str]) -> int:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    return sum(len(e.ids) + 1 for e in tok.encode_batch(texts, add_special_tokens=False))


def _norm(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as comparable values (float32 scores, UTC datetimes)."""
    out = {k: doc[k] for k in DOC_COLUMNS}
    if out["lang_score"] is not None:
        out["lang_score"] = float(np.float32(out["lang_score"]))
    if isinstance(out["fetched_at"], str):
        out["fetched_at"] = datetime.fromisoformat(out["fetched_at"])
    return out


def _header(readme: Path) -> dict[str, Any]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_parquet_loads_in_datasets_offline(run: dict[str, Any], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = export_run(run["catalog"], run["run_id"], tmp_path / "hf", "parquet")
    assert out["status"] == "exported" and out["docs"] == len(run["docs"])
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == len(run["docs"])
    assert [_norm(r) for r in ds] == [_norm(d) for d in run["docs"]]
    # the card's features are the ones datasets used, and its split size is the real one
    head = _header(tmp_path / "hf" / "README.md")
    feats = {f["name"]: f["dtype"] for f in head["dataset_info"]["features"]}
    assert feats == {k: v.dtype for k, v in ds.features.items()}
    assert head["dataset_info"]["splits"][0]["num_examples"] == len(run["docs"])
    assert head["configs"][0]["data_files"][0]["path"] == "data/train-*"


def test_parquet_card(run: dict[str, Any], tmp_path: Path) -> None:
    export_run(run["catalog"], run["run_id"], tmp_path / "hf", "parquet")
    readme = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    head = _header(tmp_path / "hf" / "README.md")
    docs = run["docs"]
    assert head["license"] == "other"  # three sources, one licence unknown
    assert head["language"] == sorted({d["lang"] for d in docs if d["lang"]})
    for src in ("wiki", "docs", "forum"):
        mine = [d["text"] for d in docs if d["source"] == src]
        assert f"| {src} | {len(mine):,} | {_tokens(run['tokenizer'], mine):,} |" in readme
    assert "| forum | unknown | 30 |" in readme  # no licence in its records
    assert "| wiki | CC\\-BY\\-SA\\-4\\.0 | 30 |" in readme
    assert "| filter | f00d | 100 | 90 | 10 |" in readme  # the funnel, from the catalog
    assert "| filter | gopher\\_quality\\.min\\_words | 10 | 12 |" in readme
    assert "vocab_size: 320" in readme  # the recipe as the catalog recorded it
    assert "llm.example/v1" in readme and "s3cret" not in readme and "k3y" not in readme
    total = _tokens(run["tokenizer"], [d["text"] for d in docs])
    assert f"tokens: {total:,}." in readme


def test_parquet_shards_by_rows_and_bytes(run: dict[str, Any], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    export_run(run["catalog"], run["run_id"], tmp_path / "rows", "parquet", max_shard_rows=25)
    files = sorted((tmp_path / "rows" / "data").iterdir())
    assert [f.name for f in files] == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [25, 25, 25, 15]
    # a shard ends before the batch that would carry it past the byte limit
    monkeypatch.setattr("tasks.export.source.BATCH_ROWS", 10)
    export_run(run["catalog"], run["run_id"], tmp_path / "bytes", "parquet",
               max_shard_bytes=6_000)
    files = sorted((tmp_path / "bytes" / "data").iterdir())
    assert len(files) > 2
    assert all(pq.read_table(f).nbytes <= 6_000 or pq.ParquetFile(f).metadata.num_rows <= 10
               for f in files)
    ids = [i for f in files for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    assert ids == [d["id"] for d in run["docs"]]  # order kept across shards


def test_parquet_train_split(run: dict[str, Any], tmp_path: Path) -> None:
    out = export_run(run["catalog"], run["run_id"], tmp_path / "t", "parquet", split="train")
    rows = pq.read_table(tmp_path / "t" / "data").to_pylist()
    want = train_docs(run["docs"])
    assert 0 < len(want) < len(run["docs"]) and out["docs"] == len(want)
    assert [r["id"] for r in rows] == [d["id"] for d in want]


def _jsonl_rows(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted((folder / "data").iterdir()):
        raw = f.read_bytes()
        if f.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        elif f.name.endswith(".zst"):
            raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
        rows += [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    return rows


@pytest.mark.parametrize(("name", "compression", "suffix"), [
    ("plain", None, ".jsonl"), ("gz", "gzip", ".jsonl.gz"),
    ("corpus.jsonl.zst", None, ".jsonl.zst")])  # compression from the folder's suffix
def test_jsonl_round_trip(run: dict[str, Any], tmp_path: Path, name: str,
                          compression: str | None, suffix: str) -> None:
    out = export_run(run["catalog"], run["run_id"], tmp_path / name, "jsonl",
                     compression=compression, max_shard_rows=40)
    files = sorted((tmp_path / name / "data").iterdir())
    assert [f.name for f in files] == [f"train-{i:05d}-of-00003{suffix}" for i in range(3)]
    rows = _jsonl_rows(tmp_path / name)
    assert all(list(r) == DOC_COLUMNS for r in rows)
    assert [_norm(r) for r in rows] == [_norm(d) for d in run["docs"]]
    assert out["docs"] == len(rows)


def test_jsonl_loads_in_datasets(run: dict[str, Any], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    export_run(run["catalog"], run["run_id"], tmp_path / "j.zst", "jsonl")
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "j.zst" / "data" / "train-*"),
                               split="train", cache_dir=str(tmp_path / "cache"))
    assert ds["id"] == [d["id"] for d in run["docs"]]
    assert ds["text"] == [d["text"] for d in run["docs"]]


def test_gzip_is_reproducible(run: dict[str, Any], tmp_path: Path) -> None:
    for name in ("a", "b"):
        export_run(run["catalog"], run["run_id"], tmp_path / name, "jsonl", compression="gzip")
    a = sorted((tmp_path / "a" / "data").iterdir())
    b = sorted((tmp_path / "b" / "data").iterdir())
    assert [f.read_bytes() for f in a] == [f.read_bytes() for f in b]


def test_streams_in_bounded_batches(run: dict[str, Any], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Documents are read in record batches and written out row group by row group: no
    step holds more than a batch (or a row group's worth of batches)."""
    from tasks.export.source import resolve

    monkeypatch.setattr("tasks.export.source.BATCH_ROWS", 8)
    monkeypatch.setattr("tasks.export.hf.ROW_GROUP_BYTES", 1)  # flush after every batch
    src = resolve(run["catalog"], run["run_id"])
    sizes = [b.num_rows for b in src.batches("all")]
    assert max(sizes) == 8 and sum(sizes) == len(run["docs"])
    export_run(run["catalog"], run["run_id"], tmp_path / "hf", "parquet")
    (shard,) = (tmp_path / "hf" / "data").iterdir()
    assert pq.ParquetFile(shard).metadata.num_row_groups == len(sizes)
