"""One large JSONL input, many workers: the input cut into line-aligned byte ranges, each read
as a shard of its own (its own parts, its own resume marker).

`plan` cuts an input larger than ``range_bytes`` (the stage passes ``shard_max_bytes``):

- plain JSONL: at the first line start ``range_bytes`` or more past the last cut
  (`plain_cuts`, a few small reads); the newlines between cuts are counted per range
  (`count_lines`: in the planning process for inputs up to ``LOCAL_COUNT_BYTES`` in all,
  else in parallel on the stage's workers: ``tasks/ingest/plan.py``);
- zstd made of several frames (as ``pzstd`` and dumps written frame by frame produce): at
  frame starts, about ``range_bytes`` of decompressed data apart (`zstd_ranges`, one pass
  decompressing the file). A range starts decompressing at its first frame; the line that
  began in the frame before belongs to the range before, which reads on into later frames
  until that line ends.

Not split: gzip (a deflate stream cannot be entered in the middle), a zstd file of one frame,
and a zstd file that does not decompress cleanly to its end (read whole, so the damage is
quarantined as without ranges); other formats.

A range is ``{"start", "end", "lines_before", "at_line_start", "seek", "zstd"}``: the lines
that *start* in ``[start, end)`` of the (decompressed) stream are its own; ``lines_before``
counts the newlines before ``start``, so its lines keep the numbers (and so the ids and
quarantine positions) they have in a read of the whole input. ``readers/jsonl.py`` reads one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zstandard

from tasks.ingest.inputs import InputError, detect_format

SCAN = 8 * 2**20  # bytes counted at once
LOOK = 64 * 2**10  # bytes read at once looking for a line's end
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def kind(path: str, fmt: str, range_bytes: int) -> str | None:
    """How a JSONL input larger than `range_bytes` can be cut: ``plain``, ``zstd`` (frames),
    or None (read it whole: small, gzip, not JSONL, unreadable)."""
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size <= range_bytes or \
                detect_format(p, fmt) != "jsonl":
            return None
        with open(p, "rb") as fh:
            magic = fh.read(4)
    except (InputError, OSError):
        return None
    if magic == ZSTD_MAGIC:
        return "zstd"
    return None if magic[:2] == b"\x1f\x8b" else "plain"


def plan(path: str, fmt: str, range_bytes: int) -> list[dict[str, Any]] | None:
    """The ranges of a JSONL input worth splitting, or None (read it whole)."""
    how = kind(path, fmt, range_bytes)
    if how == "zstd":
        return zstd_ranges(path, range_bytes)
    if how == "plain":
        cuts = plain_cuts(path, range_bytes)
        return plain_ranges(cuts, [count_lines(path, a, b) for a, b in
                                   zip(cuts, cuts[1:], strict=False)]) if cuts else None
    return None


def count_lines(path: str, start: int, end: int) -> int:
    """Newlines in [start, end) of a file (one range's share of the planning; on the workers,
    the ranges are counted in parallel)."""
    with open(path, "rb") as fh:
        fh.seek(start)
        n, left = 0, end - start
        while left > 0:
            data = fh.read(min(SCAN, left))
            if not data:
                break
            n += data.count(b"\n")
            left -= len(data)
    return n


def plain_cuts(path: str, range_bytes: int) -> list[int] | None:
    """Where a plain JSONL file's ranges start: the first line start at or after every
    `range_bytes` past the last cut (a few small reads), or None for a single range."""
    size = Path(path).stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        target = range_bytes
        while target < size:
            fh.seek(target - 1)
            at = target - 1
            while True:  # the first newline at or after target - 1: a line starts after it
                data = fh.read(LOOK)
                if not data:
                    at = size
                    break
                nl = data.find(b"\n")
                if nl >= 0:
                    at += nl + 1
                    break
                at += len(data)
            if at >= size:
                break
            cuts.append(at)
            target = at + range_bytes
    return cuts if len(cuts) > 1 else None


def plain_ranges(cuts: list[int], lines: list[int]) -> list[dict[str, Any]]:
    """The ranges at `cuts`, given the newlines between consecutive cuts."""
    before = [0]
    for n in lines:
        before.append(before[-1] + n)
    bounds = [*cuts, None]
    return [{"start": a, "end": bounds[k + 1], "lines_before": before[k], "at_line_start": True,
             "seek": a, "zstd": False} for k, a in enumerate(cuts)]


def _frames(path: Path) -> list[tuple[int, int, int, bool]] | None:
    """Each zstd frame's (compressed offset, decompressed offset, newlines before it, whether
    the data before it ends a line); None if the file does not decompress cleanly."""
    dctx = zstandard.ZstdDecompressor()
    frames: list[tuple[int, int, int, bool]] = []
    pos = out = lines = 0
    last_nl = True
    with open(path, "rb") as fh:
        pending = b""
        obj = None
        while True:
            data = pending or fh.read(SCAN)
            pending = b""
            if not data:
                return frames if obj is None else None  # ended inside a frame: damaged
            if obj is None:
                frames.append((pos, out, lines, last_nl))
                obj = dctx.decompressobj()
            try:
                got = obj.decompress(data)
            except zstandard.ZstdError:
                return None
            if got:
                out += len(got)
                lines += got.count(b"\n")
                last_nl = got.endswith(b"\n")
            if obj.eof:
                rest = obj.unused_data
                pos += len(data) - len(rest)
                pending, obj = rest, None
            else:
                pos += len(data)


def zstd_ranges(path: str, range_bytes: int) -> list[dict[str, Any]] | None:
    """The ranges of a zstd JSONL file at frame starts (one pass decompressing it)."""
    frames = _frames(Path(path))
    if not frames or len(frames) < 2:
        return None
    picked = [frames[0]]
    for f in frames[1:]:
        if f[1] - picked[-1][1] >= range_bytes:
            picked.append(f)
    if len(picked) < 2:
        return None
    ends = [f[1] for f in picked[1:]] + [None]
    return [{"start": out, "end": ends[k], "lines_before": lines, "at_line_start": at_nl,
             "seek": pos, "zstd": True} for k, (pos, out, lines, at_nl) in enumerate(picked)]
