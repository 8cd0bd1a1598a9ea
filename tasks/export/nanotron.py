"""datatrove's tokenized format, as nanotron's ``Nanoset`` (through datatrove's
``DatatroveFolderDataset``) reads a folder of it:

- ``<n>.ds``: the documents' token ids back to back, little-endian uint16 (``token_size`` 2)
  when every id fits, else uint32 (4);
- ``<n>.ds.index``: little-endian uint64, each document's end position in tokens within its
  file (no header);
- ``<n>.ds.metadata``: three text lines — ``<tokenizer name or path>|<token_size>``, the
  file's token count, and that count for people (``1.2M tokens``).

nanotron reads the first line of a ``.metadata`` file to learn the tokenizer (loaded with
``AutoTokenizer.from_pretrained``) and the token size, so the line names this export's
``tokenizer/`` folder by its absolute path. Each document ends with the tokenizer's EOS, as
datatrove's ``DocumentTokenizer`` writes them; documents stay in corpus order (datatrove
shuffles them by default; nanotron's ``Nanoset`` shuffles samples anyway). A document never
spans two files; a new file starts when one reaches the shard size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.export.shards import Limits
from tasks.export.source import RunSource, Split, Stats
from tasks.export.tokens import DocTokenizer


def token_size(vocab_size: int) -> int:
    return 2 if vocab_size <= 2**16 else 4


def human(n: int) -> str:
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit} tokens"
    return f"{n} tokens"


class _DsFile:
    def __init__(self, path: Path, dtype: np.dtype):
        self.path = path
        self.dtype = dtype
        self.tokens = 0
        self.ds = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.index = open(f"{path}.index", "wb")  # noqa: SIM115

    def add(self, docs: list[np.ndarray]) -> None:
        ends = np.cumsum([len(d) for d in docs], dtype=np.int64) + self.tokens
        self.ds.write(np.concatenate(docs).astype(self.dtype).tobytes())
        self.index.write(ends.astype("<u8").tobytes())
        self.tokens = int(ends[-1])

    def close(self, tokenizer_name: str, size: int) -> None:
        self.ds.close()
        self.index.close()
        Path(f"{self.path}.metadata").write_text(
            f"{tokenizer_name}|{size}\n{self.tokens}\n{human(self.tokens)}")


def write_nanotron(src: RunSource, out: Path, split: Split, limits: Limits, tok: DocTokenizer,
                   tokenizer_name: str) -> dict[str, Any]:
    size = token_size(tok.vocab_size)
    dtype = np.dtype("<u2" if size == 2 else "<u4")
    max_tokens = max(1, limits.max_bytes // size)
    stats = Stats()
    files: list[_DsFile] = []
    for rb in src.batches(split, ["id", "text", "source", "lang", "meta"]):
        docs = tok.encode(rb.column("text"))
        stats.add(rb, np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs)))
        start = 0
        while start < len(docs):  # fill the current file, start another at the limit
            if not files or files[-1].tokens >= max_tokens:
                if files:
                    files[-1].close(tokenizer_name, size)
                files.append(_DsFile(out / f"{len(files):05d}.ds", dtype))
            cur = files[-1]
            room, stop = max_tokens - cur.tokens, start  # room > 0 here
            while stop < len(docs) and room > 0:
                room -= len(docs[stop])
                stop += 1
            cur.add(docs[start:stop])
            start = stop
    if files:
        files[-1].close(tokenizer_name, size)
    return {"stats": stats.to_dict(), "token_size": size,
            "files": [f.path.name for f in files]}
