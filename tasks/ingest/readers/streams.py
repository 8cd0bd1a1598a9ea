"""Compressed input streams: plain, gzip or zstd, told apart by magic bytes."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from tasks.ingest.config import READ_CHUNK

# what reading a truncated or corrupt stream raises
STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError, zstandard.ZstdError)


class _ZstdRaw(io.RawIOBase):
    """A zstd stream as a raw file: reads across frames, and raises EOFError when the data
    ends inside a frame (python-zstandard's stream reader just stops there)."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self._dctx = zstandard.ZstdDecompressor()
        self._obj: Any = None
        self._leftover = b""
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _fill(self) -> bytes:
        while True:
            if self._obj is None:
                data, self._leftover = self._leftover or self._fh.read(64 * 1024), b""
                if not data:
                    return b""  # clean end, between frames
                self._obj = self._dctx.decompressobj()
            else:
                data = self._fh.read(64 * 1024)
                if not data:
                    raise EOFError("zstd stream ends inside a frame (truncated file)")
            out = self._obj.decompress(data)
            if self._obj.eof:
                self._leftover, self._obj = self._obj.unused_data, None
            if out:
                return out

    def readinto(self, b: Any) -> int:
        if not len(self._out):
            self._out = memoryview(self._fill())
            if not len(self._out):
                return 0
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_part(path: Path, part: dict[str, Any]) -> BinaryIO:
    """A plain or zstd input opened at a range's first byte (``tasks/ingest/ranges.py``): the
    file at ``seek``; for zstd, the frame starting there, decompressed (and the frames after
    it, as far as they are read)."""
    fh = open(path, "rb")
    fh.seek(part["seek"])
    if part.get("zstd"):
        return io.BufferedReader(_ZstdRaw(fh), buffer_size=READ_CHUNK)
    return fh


def open_stream(path: Path) -> BinaryIO:
    """Open plain, gzip or zstd by magic bytes (the extension may lie)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        return io.BufferedReader(_ZstdRaw(open(path, "rb")), buffer_size=READ_CHUNK)
    return open(path, "rb")
