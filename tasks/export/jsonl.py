"""JSONL: one document per line with the document contract's fields (tasks/schema.py), in
shards ``data/train-00000-of-0000N.jsonl`` — plain, gzip (``.jsonl.gz``) or zstd
(``.jsonl.zst``).

Values as JSON: ``fetched_at`` as an ISO 8601 string in UTC (null when unknown),
``lang_score`` as the shortest decimal that reads back to the same float32, ``meta`` as the
JSON string the contract stores (not re-parsed, so it round-trips byte for byte)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pyarrow as pa

from tasks.export.hf import SPLIT_NAME, contract_batches, counted
from tasks.export.shards import Limits, cut, finalize_names, rolled
from tasks.export.source import RunSource, Split, Stats
from tasks.export.tokens import DocTokenizer

Compression = Literal["none", "gzip", "zstd"]
SUFFIX = {"none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}


def compression_for(explicit: str | None, to: Path) -> Compression:
    """``--compression`` if given, else from the destination's suffix (``.gz``, ``.zst``)."""
    if explicit:
        if explicit not in SUFFIX:
            raise ValueError(f"compression must be one of {sorted(SUFFIX)}, not {explicit!r}")
        return explicit  # type: ignore[return-value]
    name = to.name.lower()
    if name.endswith((".gz", ".gzip")):
        return "gzip"
    if name.endswith((".zst", ".zstd")):
        return "zstd"
    return "none"


def _float32(v: float | None) -> float | None:
    return None if v is None else float(str(np.float32(v)))


def lines(rb: pa.RecordBatch) -> bytes:
    """The batch's documents as JSON lines."""
    cols = {name: rb.column(name).to_pylist() for name in rb.schema.names}
    out = []
    for i in range(rb.num_rows):
        row = {k: v[i] for k, v in cols.items()}
        ts = row.get("fetched_at")
        row["fetched_at"] = ts.isoformat() if ts is not None else None
        row["lang_score"] = _float32(row.get("lang_score"))
        out.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(out) + "\n").encode("utf-8")


class _Writer:
    def __init__(self, path: Path, compression: Compression):
        self.path = path
        self.raw: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.stream: Any
        if compression == "gzip":
            # mtime=0 and no file name in the header: the same documents give the same bytes
            self.stream = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0)
        elif compression == "zstd":
            import zstandard

            self.stream = zstandard.ZstdCompressor(level=3).stream_writer(self.raw,
                                                                          closefd=False)
        else:
            self.stream = self.raw

    def write(self, data: bytes) -> None:
        self.stream.write(data)

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


def write_jsonl(src: RunSource, out: Path, split: Split, limits: Limits,
                compression: Compression, tok: DocTokenizer | None) -> dict[str, Any]:
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    suffix = SUFFIX[compression]
    stats = Stats()
    shards: list[Path] = []

    def open_shard() -> _Writer:
        shards.append(data / f"{SPLIT_NAME}-{len(shards):05d}{suffix}")
        return _Writer(shards[-1], compression)

    for writer, rb in rolled(cut(counted(contract_batches(src, split), tok, stats), limits),
                             open_shard):
        writer.write(lines(rb))
    if not shards:  # no document: one empty shard (a valid empty stream)
        shards.append(data / f"{SPLIT_NAME}-00000{suffix}")
        _Writer(shards[0], compression).close()
    final = finalize_names(shards, SPLIT_NAME, suffix)
    return {"stats": stats.to_dict(), "files": [p.relative_to(out).as_posix() for p in final]}
