"""Megatron-LM's indexed dataset (``MMapIndexedDataset`` / megatron-core's ``IndexedDataset``):
``<prefix>.bin`` holds every sequence's token ids back to back; ``<prefix>.idx`` is, all
little-endian:

    magic  b"MMIDIDX\\x00\\x00"  (9 bytes)
    version            uint64 = 1
    dtype code         uint8  (8 = uint16, 4 = int32: Megatron's codes)
    sequence count     uint64 = N
    document count     uint64 = N + 1 (the length of the document indices below)
    sizes              int32  x N  (tokens per sequence)
    pointers           int64  x N  (byte offset of each sequence in the .bin)
    document indices   int64  x (N + 1)  (0, then the sequence index ending each document)

One sequence per document, and one document per corpus document (tasks/export/tokens.py): the
document indices are 0, 1, ..., N, as Megatron-LM's ``preprocess_data.py`` writes them without
sentence splitting; each document ends with the tokenizer's EOS (its ``--append-eod``).
The dtype follows Megatron's rule: uint16 below 65,500 ids, else int32.

Written in one pass: tokens stream into the ``.bin`` and sizes into a scratch file; the
``.idx`` is then assembled in chunks, so memory stays bounded whatever the corpus size."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from tasks.export.source import RunSource, Split, Stats
from tasks.export.tokens import DocTokenizer

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
PREFIX = "text_document"  # --data-path <folder>/text_document
_CHUNK = 1 << 20  # entries per chunk when assembling the index


def megatron_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def write_index(idx_path: Path, sizes_path: Path, n: int, dtype: np.dtype) -> None:
    """The ``.idx`` for ``n`` sequences whose int32 sizes are in ``sizes_path``."""
    item = dtype.itemsize
    with open(idx_path, "wb") as out:
        out.write(MAGIC)
        out.write(struct.pack("<Q", VERSION))
        out.write(struct.pack("<B", DTYPE_CODES[dtype]))
        out.write(struct.pack("<Q", n))
        out.write(struct.pack("<Q", n + 1))
        with open(sizes_path, "rb") as fh:  # sizes, as they are
            while chunk := fh.read(_CHUNK * 4):
                out.write(chunk)
        with open(sizes_path, "rb") as fh:  # pointers: exclusive running sum of bytes
            start = 0
            while chunk := fh.read(_CHUNK * 4):
                sizes = np.frombuffer(chunk, dtype="<i4").astype(np.int64) * item
                ends = np.cumsum(sizes) + start
                out.write((ends - sizes).astype("<i8").tobytes())
                start = int(ends[-1])
        for lo in range(0, n + 1, _CHUNK):  # document indices: 0..n
            out.write(np.arange(lo, min(lo + _CHUNK, n + 1), dtype="<i8").tobytes())


def write_megatron(src: RunSource, out: Path, split: Split, tok: DocTokenizer
                   ) -> dict[str, Any]:
    dtype = megatron_dtype(tok.vocab_size)
    stats = Stats()
    bin_path, idx_path = out / f"{PREFIX}.bin", out / f"{PREFIX}.idx"
    sizes_path = out / ".sizes.int32"
    n = 0
    with open(bin_path, "wb") as bin_fh, open(sizes_path, "wb") as sizes_fh:
        for rb in src.batches(split, ["id", "text", "source", "lang", "meta"]):
            docs = tok.encode(rb.column("text"))
            lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
            stats.add(rb, lengths)
            if docs:
                bin_fh.write(np.concatenate(docs).astype(dtype.newbyteorder("<")).tobytes())
                sizes_fh.write(lengths.astype("<i4").tobytes())
                n += len(docs)
    write_index(idx_path, sizes_path, n, dtype)
    sizes_path.unlink()
    return {"stats": stats.to_dict(), "files": [bin_path.name, idx_path.name],
            "dtype": dtype.name, "sequences": n, "prefix": PREFIX}
