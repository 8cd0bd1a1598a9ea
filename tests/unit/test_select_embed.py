"""The embed stage's work on real all-MiniLM-L6-v2 embeddings (the bundled model, offline):
similar texts are closer than unrelated ones, the per-shard file keeps the contract (ids in
row order, fixed-size float32 vectors, unit norm), a re-run skips finished shards, and the
model is versioned by its files' content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llmkit import doc_shard

from tasks.select import embed as emb


@pytest.fixture(scope="module")
def model() -> Any:
    return emb.load_model(emb.resolve_model(emb.DEFAULT_MODEL), "cpu")


def test_the_default_resolves_to_the_bundled_folder_offline() -> None:
    p = Path(emb.resolve_model(emb.DEFAULT_MODEL))
    assert (p / "model.safetensors").is_file() and (p / "modules.json").is_file()
    assert emb.resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(p)
    assert emb.resolve_model("someone/not-here") == "someone/not-here"  # a hub id, as given


def test_similar_texts_are_closer_than_unrelated_ones(model: Any) -> None:
    v = emb.encode(model, ["The cat sat on the mat.", "A kitten is sitting on a rug.",
                           "Quarterly revenue rose by four percent.", None])
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3


def test_long_texts_are_truncated_to_the_models_tokens(model: Any) -> None:
    head = "Photosynthesis turns light into chemical energy in plants. " * 60
    a, b = emb.encode(model, [head, head + "Completely different tail about stock markets. "
                              * 500])
    assert model.max_seq_length == 256
    assert float(a @ b) > 0.999  # the tail lies past 256 tokens: the model never sees it


def test_a_shard_becomes_the_contract_file_and_reruns_skip_it(tmp_path: Path) -> None:
    src = doc_shard(tmp_path, 5)
    dst = tmp_path / "emb" / "part-0.parquet"
    res = emb.embed_shards([(str(src), str(dst))], emb.resolve_model(emb.DEFAULT_MODEL), 2)
    assert res["dim"] == 384 and res["max_tokens"] == 256
    assert res["shards"][0]["docs_in"] == 5 and not res["shards"][0].get("skipped")
    t = pq.read_table(dst)
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert t.column("id").to_pylist() == pq.read_table(src).column("id").to_pylist()
    ids, m = emb.read_embeddings(str(dst), np.array([3, 1]))
    assert ids == ["d3", "d1"] and np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    again = emb.embed_shards([(str(src), str(dst))], emb.resolve_model(emb.DEFAULT_MODEL))
    assert again["shards"][0] == {"docs_in": 5, "docs_kept": 5, "docs_rejected": 0,
                                  "skipped": True}


def test_the_model_is_versioned_by_content(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text('{"a": 1}')
    first = emb.model_digest(str(d))
    assert emb.model_digest(str(d)) == first
    (d / "config.json").write_text('{"a": 2}')
    assert emb.model_digest(str(d)) != first
    assert emb.model_digest("someone/not-here") == "hub:someone/not-here"
