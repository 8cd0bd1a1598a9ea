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
  stage: one writer). Readers look in both.
"""

from __future__ import annotations

import hashlib
import json
import os
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

    # --- reads ---
    def get_many(self, keys: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        if not keys:
            return found
        want = pa.array(sorted(keys), pa.string())
        for seg in sorted(self.seg_dir.glob("*.parquet")) if self.seg_dir.exists() else []:
            try:
                t = pq.read_table(seg, filters=pc.field("key").isin(want))
            except FileNotFoundError:
                continue
            for row in t.to_pylist():
                found.setdefault(row["key"], row)
        for rec in self._iter_logs(self._log_files()):
            if rec["key"] in keys:
                found.setdefault(rec["key"], rec)
        return found

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
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a kill
                    continue
                if isinstance(rec, dict) and "key" in rec and "output" in rec:
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
    """Fold closed (and stale open) logs into one Parquet segment; returns rows folded.
    Single writer: call from the flow process only."""
    cache = GenerationCache(root)
    now = time.time()
    logs = [p for p in cache._log_files()
            if not p.name.endswith(".open.jsonl") or now - p.stat().st_mtime > STALE_OPEN_LOG_S]
    if not logs:
        return 0
    rows = list(cache._iter_logs(logs))
    if rows:
        from tasks.store import write_parquet

        t = pa.Table.from_pylist([{f.name: r.get(f.name) for f in FIELDS} for r in rows],
                                 schema=SCHEMA)
        write_parquet(t, cache.seg_dir / f"{uuid.uuid4().hex}.parquet")
    for p in logs:  # only after the segment is in place
        p.unlink(missing_ok=True)
    return len(rows)
