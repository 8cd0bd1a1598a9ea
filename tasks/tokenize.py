"""Tokenize: train a byte-level BPE on kept text, then pack documents into token shards.

Held-out documents (a fixed fraction chosen by a hash of the id, so the split never depends on
shard layout or run) are never trained on — not by the tokenizer, not by the model — and are
written to ``heldout/`` for evaluation. Training documents are encoded with EOS after each
document and cut into fixed-length rows per source saved as ``.npy`` (memory-mapped by the
trainer). A source's tokens short of a full row in one shard are carried, not dropped: after
all shards, ``pack_remainders`` packs each source's carried tokens (in shard order) into more
rows, and only what is left below one row per source is dropped, and counted.

With a score column (``train.order.by`` or ``train.stability.by``), each row also gets a
score: the token-weighted mean of its documents' scores (documents without one left out), saved
beside the rows as ``*.score.npy`` and named in meta.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from tasks.store import write_parquet

EOS = "<|endoftext|>"
_BUCKETS = 1_000_000


def heldout_mask(ids: pa.Array, fraction: float) -> np.ndarray:
    """True for documents in the held-out split: a stable function of the id alone."""
    cut = int(fraction * _BUCKETS)
    return np.fromiter(
        (xxhash.xxh64_intdigest(i.encode("utf-8")) % _BUCKETS < cut for i in ids.to_pylist()),
        dtype=bool, count=len(ids),
    )


def iter_train_texts(paths: list[str], fraction: float, max_bytes: int) -> Iterator[list[str]]:
    """Batches of training-split texts, stopping after about max_bytes."""
    seen = 0
    for path in paths:
        for rb in pq.ParquetFile(path).iter_batches(batch_size=1_000, columns=["id", "text"]):
            held = heldout_mask(rb.column(0), fraction)
            texts = [t for t, h in zip(rb.column(1).to_pylist(), held, strict=True) if not h]
            yield texts
            seen += sum(len(t) for t in texts)
            if seen >= max_bytes:
                return


def train_tokenizer(texts: Iterator[list[str]], vocab_size: int, min_frequency: int, out: Path):
    """Byte-level BPE (GPT-2 style), EOS as id 0. Saved as ``tokenizer.json``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tok.save(str(tmp))
    tmp.replace(out)  # atomic: a half-written tokenizer is never mistaken for a finished one
    return tok


def _dtype(tok: Any) -> type:
    return np.uint16 if tok.get_vocab_size() <= 2**16 else np.uint32


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    tmp.replace(path)  # atomic: a crash never leaves a half-written shard behind


def _cut_rows(streams: dict[str, np.ndarray], seq_len: int, dtype: Any
              ) -> tuple[np.ndarray, dict[str, list[int]], dict[str, np.ndarray]]:
    """Each source's token stream cut into full rows of its own (sources in the dict's order):
    the rows, each source's row range [start, stop), and each source's leftover tokens."""
    blocks: list[np.ndarray] = []
    ranges: dict[str, list[int]] = {}
    rest: dict[str, np.ndarray] = {}
    n_seq = 0
    for src, stream in streams.items():
        n = len(stream) // seq_len
        blocks.append(stream[: n * seq_len].reshape(n, seq_len))
        rest[src] = stream[n * seq_len:]
        if n:
            ranges[src] = [n_seq, n_seq + n]
        n_seq += n
    rows = np.concatenate(blocks) if blocks else np.zeros((0, seq_len), dtype=dtype)
    return rows, ranges, rest


def row_scores(token_scores: np.ndarray) -> np.ndarray:
    """Per row of per-token scores (n, seq_len): the mean over its scored tokens (NaN = none),
    i.e. the token-weighted mean of its documents' scores."""
    have = ~np.isnan(token_scores)
    n = have.sum(axis=1)
    total = np.where(have, token_scores, 0.0).sum(axis=1, dtype=np.float64)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float32)


def _doc_scores(t: pa.Table, column: str, path: str) -> list[float]:
    try:
        values = t.column(column).cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"{path}: score column {column!r} is not numeric ({e})") from None
    return [np.nan if v is None else v for v in values.to_pylist()]


