"""The generation cache: every completed LLM request, stored the moment it arrives.

Keyed by ``request_key`` = hash(chunk text, prompt content, model, API, sampling parameters),
so a re-run after a crash, a kill or an outage repeats no finished request, a re-run of a
finished stage asks for nothing, and two runs (or recipes) that share documents share
generations.

Layout under ``<data_root>/llm_cache/`` (append-only):

- ``log/<pid>-<uuid>.open.jsonl``: one writer's generations, one JSON line each, written with a
  single ``write`` + flush as each answer arrives. A SIGKILL can tear at most the last line,
  which readers skip. Renamed to ``.jsonl`` when the writer closes.
- ``segments/<uuid>.parquet``: compacted logs (``compact``, run by the flow process after the
  stage: one writer), sorted by key in row groups of ``ROW_GROUP_ROWS``: the footer's per
  row-group key range is the index. Readers look in both.

A lookup reads only what the asked keys need, never the whole cache: in a segment, the key
column of the row groups whose range holds an asked key, then the rows of those that hold
one; in the logs, the lines an in-memory index (key -> file, offset), built once per
``GenerationCache`` and extended by what was appended since, points to.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FIELDS = [
    pa.field("key", pa.string()),
    pa.field("output", pa.large_string()),  # the raw answer: parsing can change, answers not
    pa.field("tokens_in", pa.int64()),
    pa.field("tokens_out", pa.int64()),
    pa.field("finish_reason", pa.string()),
    pa.field("model", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("seconds", pa.float64()),
    pa.field("created_at", pa.float64()),
]
SCHEMA = pa.schema(FIELDS)
STALE_OPEN_LOG_S = 3600.0  # an .open log untouched this long belongs to a dead writer
# a lookup reads whole row groups: small ones keep it near the asked rows (~100 KB of answers)
ROW_GROUP_ROWS = 64


def request_key(chunk: str, prompt_digest: str, model: str, api: str,
                sampling: dict[str, Any]) -> str:
    blob = json.dumps({"text": hashlib.sha256(chunk.encode("utf-8")).hexdigest(),
                       "prompt": prompt_digest, "model": model, "api": api,
                       "sampling": sampling}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class GenerationCache:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.log_dir = self.root / "log"
        self.seg_dir = self.root / "segments"
        self._fd: int | None = None
        self._path: Path | None = None
        # segment -> (its footer, per row group (min key, max key); None where unknown)
        self._segs: dict[Path, tuple[Any, list[tuple[str, str] | None]]] = {}
        # logs by their closed name (a writer renames its log on close): bytes indexed so far
        self._scanned: dict[str, int] = {}
        self._logs: list[str] = []  # file number -> closed name
        self._fno: dict[str, int] = {}  # closed name -> file number
        self._index: dict[str, tuple[int, int, int]] = {}  # key -> (file number, offset, len)

    # --- reads ---
    def get_many(self, keys: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        if not keys:
            return found
        want = sorted(keys)
        for seg in sorted(self.seg_dir.glob("*.parquet")) if self.seg_dir.exists() else []:
            try:
                self._from_segment(seg, want, found)
            except FileNotFoundError:
                continue
        self._index_logs()
        self._from_logs([k for k in want if k not in found], found)
        return found

    def _from_segment(self, seg: Path, want: list[str], found: dict[str, dict[str, Any]]
                      ) -> None:
        if seg not in self._segs:  # segments never change once written: one footer read
            md = pq.read_metadata(seg)
            col = md.schema.names.index("key")
            ranges: list[tuple[str, str] | None] = []
            for i in range(md.num_row_groups):
                st = md.row_group(i).column(col).statistics
                ok = st is not None and st.has_min_max
                ranges.append((st.min, st.max) if ok else None)  # type: ignore[union-attr]
            self._segs[seg] = (md, ranges)
        md, ranges = self._segs[seg]
        cand = [i for i, r in enumerate(ranges) if r is None or _any_within(want, *r)]
        if not cand:
            return
        pf = pq.ParquetFile(seg, metadata=md)
        wanted = pa.array(want, pa.string())
        keys = pf.read_row_groups(cand, columns=["key"]).column("key")
        hit = pc.is_in(keys, value_set=wanted).to_numpy(zero_copy_only=False)
        rgs, row = [], 0
        for i in cand:  # the row groups that hold an asked key
            n = md.row_group(i).num_rows
            if hit[row:row + n].any():
                rgs.append(i)
            row += n
        for j in range(0, len(rgs), 16):  # a few row groups at a time: bounded memory
            t = pf.read_row_groups(rgs[j:j + 16])
            for r in t.filter(pc.is_in(t.column("key"), value_set=wanted)).to_pylist():
                found.setdefault(r["key"], r)

    def _index_logs(self) -> None:
        """Index what was appended to the logs since the last call (whole lines only)."""
        for p in self._log_files():
            name = p.name.replace(".open.jsonl", ".jsonl")
            if name not in self._fno:
                self._fno[name] = len(self._logs)
                self._logs.append(name)
            fno, start = self._fno[name], self._scanned.get(name, 0)
            try:
                with open(p, "rb") as fh:
                    fh.seek(start)
                    tail = b""
                    while block := fh.read(1 << 22):
                        buf = tail + block
                        cut = buf.rfind(b"\n") + 1
                        for line in buf[:cut].split(b"\n")[:-1]:
                            k = _key_of(line)
                            if k is not None:
                                self._index.setdefault(k, (fno, start, len(line)))
                            start += len(line) + 1
                        tail = buf[cut:]
            except FileNotFoundError:  # compacted meanwhile: its rows are in a segment
                pass
            self._scanned[name] = start

    def _from_logs(self, keys: list[str], found: dict[str, dict[str, Any]]) -> None:
        by_file: dict[int, list[tuple[int, int, str]]] = {}
        for k in keys:
            if k in self._index:
                fno, off, n = self._index[k]
                by_file.setdefault(fno, []).append((off, n, k))
        for fno, spots in by_file.items():
            name = self._logs[fno]
            for p in (self.log_dir / name, self.log_dir / name.replace(".jsonl", ".open.jsonl")):
                try:
                    fd = os.open(p, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    for off, n, k in sorted(spots):
                        rec = _record(os.pread(fd, n, off))
                        if rec is not None and rec["key"] == k:
                            found.setdefault(k, rec)
                finally:
                    os.close(fd)
                break
            else:  # compacted after it was indexed (its rows are in a segment from now on)
                for _, _, k in spots:
                    self._index.pop(k, None)

    def _log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.jsonl")) if self.log_dir.exists() else []

    @staticmethod
    def _iter_logs(paths: list[Path]) -> Any:
        for p in paths:
            try:
                data = p.read_bytes()
            except FileNotFoundError:  # compacted meanwhile: its rows are in a segment
                continue
            for line in data.split(b"\n"):
                rec = _record(line)
                if rec is not None:
                    yield rec
    def count(self) -> int:
        n = sum(pq.read_metadata(p).num_rows for p in self.seg_dir.glob("*.parquet")) \
            if self.seg_dir.exists() else 0
        return n + sum(1 for _ in self._iter_logs(self._log_files()))

    # --- writes (any process: each writer has its own log file) ---
    def put(self, rec: dict[str, Any]) -> None:
        if self._fd is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._path = self.log_dir / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.open.jsonl"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        os.write(self._fd, line)  # one write per record: O_APPEND keeps lines whole

    def close(self) -> None:
        if self._fd is not None and self._path is not None:
            os.close(self._fd)
            os.replace(self._path, self._path.with_name(
                self._path.name.replace(".open.jsonl", ".jsonl")))
            self._fd = None
            self._path = None


def compact(root: Path | str) -> int:
    """Fold closed (and stale open) logs into one Parquet segment, sorted by key in small row
    groups (see the module's docstring); returns rows folded. Single writer: call from the
    flow process only."""
    cache = GenerationCache(root)
    now = time.time()
    logs = [p for p in cache._log_files()
            if not p.name.endswith(".open.jsonl") or now - p.stat().st_mtime > STALE_OPEN_LOG_S]
    if not logs:
        return 0
    parts, batch = [], []
    for r in cache._iter_logs(logs):  # Arrow batches: far less memory than Python dicts
        batch.append({f.name: r.get(f.name) for f in FIELDS})
        if len(batch) >= 4096:
            parts.append(pa.Table.from_pylist(batch, schema=SCHEMA))
            batch = []
    parts.append(pa.Table.from_pylist(batch, schema=SCHEMA))
    t = pa.concat_tables(parts).sort_by("key")
    if len(t):
        path = cache.seg_dir / f"{uuid.uuid4().hex}.parquet"
        tmp = cache.seg_dir / f".{path.name}.tmp"
        cache.seg_dir.mkdir(parents=True, exist_ok=True)
        # key statistics only: they index the row groups; the answers' would bloat the footer
        pq.write_table(t, tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS,
                       write_statistics=["key"])
        os.replace(tmp, path)
    for p in logs:  # only after the segment is in place
        p.unlink(missing_ok=True)
    return len(t)


def _any_within(want: list[str], lo: str, hi: str) -> bool:
    """Whether sorted ``want`` holds a key in [lo, hi]."""
    i = bisect.bisect_left(want, lo)
    return i < len(want) and want[i] <= hi


_KEY = re.compile(rb'^\{"key": "([0-9A-Za-z_.:-]+)"')


def _key_of(line: bytes) -> str | None:
    """A log line's key: read off its start (``put`` writes the key first), else parsed."""
    m = _KEY.match(line)
    if m is not None:
        return m.group(1).decode()
    rec = _record(line)
    return None if rec is None else str(rec["key"])


def _record(line: bytes) -> dict[str, Any] | None:
    """A log line's record; None for a blank line or one torn by a kill."""
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) and "key" in rec and "output" in rec else None