def pack_shard(
    in_path: str, tokenizer_path: str, out_dir: str, key: str, seq_len: int, fraction: float,
    score_column: str | None = None,
) -> dict[str, Any]:
    """Encode one kept shard: training docs -> ``train/part-<key>.npy`` rows of seq_len tokens;
    held-out docs -> ``heldout/part-<key>.parquet``.

    Each source is packed into its own rows (sources in order of first appearance), so every row
    belongs to exactly one source and the trainer can sample by domain weight: the shard's
    ``sources`` maps a source to its row range [start, stop). Each source's last partial row is
    not dropped but carried: its tokens go to ``remainder/part-<key>.npy`` (one flat array,
    ``remainder_sources`` maps a source to its slice) for ``pack_remainders``. With
    `score_column`, ``train/part-<key>.score.npy`` holds each row's score and
    ``remainder/part-<key>.score.npy`` each carried token's."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    eos_id = tok.token_to_id(EOS)
    if eos_id is None:
        raise ValueError(f"{tokenizer_path}: no {EOS} token; packing needs it between documents")
    dtype = _dtype(tok)
    out = Path(out_dir)
    columns = ["id", "text", "source", "lang"]
    if score_column is not None:
        names = pq.read_schema(in_path).names
        if score_column not in names:
            raise ValueError(f"{in_path}: no score column {score_column!r} (train.order.by or "
                             f"stability.by) in the kept documents; columns: {sorted(names)}")
        columns += [score_column] if score_column not in columns else []
    t = pq.read_table(in_path, columns=columns)
    held = heldout_mask(t.column("id").combine_chunks(), fraction)
    write_parquet(t.select(["id", "text", "source", "lang"]).filter(pa.array(held)),
                  out / "heldout" / f"part-{key}.parquet")
    train = t.filter(pa.array(~held))

    pieces: dict[str, list[np.ndarray]] = {}  # insertion order = first appearance
    scored: dict[str, list[np.ndarray]] = {}  # per token: its document's score
    texts = train.column("text").to_pylist()
    sources = train.column("source").to_pylist()
    scores = _doc_scores(train, score_column, in_path) if score_column else None
    for start in range(0, len(texts), 1_000):
        encs = tok.encode_batch(texts[start:start + 1_000], add_special_tokens=False)
        for i, (enc, src) in enumerate(zip(encs, sources[start:start + 1_000], strict=True)):
            pieces.setdefault(src or "", []).append(np.asarray(enc.ids + [eos_id], dtype=dtype))
            if scores is not None:
                scored.setdefault(src or "", []).append(
                    np.full(len(enc.ids) + 1, scores[start + i], dtype=np.float32))
    streams = {src: np.concatenate(docs) for src, docs in pieces.items()}
    rows, ranges, rest = _cut_rows(streams, seq_len, dtype)
    _save_npy(out / "train" / f"part-{key}.npy", rows)
    offsets = np.cumsum([0] + [len(r) for r in rest.values()]).tolist()
    carried = {src: [lo, hi] for src, lo, hi in zip(rest, offsets[:-1], offsets[1:], strict=True)
               if hi > lo}
    _save_npy(out / "remainder" / f"part-{key}.npy",
              np.concatenate(list(rest.values())) if rest else np.zeros(0, dtype=dtype))
    extra: dict[str, str] = {}
    if scores is not None:
        token_scores = {src: np.concatenate(scored[src]) for src in streams}
        score_rows, _, score_rest = _cut_rows(token_scores, seq_len, np.float32)
        extra = {"score": f"train/part-{key}.score.npy",
                 "remainder_score": f"remainder/part-{key}.score.npy"}
        _save_npy(out / extra["score"], row_scores(score_rows))
        _save_npy(out / extra["remainder_score"],
                  np.concatenate(list(score_rest.values())) if score_rest
                  else np.zeros(0, dtype=np.float32))
    tokens = sum(len(s) for s in streams.values())
    return {
        **extra,
        "docs_in": len(t),
        "docs_kept": len(t),
        "docs_rejected": 0,
        "train_docs": len(train),
        "heldout_docs": int(held.sum()),
        "tokens": int(tokens),
        "tokens_carried": int(offsets[-1]),
        "n_seq": len(rows),
        "tokens_by_source": {src: int(len(s)) for src, s in streams.items()},
        "sources": ranges,
        "shard": f"train/part-{key}.npy",
        "remainder": f"remainder/part-{key}.npy",
        "remainder_sources": carried,
        "heldout": f"heldout/part-{key}.parquet",
    }


def pack_remainders(out_dir: str, seq_len: int, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The last packing step, after every shard: each source's carried tokens, concatenated in
    the order of ``shards``, cut into rows -> ``train/remainder.npy``. Only what is left below
    one row per source is dropped, and counted per source (``tokens_dropped``).

    Deterministic (sources by name, shards in the given order) and idempotent: it reads only
    the shards' remainder files, so a re-run after a crash writes the same rows."""
    out = Path(out_dir)
    parts: dict[str, list[np.ndarray]] = {}
    score_parts: dict[str, list[np.ndarray]] = {}
    dtype: Any = np.uint16
    scored = bool(shards) and all("remainder_score" in s for s in shards)
    for s in shards:
        flat = np.load(out / s["remainder"], allow_pickle=False)
        flat_scores = np.load(out / s["remainder_score"]) if scored else None
        dtype = flat.dtype
        for src, (lo, hi) in s["remainder_sources"].items():
            parts.setdefault(src, []).append(flat[lo:hi])
            if flat_scores is not None:
                score_parts.setdefault(src, []).append(flat_scores[lo:hi])
    streams = {src: np.concatenate(parts[src]) for src in sorted(parts)}
    rows, ranges, rest = _cut_rows(streams, seq_len, dtype)
    _save_npy(out / "train" / "remainder.npy", rows)
    extra = {}
    if scored:
        token_scores = {src: np.concatenate(score_parts[src]) for src in streams}
        extra = {"score": "train/remainder.score.npy"}
        _save_npy(out / extra["score"],
                  row_scores(_cut_rows(token_scores, seq_len, np.float32)[0]))
    return {"shard": "train/remainder.npy", "n_seq": len(rows), "sources": ranges,
            "tokens_dropped": {src: int(len(r)) for src, r in rest.items()}, **extra}


def write_meta(out_dir: Path, tokenizer_path: Path, seq_len: int, shards: list[dict],
               row_score: str | None = None) -> dict:
    """meta.json, the index of the packed data: vocabulary, dtype, and per shard its path, row
    count and row range per source (what the trainer's domain sampling and replay read); with
    `row_score` (the score column), each shard's per-row score file."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    vocab = tok.get_vocab_size()
    meta = {
        "vocab_size": vocab,
        "eos_id": tok.token_to_id(EOS),
        "eos_token": EOS,
        "seq_len": seq_len,
        "dtype": np.dtype(_dtype(tok)).name,
        "train_shards": [{"path": s["shard"], "n_seq": s["n_seq"], "sources": s["sources"],
                          **({"score": s["score"]} if row_score else {})}
                         for s in shards if s["n_seq"] > 0],
    }
    if row_score:
        meta["row_score"] = row_score
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def check_tokenizer(path: Path) -> int:
    """Vocabulary size of a tokenizer.json usable here (it must have the EOS token)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    if tok.token_to_id(EOS) is None:
        raise ValueError(f"{path}: tokenizer has no {EOS} token (needed between documents)")
    return int(tok.get_vocab_size())


def read_heldout(out_dir: Path, max_docs: int | None = None) -> pa.Table:
    files = sorted((out_dir / "heldout").glob("part-*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table(
        {"id": pa.array([], pa.string()), "text": pa.array([], pa.large_string()),
         "source": pa.array([], pa.string()), "lang": pa.array([], pa.string())})
    t = t.take(pc.sort_indices(t, [("id", "ascending")]))  # order independent of sharding
    return t.slice(0, max_docs) if max_docs else t
